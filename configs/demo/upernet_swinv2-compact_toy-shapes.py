# Compact SwinV2 UPerNet trained from scratch on the toy shapes label maps (ADE20K-style PNGs;
# swinv2_backbone/openmmlab/toy_data.py; `python tools/demo.py` generates them and runs this config).
# Same compact backbone as the Mask R-CNN demo; GroupNorm heads (batch-size independent, so
# multi-process runs match single-process ones) without dropout.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/swinv2_plugin.py',
]

data_root = 'work_dirs/demo/data/'
classes = ('background', 'circle', 'square', 'triangle')
palette = [[0, 0, 0], [230, 60, 60], [60, 200, 60], [60, 100, 230]]
image_size = 128
head_norm = dict(type='GN', num_groups=8, requires_grad=True)
# background covers ~90 % of the pixels: weighting it down makes the shapes' pixels count
# (0.1 over-predicts the shapes at their borders, 1.0 left the triangles unlearnt in 400 iterations)
class_weight = [0.5, 1.0, 1.0, 1.0]

model = dict(
    data_preprocessor=dict(size=(image_size, image_size)),
    backbone=dict(
        _delete_=True,
        type='Swinv2Backbone',
        arch=None,
        embed_dims=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        window_size=8,
        drop_path_rate=0.0,
        out_indices=(0, 1, 2, 3)),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, dropout_ratio=0.0,
                     num_classes=len(classes), norm_cfg=head_norm,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                                      class_weight=class_weight)),
    auxiliary_head=dict(in_channels=128, in_index=2, channels=32, dropout_ratio=0.0,
                        num_classes=len(classes), norm_cfg=head_norm,
                        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4,
                                         class_weight=class_weight)))

dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.png',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/train', seg_map_path='labels/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/val', seg_map_path='labels/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 400
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False),
]
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='SwinLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01))
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
