# Semantic FPN (FPN neck + FPN head), SwinV2-T backbone (window 16), ADE20K 512x512 crops,
# 80k iterations, AdamW, total batch 16 (4 GPUs x 4).
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/swinv2-adamw_80k_ade20k.py',
    '../_base_/swinv2_plugin.py',
]

crop_size = (512, 512)
checkpoint_file = 'checkpoints/swinv2_tiny_patch4_window16_256.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='Swinv2Backbone',
        arch='tiny',
        window_size=16,
        pretrained_window_sizes=(16, 16, 16, 8),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))
train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
