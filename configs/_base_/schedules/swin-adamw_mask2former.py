# The optimizer wrapper of mmseg's / mmdet's Mask2Former Swin configs (AdamW lr 1e-4, weight decay
# 0.05, gradient clipping 0.01; the backbone at 0.1 x lr; no weight decay on normalisation layers,
# the backbone's position parameters and the head's query / level embeddings), built by this
# plugin's constructor, which names the Swin parameters of both versions (mmseg's `custom_keys` name
# its own SwinTransformer's). A config whose base defines `optim_wrapper` uses it as
# `optim_wrapper = {{_base_.mask2former_optim_wrapper}}` (it replaces the base's: `_delete_`).
mask2former_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='SwinLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        layer_decay_rate=1.0,
        backbone_lr_mult=0.1,
        no_decay_keys=['cpb_mlp', 'logit_scale', 'relative_position_bias_table',
                       'absolute_pos_embed', 'query_embed', 'query_feat', 'level_embed']))
