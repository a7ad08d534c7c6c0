"""What an export starts from: a checkpoint of any supported format (a backbone, or a classifier
with its head), or an mmdet / mmseg config (its backbone, backbone + neck, or a whole segmentor)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.build import build_backbone
from ..features.classify import load_classifier
from .targets import require
from .detectors import DETECTION_OUTPUTS, DenseDetections
from .tracing import DEFAULT_MAX_BATCH, DEFAULT_MIN_SIDE, ExportError

#: Trace side of a whole detector: its coarsest level (stride 128 with RetinaNet's P7) must not be
#: a single pixel in the trace.
DETECTOR_TRACE_SIDE = 256

#: What can be exported from a source.
WHAT = ("backbone", "neck", "model")

PathLike = Union[str, os.PathLike]


@dataclass
class Exportable:
    """A model ready to export.

    Args:
        model: The module; ``model(images)`` returns a tensor or a tuple of tensors.
        channels: Input channels.
        outputs: A name per output, in order.
        description: One line for reports.
        max_batch: The largest batch the model takes.
        least_side: Trace sides above this (:meth:`.SizeRange.example_shape`).
    """

    model: nn.Module
    channels: int
    outputs: Tuple[str, ...]
    description: str
    max_batch: int = DEFAULT_MAX_BATCH
    least_side: int = DEFAULT_MIN_SIDE


class BackboneNeck(nn.Module):
    """A backbone and its neck as one module: ``images -> neck(backbone(images))`` (the FPN levels).

    Args:
        backbone: The backbone.
        neck: The neck (an mmdet/mmseg ``FPN``, say).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.neck(self.backbone(images)))


class SegmentorLogits(nn.Module):
    """An mmseg ``EncoderDecoder`` as ``images -> (N, classes, H, W)`` logits at the input's size:
    features, decode head, bilinear resize as mmseg's own inference does
    (``decode_head.predict_by_feat``). The images are normalised already (the data preprocessor's
    mean, std and channel order are not part of the graph).

    Args:
        segmentor: The mmseg segmentor.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    @property
    def backbone(self) -> nn.Module:
        return self.segmentor.backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(images))
        return F.interpolate(logits, size=images.shape[2:], mode="bilinear",
                             align_corners=self.segmentor.decode_head.align_corners)


def _is_config(source: Path) -> bool:
    return source.suffix == ".py"


def from_checkpoint(source: Path, what: str) -> Exportable:
    """A backbone (``what='backbone'``) or a classifier (``'model'``) from a checkpoint."""
    if what == "neck":
        raise ExportError("a checkpoint holds no neck: give an mmdet/mmseg config as the source "
                          "(with --checkpoint) to export backbone + neck")
    if what == "model":
        classifier, _ = load_classifier(source)
        return Exportable(classifier, classifier.backbone.in_channels, ("logits",),
                          f"{type(classifier).__name__} from {source}")
    backbone = build_backbone(checkpoint=source)
    return Exportable(backbone, backbone.in_channels, tuple(f.name for f in backbone.feature_info),
                      f"{type(backbone).__name__} from {source}")


def from_config(source: Path, checkpoint: Optional[Path], what: str) -> Exportable:
    """The backbone, backbone + neck or whole segmentor of an mmdet / mmseg config, with the
    weights of ``checkpoint`` (a training checkpoint of that config) where given."""
    require("mmengine", "exporting from a config")
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    from .. import openmmlab  # noqa: F401  (registers this project's modules)

    cfg = Config.fromfile(str(source))
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, str(checkpoint), map_location="cpu", logger="silent")
    backbone = model.backbone
    channels = backbone.in_channels
    if what == "backbone":
        return Exportable(backbone, channels, tuple(f.name for f in backbone.feature_info),
                          f"backbone of {source.name}")
    if what == "neck":
        if getattr(model, "neck", None) is None:
            raise ExportError(f"{source.name} has no neck; export --what backbone or model")
        levels = model.neck.num_outs if hasattr(model.neck, "num_outs") else len(backbone.feature_info)
        return Exportable(BackboneNeck(backbone, model.neck), channels,
                          tuple(f"level{i}" for i in range(levels)), f"backbone + neck of {source.name}")
    if hasattr(model, "decode_head"):
        return Exportable(SegmentorLogits(model), channels, ("seg_logits",),
                          f"segmentor of {source.name}")
    return Exportable(DenseDetections(model), channels, DETECTION_OUTPUTS,
                      f"{type(model).__name__} of {source.name} (boxes after NMS, batch 1)",
                      max_batch=1, least_side=DETECTOR_TRACE_SIDE)


def load_source(source: PathLike, checkpoint: Optional[PathLike] = None,
                what: str = "backbone") -> Exportable:
    """The model an export starts from.

    Args:
        source: A checkpoint of any supported format (HF directory, official / timm / torchvision /
            mmpretrain / mmdet / mmseg / this project's file), or an mmdet / mmseg config (``.py``).
        checkpoint: With a config: the weights of that config's model (random weights without).
        what: ``'backbone'``, ``'neck'`` (backbone + neck, configs only) or ``'model'`` (a
            checkpoint's classifier; a config's whole segmentor, or its whole one-stage detector:
            :class:`.detectors.DenseDetections`).

    Raises:
        ExportError: A missing source, ``checkpoint`` without a config, or a ``what`` the source
            does not have.
    """
    if what not in WHAT:
        raise ExportError(f"what must be one of {', '.join(WHAT)}, got {what!r}")
    path = Path(source)
    if not path.exists():
        raise ExportError(f"no checkpoint or config at {str(path)!r}")
    if _is_config(path):
        ckpt = None if checkpoint is None else Path(checkpoint)
        if ckpt is not None and not ckpt.is_file():
            raise ExportError(f"no checkpoint file at {str(ckpt)!r}")
        return from_config(path, ckpt, what)
    if checkpoint is not None:
        raise ExportError("--checkpoint goes with a config source; a checkpoint source carries its "
                          "own weights")
    return from_checkpoint(path, what)
