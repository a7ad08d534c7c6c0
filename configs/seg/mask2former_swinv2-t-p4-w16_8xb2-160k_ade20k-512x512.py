# Mask2Former, SwinV2-T backbone (window 16), ADE20K 512x512 crops, 160k iterations, AdamW, total
# batch 16 (8 GPUs x 2): mmseg's Mask2Former Swin recipe (the V1 configs here equal it) with a
# Swinv2Backbone.
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth (see configs/README.md).
_base_ = '../_base_/mask2former_8xb2-160k_ade20k-512x512.py'

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
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
