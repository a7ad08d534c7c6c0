# Mask2Former, Swin V1-S backbone (window 7), ADE20K 512x512, 160k, activation checkpointing:
# mmseg's `mask2former/mask2former_swin-s_8xb2-160k_ade20k-512x512.py` with this plugin's
# SwinBackbone. Checkpoint: checkpoints/swin_small_patch4_window7_224.pth (official v1.0.0).
_base_ = './mask2former_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
