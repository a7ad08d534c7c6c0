# DINO 5-scale, SwinV2-L from the 22k 192-px window-12 checkpoint, COCO 36 epochs (x0.1 after
# epochs 27 and 33): the 12-epoch config with the schedule of mmdet's
# `dino/dino-5scale_swin-l_8xb2-36e_coco.py`.
_base_ = './dino-5scale_swinv2-l-p4-w16-in22k-pre_8xb2-12e_coco.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
                        milestones=[27, 33], gamma=0.1)]
