# Cascade Mask R-CNN + FPN, SwinV2-S (window 16), COCO 3x ms-crop, with_cp.
# Checkpoint: checkpoints/swinv2_small_patch4_window16_256.pth.
_base_ = './cascade-mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'

checkpoint_file = 'checkpoints/swinv2_small_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
