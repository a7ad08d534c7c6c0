# Mask2Former, Swin V1-S backbone (window 7), with_cp: mmdet's
# `mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py` with this plugin's
# SwinBackbone.
# Checkpoint: checkpoints/swin_small_patch4_window7_224.pth (official v1.0.0 release).
_base_ = './mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py'

checkpoint_file = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
