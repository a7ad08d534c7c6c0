# HTC (HTC++ recipe, see the -t- config) + FPN, SwinV2-B (window 16) seeded from the ImageNet-22k
# 192-px window-12 checkpoint (checkpoints/swinv2_base_patch4_window12_192_22k.pth), as the Swin
# paper's system-level HTC++ starts from 22k weights; with_cp, drop_path 0.3.
# That checkpoint ran windows (12, 12, 12, 6): pretrained_window_sizes keeps its position-bias
# coordinate scale while the windows grow to 16. Layer-wise lr decay 0.9, as the other 22k config.
_base_ = './htc_swinv2-t-p4-w16_fpn_ms-400-1400-6x_coco.py'

checkpoint_file = 'checkpoints/swinv2_base_patch4_window12_192_22k.pth'
model = dict(
    backbone=dict(
        arch='base',
        pretrained_window_sizes=(12, 12, 12, 6),
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9))
