# COCO 1x (12 epochs) with AdamW for Swin V1 and V2 detectors: lr 1e-4 for a total batch of 16,
# 1000-iter linear warm-up, x0.1 after epochs 8 and 11. No weight decay on norm layers, cpb_mlp,
# logit_scale (V2), relative_position_bias_table (V1) and absolute_pos_embed (see
# swinv2_backbone/openmmlab/optim.py); layer_decay_rate < 1 turns on layer-wise lr decay over the
# backbone depth.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='SwinLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=1.0))
