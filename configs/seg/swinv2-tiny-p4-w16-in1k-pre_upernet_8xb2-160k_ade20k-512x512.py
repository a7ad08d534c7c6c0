# UPerNet (+ FCN auxiliary head on stage 3), SwinV2-T backbone (window 16), ADE20K 512x512 crops,
# 160k iterations, AdamW, total batch 16 (8 GPUs x 2).
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth (see configs/README.md).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/swinv2-adamw_160k_ade20k.py',
    '../_base_/swinv2_plugin.py',
]

crop_size = (512, 512)
checkpoint_file = 'checkpoints/swinv2_tiny_patch4_window16_256.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='Swinv2Backbone',
        arch='tiny',
        window_size=16,
        # The checkpoint ran windows (16, 16, 16, 8) at 256 px (stage 4 is 8x8 there): keep its
        # position-bias coordinate scale while every stage uses window 16 here.
        pretrained_window_sizes=(16, 16, 16, 8),
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, in_index=2, num_classes=150))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
