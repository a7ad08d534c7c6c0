# A reduced DINO (mmdet's `DINO`: two-stage, box refinement, contrastive denoising) on the compact
# SwinV2 of the Mask R-CNN demo, trained from scratch on the toy shapes dataset
# (swinv2_backbone/openmmlab/toy_data.py). Sized for a 2-core CPU: 128-px images, 3 scales (the
# backbone maps at strides 8, 16, 32; the stride-4 map would quadruple the encoder's tokens and its
# time), 1 encoder and 3 decoder layers with feed-forward width 512 (mmdet's: 2048), 30 queries for
# scenes of at most 4 shapes, 3 classes.
# The deformable attention runs mmcv's PyTorch path on CPU (grid_sample).
#   python tools/train.py configs/demo/dino_swinv2-compact_toy-shapes.py
#   python tools/test.py configs/demo/dino_swinv2-compact_toy-shapes.py work_dirs/.../iter_N.pth
# after `python tools/demo.py` (or `write_toy_dataset('work_dirs/demo/data')`) wrote the data.
_base_ = './mask-rcnn_swinv2-compact_fpn_toy-shapes.py'

embed_dims = 256  # mmdet's DINO decoder fixes it (its query position encoding is 4 x 128 wide)
num_levels = 3
num_queries = 30

model = dict(
    _delete_=True,
    type='DINO',
    num_queries=num_queries,
    with_box_refine=True,
    as_two_stage=True,
    num_feature_levels=num_levels,
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone=dict(
        type='Swinv2Backbone',
        arch=None,
        embed_dims=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        window_size=8,
        drop_path_rate=0.0,
        out_indices=(1, 2, 3)),
    neck=dict(
        type='ChannelMapper',
        in_channels=[64, 128, 256],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=num_levels),
    encoder=dict(
        num_layers=1,  # the encoder is the costly part here (grid_sample over 336 tokens per image)
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_levels=num_levels, dropout=0.0),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512,
                         ffn_drop=0.0))),
    decoder=dict(
        num_layers=3,
        return_intermediate=True,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=8, dropout=0.0),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_levels=num_levels, dropout=0.0),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512,
                         ffn_drop=0.0)),
        post_norm_cfg=None),
    positional_encoding=dict(num_feats=embed_dims // 2, normalize=True, offset=0.0,
                             temperature=20),
    bbox_head=dict(
        type='DINOHead',
        embed_dims=embed_dims,
        num_classes=3,  # circle, square, triangle
        sync_cls_avg_factor=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=20)),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='FocalLossCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    test_cfg=dict(max_per_img=50))

val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=50, end=max_iters),
]
# DINO's weight decay and clipping; from scratch, the backbone keeps the full lr (no x0.1).
# 300 iterations reach bbox mAP 0.6 (configs/README.md)
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=1e-4), clip_grad=dict(max_norm=0.1))
default_hooks = dict(checkpoint=dict(interval=max_iters))
