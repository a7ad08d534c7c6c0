# Mask2Former, SwinV2-T backbone (window 16), COCO panoptic: the recipe of mmdet's Swin-T
# Mask2Former (`mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py`: large-scale jitter at
# 1024x1024, 50 epochs, AdamW with the backbone at 0.1x lr, drop_path 0.3) with a Swinv2Backbone.
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth (see configs/README.md).
_base_ = './mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py'

checkpoint_file = 'checkpoints/swinv2_tiny_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Swinv2Backbone',
        arch='tiny',
        window_size=16,
        # The checkpoint ran windows (16, 16, 16, 8) at 256 px (stage 4 is 8x8 there): keep its
        # position-bias coordinate scale while every stage uses window 16 here.
        pretrained_window_sizes=(16, 16, 16, 8),
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
