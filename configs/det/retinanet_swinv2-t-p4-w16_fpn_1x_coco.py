# RetinaNet + FPN, SwinV2-T (window 16), COCO 1x, AdamW. Only stages 2-4 feed the FPN
# (out_indices=(1, 2, 3); stage 1 keeps its blocks, its output norm is not built), the FPN starts at
# its first input and adds P6/P7 from the last one.
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
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
        pretrained_window_sizes=(16, 16, 16, 8),
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))
