# The compact UPerNet of the demo with a Swin V1 backbone (SwinBackbone, same widths and depths,
# window 7, so the 32x32 first-stage map of a 128-px image is padded to 35x35 windows), trained from
# scratch on the toy shapes label maps. Exercised through tools/train.py and tools/test.py by
# tests/test_pipelines.py; `python tools/train.py configs/demo/upernet_swin-compact_toy-shapes.py`
# after `python tools/demo.py` has written the data.
_base_ = './upernet_swinv2-compact_toy-shapes.py'

model = dict(backbone=dict(type='SwinBackbone', window_size=7))
