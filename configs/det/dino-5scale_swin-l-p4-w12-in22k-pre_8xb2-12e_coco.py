# DINO 5-scale, Swin V1-L backbone (window 12), COCO 12 epochs, total batch 16 (8 GPUs x 2):
# mmdet's `dino/dino-5scale_swin-l_8xb2-12e_coco.py` with this plugin's SwinBackbone
# (tests/test_configs.py compares the two as data). The four stage maps plus one stride-64 map from
# the ChannelMapper's extra conv feed the deformable encoder; with_cp as in mmdet's config.
# Seeded from the official ImageNet-22k 384-px window-12 checkpoint, downloaded to
# checkpoints/swin_large_patch4_window12_384_22k.pth from
# https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_large_patch4_window12_384_22k.pth
# The optimizer is mmdet's (AdamW lr 1e-4, weight decay 1e-4, grad clip 0.1, backbone lr x0.1)
# through SwinLayerDecayOptimWrapperConstructor, which also exempts the norms and the bias tables
# from weight decay (mmdet's DINO decays them).
_base_ = [
    'mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py',
    '../_base_/swinv2_plugin.py',
]

checkpoint_file = 'checkpoints/swin_large_patch4_window12_384_22k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinBackbone',
        arch='large',
        window_size=12,
        pretrain_img_size=384,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(
    constructor='SwinLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, backbone_lr_mult=0.1, layer_decay_rate=1.0))
