# mmseg's Mask2Former ADE20K 512x512 recipe (`mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py`:
# the head, data pipeline, 160k poly schedule), with this plugin imported and mmseg's Swin
# Mask2Former parameter groups (`schedules/swin-adamw_mask2former.py`). The configs that inherit it
# replace the ResNet backbone.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    './schedules/swin-adamw_mask2former.py',
]

# the plugin only: mmseg's Mask2FormerHead imports mmdet.models itself (mmseg's base lists it)
custom_imports = dict(imports=['swinv2_backbone'], allow_failed_imports=False)
optim_wrapper = {{_base_.mask2former_optim_wrapper}}
