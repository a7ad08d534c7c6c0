# Mask2Former, Swin V1-L (window 12) from the ImageNet-22k 384-px checkpoint, COCO panoptic, 200
# queries, 100 epochs at total batch 16 (16 GPUs x 1), with_cp: mmdet's
# `mask2former/mask2former_swin-l-p4-w12-384-in21k_16xb1-lsj-100e_coco-panoptic.py` with this
# plugin's SwinBackbone.
# Checkpoint: checkpoints/swin_large_patch4_window12_384_22k.pth (official v1.0.0 release; its
# 21841-class head is dropped by the backbone loader).
_base_ = './mask2former_swin-b-p4-w12-384_8xb2-lsj-50e_coco-panoptic.py'

checkpoint_file = 'checkpoints/swin_large_patch4_window12_384_22k.pth'
model = dict(
    backbone=dict(arch='large', init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    panoptic_head=dict(num_queries=200, in_channels=[192, 384, 768, 1536]))

train_dataloader = dict(batch_size=1, num_workers=1)

# 100 epochs: 737500 iterations at batch 16, lr x0.1 at 655556 and 710184; validation every 5000
# iterations and at the end.
max_iters = 737500
param_scheduler = dict(end=max_iters, milestones=[655556, 710184])
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
train_cfg = dict(max_iters=max_iters, val_interval=interval, dynamic_intervals=dynamic_intervals)
