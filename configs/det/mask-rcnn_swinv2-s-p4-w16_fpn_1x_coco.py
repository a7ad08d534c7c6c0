# Mask R-CNN + FPN, SwinV2-S backbone (window 16), COCO 1x. Activation checkpointing (with_cp)
# trades compute for memory. Checkpoint: checkpoints/swinv2_small_patch4_window16_256.pth.
_base_ = './mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py'

checkpoint_file = 'checkpoints/swinv2_small_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
