# Mask R-CNN + FPN, Swin V1-B (window 7, channels 128..1024), COCO 1x, with_cp. drop_path 0.3 as
# the official Swin-B detectors (mmdet ships no Swin-B Mask R-CNN).
# Checkpoint: checkpoints/swin_base_patch4_window7_224.pth (official v1.0.0 release, ImageNet-1k).
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

checkpoint_file = 'checkpoints/swin_base_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
