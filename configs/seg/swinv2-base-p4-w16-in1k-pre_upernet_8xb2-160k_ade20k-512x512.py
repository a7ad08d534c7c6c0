# UPerNet, SwinV2-B (window 16, channels 128..1024), ADE20K 512x512, 160k, with_cp.
# Checkpoint: checkpoints/swinv2_base_patch4_window16_256.pth.
_base_ = './swinv2-tiny-p4-w16-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swinv2_base_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        arch='base',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
