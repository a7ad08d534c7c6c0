# Mask R-CNN + FPN, Swin V1-S (window 7), COCO 1x, with_cp. drop_path 0.2 as mmdet's and the
# official Swin-S detectors.
# Checkpoint: checkpoints/swin_small_patch4_window7_224.pth (official v1.0.0 release).
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

checkpoint_file = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
