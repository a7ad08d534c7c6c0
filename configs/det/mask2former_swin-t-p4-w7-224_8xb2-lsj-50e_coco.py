# Mask2Former, Swin V1-T backbone (window 7), COCO instance segmentation (80 classes), large-scale
# jitter at 1024x1024, 50 epochs as 368750 iterations, total batch 16 (8 GPUs x 2): mmdet's
# `mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py` with this plugin's
# SwinBackbone (tests/test_configs.py compares the two). Its pixel decoder is mmcv's multi-scale
# deformable attention (CUDA kernel on GPU, mmcv's PyTorch path on CPU).
# Optimizer as mmdet's: AdamW lr 1e-4, weight decay 0.05, gradient clipping at 0.01, the backbone
# at 0.1x lr, no weight decay on normalisation layers, position parameters and the query / level
# embeddings.
# Checkpoint: checkpoints/swin_tiny_patch4_window7_224.pth (official v1.0.0 release).
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    '../_base_/swinv2_plugin.py',
]

checkpoint_file = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinBackbone',
        arch='tiny',
        window_size=7,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    constructor='SwinLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=1.0,
        backbone_lr_mult=0.1,
        no_decay_keys=['relative_position_bias_table', 'absolute_pos_embed', 'cpb_mlp',
                       'logit_scale', 'query_embed', 'query_feat', 'level_embed']))
