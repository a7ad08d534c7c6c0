# UPerNet, SwinV2-S (window 16), ADE20K 512x512, 160k, with_cp.
# Checkpoint: checkpoints/swinv2_small_patch4_window16_256.pth.
_base_ = './swinv2-tiny-p4-w16-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swinv2_small_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        arch='small',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
