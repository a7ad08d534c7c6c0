# Mask2Former, Swin V1-T backbone (window 7), ADE20K 512x512 crops, 160k iterations, AdamW, total
# batch 16 (8 GPUs x 2): mmseg's `mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py` with
# this plugin's SwinBackbone (tests/test_configs.py compares the two; configs/README.md lists the
# differences).
# Checkpoint: checkpoints/swin_tiny_patch4_window7_224.pth, the official v1.0.0 release file that
# mmseg's converted `swin_tiny_patch4_window7_224_20220317-1cdeb081.pth` was made from.
_base_ = '../_base_/mask2former_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinBackbone',
        arch='tiny',
        window_size=7,
        pretrain_img_size=224,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
