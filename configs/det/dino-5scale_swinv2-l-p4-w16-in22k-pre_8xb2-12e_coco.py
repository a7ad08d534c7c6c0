# DINO 5-scale, SwinV2-L backbone (window 16) seeded from the ImageNet-22k 192-px window-12
# checkpoint (checkpoints/swinv2_large_patch4_window12_192_22k.pth), COCO 12 epochs, total batch 16,
# with_cp. The recipe of mmdet's `dino/dino-5scale_swin-l_8xb2-12e_coco.py` (the Swin V1-L
# counterpart: dino-5scale_swin-l-p4-w12-in22k-pre_8xb2-12e_coco.py) with the SwinV2 backbone.
# That checkpoint ran windows (12, 12, 12, 6) (stage 4 is 6x6 at 192 px): pretrained_window_sizes
# keeps its position-bias coordinate scale while the windows grow to 16. The backbone's lr is
# DINO's x0.1, decayed further by 0.9 per block towards the input (layer decay, as the 22k SwinV2
# Mask R-CNN config).
_base_ = './dino-5scale_swin-l-p4-w12-in22k-pre_8xb2-12e_coco.py'

checkpoint_file = 'checkpoints/swinv2_large_patch4_window12_192_22k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Swinv2Backbone',
        arch='large',
        window_size=16,
        pretrained_window_sizes=(12, 12, 12, 6),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9))
