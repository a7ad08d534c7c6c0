# ADE20K 160k iterations with AdamW for Swin V1 and V2 segmentors: lr 6e-5 for a total batch of
# 16, 1500-iter linear warm-up, then linear (power 1) decay to 0. No weight decay on norm layers,
# cpb_mlp, logit_scale (V2), relative_position_bias_table (V1) and absolute_pos_embed;
# layer_decay_rate < 1 turns on layer-wise lr decay.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

max_iters = 160000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='SwinLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(layer_decay_rate=1.0))
