# Imports the plugin: registers Swinv2Backbone and the Swin V1 SwinBackbone (mmengine root MODELS,
# visible from mmdet and mmseg), the Swinv2LayerDecayOptimWrapperConstructor and the checkpoint
# safe globals.
custom_imports = dict(imports=['swinv2_backbone'], allow_failed_imports=False)
