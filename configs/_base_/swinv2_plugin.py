# Imports the plugin: registers Swinv2Backbone and the Swin V1 SwinBackbone (mmengine root MODELS,
# visible from mmdet and mmseg), the SwinLayerDecayOptimWrapperConstructor and the checkpoint
# safe globals.
custom_imports = dict(imports=['swinv2_backbone'], allow_failed_imports=False)
