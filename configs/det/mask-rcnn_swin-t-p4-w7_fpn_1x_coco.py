# Mask R-CNN + FPN, Swin V1-T backbone (window 7), COCO 1x, AdamW, total batch 16 (8 GPUs x 2):
# mmdet's `swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py` with this plugin's SwinBackbone
# (tests/test_configs.py compares the two).
# Seeded from the official ImageNet-1k 224-px window-7 checkpoint, downloaded to
# checkpoints/swin_tiny_patch4_window7_224.pth from
# https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth
# (the loader reads local files only; see configs/README.md).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/swinv2-adamw_1x_coco.py',
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
