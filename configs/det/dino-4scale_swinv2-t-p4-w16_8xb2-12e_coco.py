# DINO 4-scale, SwinV2-T backbone (window 16), COCO 12 epochs, total batch 16 (8 GPUs x 2): the
# affordable DINO. mmdet's `dino/dino-4scale_r50_8xb2-12e_coco.py` recipe with the SwinV2-T maps at
# strides 8, 16, 32 (out_indices=(1, 2, 3)) plus one stride-64 map from the ChannelMapper's extra
# conv. Without the stride-4 map of the 5-scale configs the encoder attends over about a quarter of
# the tokens (800x1333: ~22k instead of ~89k).
# Checkpoint: checkpoints/swinv2_tiny_patch4_window16_256.pth.
_base_ = [
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    '../_base_/swinv2_plugin.py',
]

checkpoint_file = 'checkpoints/swinv2_tiny_patch4_window16_256.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Swinv2Backbone',
        arch='tiny',
        window_size=16,
        pretrained_window_sizes=(16, 16, 16, 8),
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[192, 384, 768]))
optim_wrapper = dict(
    constructor='SwinLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, backbone_lr_mult=0.1, layer_decay_rate=1.0))
