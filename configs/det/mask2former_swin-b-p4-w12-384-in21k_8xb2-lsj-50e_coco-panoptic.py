# Mask2Former, Swin V1-B (window 12) from the ImageNet-22k 384-px checkpoint, COCO panoptic:
# mmdet's `mask2former/mask2former_swin-b-p4-w12-384-in21k_8xb2-lsj-50e_coco-panoptic.py` with this
# plugin's SwinBackbone.
# Checkpoint: checkpoints/swin_base_patch4_window12_384_22k.pth (official v1.0.0 release; its
# 21841-class head is dropped by the backbone loader).
_base_ = './mask2former_swin-b-p4-w12-384_8xb2-lsj-50e_coco-panoptic.py'

checkpoint_file = 'checkpoints/swin_base_patch4_window12_384_22k.pth'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
