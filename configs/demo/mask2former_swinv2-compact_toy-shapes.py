# A reduced Mask2Former (64 channels, 8 queries, 2 pixel-decoder layers, 3 decoder layers) on the
# demo's compact SwinV2 backbone, trained from scratch on the toy shapes label maps
# (swinv2_backbone/openmmlab/toy_data.py; `python tools/demo.py` writes them to
# work_dirs/demo/data/). The data, schedule and hooks are the UPerNet demo's; the head is mmseg's
# Mask2FormerHead as the ADE20K configs build it (mmdet's MSDeformAttnPixelDecoder, which runs
# mmcv's multi-scale deformable attention through its PyTorch path on CPU).
_base_ = './upernet_swinv2-compact_toy-shapes.py'

num_classes = 4
feat = 64
deformable = dict(embed_dims=feat, num_heads=4, num_levels=3, num_points=4, im2col_step=64,
                  dropout=0.0, batch_first=True, norm_cfg=None, init_cfg=None)
attention = dict(embed_dims=feat, num_heads=4, attn_drop=0.0, proj_drop=0.0, dropout_layer=None,
                 batch_first=True)
model = dict(
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    decode_head=dict(
        _delete_=True,
        type='Mask2FormerHead',
        in_channels=[32, 64, 128, 256],
        strides=[4, 8, 16, 32],
        feat_channels=feat,
        out_channels=feat,
        num_classes=num_classes,
        num_queries=8,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=8),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=deformable,
                    ffn_cfg=dict(embed_dims=feat, feedforward_channels=2 * feat, num_fcs=2,
                                 ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(num_feats=feat // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=feat // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=attention,
                cross_attn_cfg=attention,
                ffn_cfg=dict(embed_dims=feat, feedforward_channels=2 * feat, num_fcs=2,
                             act_cfg=dict(type='ReLU', inplace=True), ffn_drop=0.0,
                             dropout_layer=None, add_identity=True)),
            init_cfg=None),
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean', class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                       naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            num_points=512,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0),
                ]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))),
    auxiliary_head=None)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(no_decay_keys=['cpb_mlp', 'logit_scale', 'relative_position_bias_table',
                                      'absolute_pos_embed', 'query_embed', 'query_feat',
                                      'level_embed']))
# mIoU 88 on the 60 validation images after 100 of the UPerNet demo's 400 iterations: a quarter
# of those suffice here
max_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
