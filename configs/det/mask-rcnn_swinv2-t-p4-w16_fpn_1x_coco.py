# Mask R-CNN + FPN, SwinV2-T backbone (window 16), COCO 1x, AdamW, total batch 16 (8 GPUs x 2).
# Seeded from the official ImageNet-1k 256-px window-16 checkpoint, downloaded to
# checkpoints/swinv2_tiny_patch4_window16_256.pth (see configs/README.md).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/swinv2-adamw_1x_coco.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/swinv2_plugin.py',
]

checkpoint_file = 'checkpoints/swinv2_tiny_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Swinv2Backbone',
        arch='tiny',
        window_size=16,
        # The checkpoint ran windows (16, 16, 16, 8) at 256 px (stage 4 is 8x8 there): keep its
        # position-bias coordinate scale while every stage uses window 16 here.
        pretrained_window_sizes=(16, 16, 16, 8),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
