"""Smoke check of the OpenMMLab integration: build an mmdet Mask R-CNN and an mmseg UPerNet with
``Swinv2Backbone`` from configs that inherit the installed bases, and run a forward pass of each.

    python tools/smoke.py [--arch tiny] [--size 256]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

DET_CFG = """
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
custom_imports = dict(imports=['swinv2_backbone'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='Swinv2Backbone', arch='{arch}', window_size=8),
    neck=dict(in_channels={channels}))
"""

SEG_CFG = """
_base_ = ['mmseg::_base_/models/upernet_swin.py']
custom_imports = dict(imports=['swinv2_backbone'], allow_failed_imports=False)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=({size}, {size})),
    backbone=dict(_delete_=True, type='Swinv2Backbone', arch='{arch}', window_size=8),
    decode_head=dict(in_channels={channels}, num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels={aux_channels}, num_classes=150, norm_cfg=norm_cfg))
"""


def _load_cfg(text: str):
    from mmengine.config import Config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.py"
        path.write_text(text)
        return Config.fromfile(str(path))


def smoke_detector(arch: str, size: int) -> str:
    """Build Mask R-CNN + Swinv2Backbone through mmdet and run an inference forward."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules

    from swinv2_backbone import ARCH_SETTINGS

    register_all_modules()
    embed = ARCH_SETTINGS[arch].embed_dims
    cfg = _load_cfg(DET_CFG.format(arch=arch, channels=[embed * 2 ** i for i in range(4)]))
    model = MODELS.build(cfg.model).eval()
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         scale_factor=(1.0, 1.0), pad_shape=(size, size),
                                         batch_input_shape=(size, size)))
    with torch.no_grad():
        results = model.predict(torch.randn(1, 3, size, size), [sample])
    return (f"mmdet Mask R-CNN + Swinv2Backbone({arch}): {type(model.backbone).__name__}, "
            f"{len(results[0].pred_instances)} detections on a random {size}x{size} image")


def smoke_segmentor(arch: str, size: int) -> str:
    """Build UPerNet + Swinv2Backbone through mmseg and run an inference forward."""
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    from swinv2_backbone import ARCH_SETTINGS

    register_all_modules()
    embed = ARCH_SETTINGS[arch].embed_dims
    cfg = _load_cfg(SEG_CFG.format(arch=arch, size=size, channels=[embed * 2 ** i for i in range(4)],
                                   aux_channels=embed * 4))
    model = MODELS.build(cfg.model).eval()
    sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         pad_shape=(size, size)))
    with torch.no_grad():
        results = model.predict(torch.randn(1, 3, size, size), [sample])
    seg = results[0].pred_sem_seg.data
    return (f"mmseg UPerNet + Swinv2Backbone({arch}): segmentation map {tuple(seg.shape)} on a "
            f"random {size}x{size} image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="tiny", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--size", type=int, default=256, help="square input size in pixels")
    args = parser.parse_args()
    for step in (smoke_detector, smoke_segmentor):
        start = time.perf_counter()
        print(f"smoke: {step(args.arch, args.size)} ({time.perf_counter() - start:.1f} s)")
    print("smoke: OK")


if __name__ == "__main__":
    main()
