# SimMIM pre-training of the demo's compact SwinV2 on the toy shapes training images, labels unused
# (`python tools/demo_simmim.py` generates the images, runs this config, then fine-tunes
# configs/demo/upernet_swinv2-compact_toy-shapes.py from the result and from scratch).
# The backbone is the compact UPerNet's (tests/test_demo_simmim.py checks that they agree), at the
# toy images' 128 px. Masks of 16-px blocks (an 8x8 grid, 60 % masked): the official 32-px blocks
# would give a 4x4 grid at this size and hide most toy shapes whole. The target is the normalised
# image itself (norm_target_window=None), so the reconstructions de-normalise to pixels exactly.
default_scope = 'mmengine'
custom_imports = dict(imports=['swinv2_backbone', 'mmcv.transforms'], allow_failed_imports=False)

image_size = 128
max_iters = 1200
warmup_iters = 100
data_root = 'work_dirs/demo/data/images/train/'

model = dict(
    type='SwinSimMIM',
    backbone=dict(arch=None, embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                  window_size=8, drop_path_rate=0.0),
    norm_target_window=None)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='SimMIMRandomResizedCrop', size=image_size, scale=(0.67, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SimMIMMaskGenerator', mask_patch_size=16, model_patch_size=4, mask_ratio=0.6),
    dict(type='PackSimMIMInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='UnlabeledImageFolder', data_root=data_root, pipeline=train_pipeline))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    # the official no-decay list, as in configs/simmim/
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'mask_token': dict(decay_mult=0.0),
                                    'logit_scale': dict(decay_mult=0.0),
                                    'cpb_mlp': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(window_size=20, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
