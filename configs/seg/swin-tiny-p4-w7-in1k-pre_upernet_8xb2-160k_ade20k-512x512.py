# UPerNet (+ FCN auxiliary head on stage 3), Swin V1-T backbone (window 7), ADE20K 512x512 crops,
# 160k iterations, AdamW, total batch 16 (8 GPUs x 2): mmseg's
# `swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py` with this plugin's
# SwinBackbone (tests/test_configs.py compares the two).
# Checkpoint: checkpoints/swin_tiny_patch4_window7_224.pth, the official v1.0.0 release file that
# mmseg's converted `swin_tiny_patch4_window7_224_20220317-1cdeb081.pth` was made from (see
# configs/README.md; the loader reads local files only).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/swinv2-adamw_160k_ade20k.py',
    '../_base_/swinv2_plugin.py',
]

crop_size = (512, 512)
checkpoint_file = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='SwinBackbone',
        arch='tiny',
        window_size=7,
        pretrain_img_size=224,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, in_index=2, num_classes=150))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
