# Mask R-CNN + FPN, Swin V1-S (window 7), COCO 3x ms-crop, with_cp: mmdet's
# `swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py` in fp32 (`--amp` turns mixed precision
# on). drop_path 0.2 as mmdet's.
# Checkpoint: checkpoints/swin_small_patch4_window7_224.pth (official v1.0.0 release).
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

checkpoint_file = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
