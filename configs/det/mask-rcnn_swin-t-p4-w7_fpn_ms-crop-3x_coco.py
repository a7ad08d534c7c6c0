# Mask R-CNN + FPN, Swin V1-T (window 7), COCO 3x with multi-scale + crop training, AdamW:
# mmdet's `swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py` with this plugin's SwinBackbone.
# Checkpoint: checkpoints/swin_tiny_patch4_window7_224.pth (official v1.0.0 release).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco-instance_ms-crop.py',
    '../_base_/schedules/swinv2-adamw_3x_coco.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/swinv2_plugin.py',
]

checkpoint_file = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinBackbone',
        arch='tiny',
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
