# HTC (Hybrid Task Cascade) + FPN, SwinV2-T backbone (window 16), COCO: the Swin paper's HTC++
# recipe as far as mmdet 3.3's building blocks go, on mmdet's `htc/htc_r50_fpn_1x_coco.py`:
# - HTC with its semantic branch (FusedSemanticHead, 183 COCO-stuff classes): training reads the
#   COCO-stuff label maps under data/coco/stuffthingmaps/train2017/ (mmdet's dataset preparation);
# - multi-scale training, shorter side 400..1400 with the longer at most 1600 (the pipeline of
#   mmdet's `htc/htc_x101-64x4d-dconv-c3-c5_fpn_ms-400-1400-16xb1-20e_coco.py`);
# - 72 epochs (6x), lr x0.1 after epochs 63 and 69; soft-NMS in the R-CNN test stage;
# - AdamW lr 1e-4, weight decay 0.05, 1000-iteration warm-up, total batch 16 (8 GPUs x 2).
# Not here: InstaBoost (mmdet's transform needs the instaboostfast package) and the global
# self-attention layer the paper appends after the last stage (no mmdet block).
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth (see configs/README.md).
_base_ = [
    'mmdet::htc/htc_r50_fpn_1x_coco.py',
    '../_base_/swinv2_plugin.py',
]

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
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]),
    test_cfg=dict(rcnn=dict(nms=dict(type='soft_nms', iou_threshold=0.5))))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='RandomResize', scale=[(1600, 400), (1600, 1400)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 72
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[63, 69],
         gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='SwinLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=1.0))
