# UPerNet, Swin V1-S (window 7), ADE20K 512x512, 160k, with_cp: mmseg's
# `swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py`.
# Checkpoint: checkpoints/swin_small_patch4_window7_224.pth (official v1.0.0 release).
_base_ = './swin-tiny-p4-w7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
