# Mask R-CNN + FPN, SwinV2-B (window 16), COCO 3x ms-crop, with_cp.
# Checkpoint: checkpoints/swinv2_base_patch4_window16_256.pth.
_base_ = './mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'

checkpoint_file = 'checkpoints/swinv2_base_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
