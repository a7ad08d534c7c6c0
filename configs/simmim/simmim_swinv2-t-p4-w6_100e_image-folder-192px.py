# SimMIM pre-training of a SwinV2-T on a folder of unlabeled images (any image files; set
# data_root), after the official SwinV2 SimMIM recipe at 192 px: window 6 (stage 4 is 6x6),
# masks of 32-px blocks covering 60 % of the image, the locally normalised target (window 47),
# AdamW, linear warm-up then cosine, random resized crop + flip, ImageNet normalisation.
#   python tools/train.py configs/simmim/simmim_swinv2-t-p4-w6_100e_image-folder-192px.py \
#       --cfg-options train_dataloader.dataset.data_root=/path/to/images
# Fine-tune a det/seg config from the result with backbone=dict(pretrained_window_sizes=6,
# init_cfg=dict(type='Pretrained', checkpoint=...)): the backbone takes the encoder and drops the mask
# token and decoder; training checkpoints do not record their windows, hence pretrained_window_sizes.
# Held-out reconstruction loss of a checkpoint (the same masks every time, seeded per image):
#   python tools/test.py configs/simmim/simmim_swinv2-t-p4-w6_100e_image-folder-192px.py CKPT \
#       --cfg-options test_dataloader.dataset.data_root=/path/to/held-out/images
default_scope = 'mmengine'
custom_imports = dict(imports=['swinv2_backbone', 'mmcv.transforms'], allow_failed_imports=False)

image_size = 192
max_epochs = 100
warmup_epochs = 10
batch_size = 128  # per process; the official recipe: 2048 in all, lr 1e-4 * 2048 / 512
data_root = 'data/unlabeled/'
test_data_root = 'data/unlabeled_val/'

model = dict(
    type='SwinSimMIM',
    backbone=dict(arch='tiny', window_size=6, drop_path_rate=0.0),
    norm_target_window=47)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='SimMIMRandomResizedCrop', size=image_size, scale=(0.67, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SimMIMMaskGenerator', mask_patch_size=32, model_patch_size=4, mask_ratio=0.6),
    dict(type='PackSimMIMInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='UnlabeledImageFolder', data_root=data_root, pipeline=train_pipeline))

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

# evaluation: the whole image resized to the training size, fixed masks
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=False),
    dict(type='SimMIMMaskGenerator', mask_patch_size=32, model_patch_size=4, mask_ratio=0.6,
         seed=0),
    dict(type='PackSimMIMInputs'),
]
test_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='UnlabeledImageFolder', data_root=test_data_root, pipeline=test_pipeline))
test_cfg = dict(type='TestLoop')
test_evaluator = dict(type='SimMIMReconstructionMetric')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    # no weight decay on norms, biases, the mask token, the attention scales and the position-bias
    # MLP (the official no-decay list)
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'mask_token': dict(decay_mult=0.0),
                                    'logit_scale': dict(decay_mult=0.0),
                                    'cpb_mlp': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
