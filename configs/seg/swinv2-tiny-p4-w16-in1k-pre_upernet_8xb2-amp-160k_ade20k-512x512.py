# UPerNet, SwinV2-T, ADE20K 160k with mixed precision (fp16 autocast, dynamic loss scale).
# GPU only: mmengine's AmpOptimWrapper refuses to run without an accelerator.
_base_ = './swinv2-tiny-p4-w16-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
