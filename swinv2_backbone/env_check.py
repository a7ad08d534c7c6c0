"""Environment check: fails loudly when the OpenMMLab stack is broken.

Run ``python -m swinv2_backbone.env_check``. It verifies that torch and torchvision load (including
torchvision's compiled ops), that mmcv is in the version range mmdet/mmseg accept and has its compiled
ops (RoIAlign and NMS run on CPU), that mmdet and mmseg import and see ``Swinv2Backbone``, and that
mmengine training checkpoints load with weights-only ``torch.load``. Exit code 0 only if all pass.
"""
from __future__ import annotations

import sys
from typing import Callable, List, Tuple

MMCV_MIN = "2.0.0rc4"
MMCV_MAX = "2.2.0"  # exclusive: mmdet 3.3 and mmseg 1.2 refuse mmcv >= 2.2


def _parse(version: str):
    from packaging.version import Version

    return Version(version)


def check_torch() -> str:
    """torch imports and runs a matmul."""
    import torch

    x = torch.ones(2, 2)
    if (x @ x).sum().item() != 8.0:
        raise RuntimeError("torch matmul gave a wrong result")
    return f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})"


def check_torchvision() -> str:
    """torchvision imports and its compiled ops (nms) load and run."""
    import torch
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f"torchvision.ops.nms gave {keep.tolist()}, expected [0, 2]")
    return f"torchvision {torchvision.__version__} with compiled ops"


def check_mmcv() -> str:
    """mmcv is in [2.0.0rc4, 2.2.0) and its compiled ops (RoIAlign, NMS) run on CPU."""
    import mmcv
    import torch

    version = mmcv.__version__
    if not _parse(MMCV_MIN) <= _parse(version) < _parse(MMCV_MAX):
        raise RuntimeError(f"mmcv {version} is outside [{MMCV_MIN}, {MMCV_MAX}) required by "
                           "mmdet 3.x / mmseg 1.x; run tools/setup_env.sh")
    try:
        from mmcv.ops import RoIAlign, nms
    except (ImportError, ModuleNotFoundError) as exc:
        raise RuntimeError(f"mmcv {version} has no compiled ops ({exc}); this is the 'mmcv-lite' "
                           "case: rebuild with MMCV_WITH_OPS=1 (tools/setup_env.sh does)") from exc
    feats = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    if out.shape != (1, 1, 2, 2) or not torch.isfinite(out).all():
        raise RuntimeError(f"mmcv RoIAlign returned {tuple(out.shape)} / non-finite values")
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f"mmcv nms gave {keep.tolist()}, expected [0, 2]")
    return f"mmcv {version} with compiled ops (RoIAlign, nms ran on CPU)"


def check_openmmlab() -> str:
    """mmdet and mmseg import and both registries build ``Swinv2Backbone``."""
    import mmdet
    import mmseg
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    import swinv2_backbone  # noqa: F401  (registers the backbone)

    cfg = dict(type="Swinv2Backbone", arch=None, embed_dims=16, depths=(1, 1, 1, 1),
               num_heads=(1, 1, 1, 1))
    for registry in (DET_MODELS, SEG_MODELS):
        model = registry.build(cfg)
        if type(model).__name__ != "Swinv2Backbone":
            raise RuntimeError(f"{registry.name} built {type(model)} for Swinv2Backbone")
    return f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}: both build Swinv2Backbone"


def check_weights_only_checkpoints() -> str:
    """A checkpoint holding mmengine's HistoryBuffer and numpy data passes the weights-only loader
    (:func:`swinv2_backbone.compat.load_weights_only`)."""
    import io

    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    import swinv2_backbone  # noqa: F401  (registers the safe globals)
    from swinv2_backbone.compat import load_weights_only, weights_only_is_default

    buf = HistoryBuffer()
    buf.update(1.5)
    blob = io.BytesIO()
    torch.save({"message_hub": {"loss": buf}, "meta": {"seed": np.int64(3),
                                                       "arr": np.arange(3.0)}}, blob)
    blob.seek(0)
    loaded = load_weights_only(blob)
    if loaded["message_hub"]["loss"].current() != 1.5:
        raise RuntimeError("HistoryBuffer did not round-trip through a weights-only load")
    if weights_only_is_default():
        return "mmengine checkpoints load with weights_only=True (safe globals registered)"
    return (f"mmengine checkpoints load through the allow-list unpickler (torch {torch.__version__} "
            "cannot extend its weights-only list; mmengine itself loads them without weights_only)")


CHECKS: List[Tuple[str, Callable[[], str]]] = [
    ("torch", check_torch),
    ("torchvision", check_torchvision),
    ("mmcv", check_mmcv),
    ("mmdet/mmseg", check_openmmlab),
    ("checkpoints", check_weights_only_checkpoints),
]


def main() -> int:
    """Run every check, print one line each, return the number of failures."""
    failures = 0
    for name, check in CHECKS:
        try:
            print(f"  ok    {name:12s} {check()}")
        except Exception as exc:  # report every broken piece, not only the first
            failures += 1
            print(f"  FAIL  {name:12s} {type(exc).__name__}: {exc}")
    if failures:
        print(f"environment check: {failures} of {len(CHECKS)} checks failed", file=sys.stderr)
    return failures


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
