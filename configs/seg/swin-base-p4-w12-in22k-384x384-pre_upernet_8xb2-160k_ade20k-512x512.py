# UPerNet, Swin V1-B with window 12 (the window of its ImageNet-22k 384-px pretraining), ADE20K
# 512x512, 160k, with_cp: mmseg's
# `swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py`.
# Checkpoint: checkpoints/swin_base_patch4_window12_384_22k.pth (official v1.0.0 release; its
# 21841-class head is dropped by the backbone loader).
_base_ = './swin-base-p4-w7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swin_base_patch4_window12_384_22k.pth'
model = dict(
    backbone=dict(
        window_size=12,
        pretrain_img_size=384,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
