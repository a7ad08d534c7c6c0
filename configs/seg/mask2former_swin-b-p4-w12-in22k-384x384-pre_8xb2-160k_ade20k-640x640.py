# Mask2Former, Swin V1-B backbone with window 12 (the window of its ImageNet-22k 384-px
# pretraining), ADE20K 640x640 crops, 160k iterations, activation checkpointing: mmseg's
# `mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py` (mmseg ships its
# Swin-B and Swin-L Mask2Former at 640x640 only) with this plugin's SwinBackbone and the parameter
# groups of configs/_base_/schedules/swin-adamw_mask2former.py.
# Checkpoint: checkpoints/swin_base_patch4_window12_384_22k.pth (official v1.0.0 release; its
# 21841-class head is dropped by the backbone loader).
_base_ = [
    'mmseg::mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py',
    '../_base_/schedules/swin-adamw_mask2former.py',
    '../_base_/swinv2_plugin.py',
]

checkpoint_file = 'checkpoints/swin_base_patch4_window12_384_22k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinBackbone',
        arch='base',
        window_size=12,
        pretrain_img_size=384,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = {{_base_.mask2former_optim_wrapper}}
