# UPerNet, Swin V1-B (window 7, channels 128..1024), ADE20K 512x512, 160k, with_cp: mmseg's
# `swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py`.
# Checkpoint: checkpoints/swin_base_patch4_window7_224.pth (official v1.0.0 release, ImageNet-1k).
_base_ = './swin-tiny-p4-w7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swin_base_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='base',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
