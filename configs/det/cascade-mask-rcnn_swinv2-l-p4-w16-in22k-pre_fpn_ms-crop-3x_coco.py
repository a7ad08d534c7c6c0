# Cascade Mask R-CNN + FPN, SwinV2-L (window 16) seeded from the ImageNet-22k 192-px window-12
# checkpoint (checkpoints/swinv2_large_patch4_window12_192_22k.pth), COCO 3x ms-crop, with_cp.
# That checkpoint ran windows (12, 12, 12, 6): pretrained_window_sizes keeps its position-bias
# coordinate scale while the windows grow to 16. Layer-wise lr decay 0.9 as the 22k SwinV2-B
# Mask R-CNN config.
_base_ = './cascade-mask-rcnn_swinv2-b-p4-w16_fpn_ms-crop-3x_coco.py'

checkpoint_file = 'checkpoints/swinv2_large_patch4_window12_192_22k.pth'
model = dict(
    backbone=dict(
        arch='large',
        pretrained_window_sizes=(12, 12, 12, 6),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9))
