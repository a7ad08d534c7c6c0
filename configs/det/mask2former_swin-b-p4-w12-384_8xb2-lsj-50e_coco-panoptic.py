# Mask2Former, Swin V1-B backbone with window 12 (the window of its ImageNet-1k 384-px pretraining),
# COCO panoptic, with_cp: mmdet's
# `mask2former/mask2former_swin-b-p4-w12-384_8xb2-lsj-50e_coco-panoptic.py` with this plugin's
# SwinBackbone.
# Checkpoint: checkpoints/swin_base_patch4_window12_384.pth (official v1.0.0 release).
_base_ = './mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py'

checkpoint_file = 'checkpoints/swin_base_patch4_window12_384.pth'
model = dict(
    backbone=dict(
        arch='base',
        window_size=12,
        pretrain_img_size=384,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    panoptic_head=dict(in_channels=[128, 256, 512, 1024]))
