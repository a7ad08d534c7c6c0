# Mask R-CNN + FPN, SwinV2-T (window 16), COCO 3x with multi-scale + crop training, AdamW.
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco-instance_ms-crop.py',
    '../_base_/schedules/swinv2-adamw_3x_coco.py',
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
        pretrained_window_sizes=(16, 16, 16, 8),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
