# Mask2Former, SwinV2-B (window 16), COCO panoptic, with_cp.
# Checkpoint: checkpoints/swinv2_base_patch4_window16_256.pth.
_base_ = './mask2former_swinv2-t-p4-w16_8xb2-lsj-50e_coco-panoptic.py'

checkpoint_file = 'checkpoints/swinv2_base_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        arch='base',
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    panoptic_head=dict(in_channels=[128, 256, 512, 1024]))
