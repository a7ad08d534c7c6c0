# Mask2Former, Swin V1-L backbone (window 12, ImageNet-22k 384-px pretraining), ADE20K 640x640,
# 160k, activation checkpointing: mmseg's
# `mask2former/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py` with this plugin's
# SwinBackbone. Checkpoint: checkpoints/swin_large_patch4_window12_384_22k.pth (official v1.0.0
# release, the file mmseg's converted `swin_large_patch4_window12_384_22k_20220412-6580f57d.pth`
# was made from).
_base_ = './mask2former_swin-b-p4-w12-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py'

checkpoint_file = 'checkpoints/swin_large_patch4_window12_384_22k.pth'
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[192, 384, 768, 1536]))
