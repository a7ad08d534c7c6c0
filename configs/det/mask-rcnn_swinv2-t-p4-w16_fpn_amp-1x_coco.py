# Mask R-CNN + FPN, SwinV2-T, COCO 1x with mixed precision (fp16 autocast, dynamic loss scale).
# GPU only: mmengine's AmpOptimWrapper refuses to run without an accelerator.
_base_ = './mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
