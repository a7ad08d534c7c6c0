"""A whole one-stage mmdet detector as one traceable module: features, dense head, per-level
top-k, box decoding and NMS (torchvision's ``nms``, which ONNX exports as ``NonMaxSuppression``).

Two-stage detectors (Faster / Mask R-CNN, Cascade, HTC) crop RoIs with mmcv's compiled ``RoIAlign``,
which no exporter here can trace: they export backbone + neck (:class:`.sources.BackboneNeck`).
"""
from __future__ import annotations

import copy
from typing import Tuple

import torch
import torchvision
from torch import nn

from .tracing import ExportError

#: What a detector's outputs are called in an exported file.
DETECTION_OUTPUTS = ("boxes", "scores", "labels")


def _unsupported(detector: nn.Module, why: str) -> ExportError:
    return ExportError(
        f"a whole {type(detector).__name__} does not export: {why}. Whole detectors export when "
        "they are one-stage with a dense head that uses mmdet's shared post-processing, sigmoid "
        "classification and plain NMS (RetinaNet, FCOS, ATSS, FreeAnchor...); export --what neck "
        "(backbone + FPN) and run the heads in PyTorch otherwise")


def check_detector(detector: nn.Module) -> None:
    """Raise :class:`.ExportError` unless :class:`DenseDetections` reproduces ``detector``."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead

    head = getattr(detector, "bbox_head", None)
    if head is None or getattr(detector, "roi_head", None) is not None:
        raise _unsupported(detector, "it is not a one-stage detector (its boxes come from an RoI "
                                     "head, which crops features with mmcv's RoIAlign)")
    if not isinstance(head, BaseDenseHead) or \
            type(head)._predict_by_feat_single is not BaseDenseHead._predict_by_feat_single:
        raise _unsupported(detector, f"its {type(head).__name__} post-processes boxes its own way")
    if not getattr(head, "use_sigmoid_cls", False) or getattr(head.loss_cls, "custom_cls_channels",
                                                              False):
        raise _unsupported(detector, f"its {type(head).__name__} does not score with a sigmoid")
    cfg = head.test_cfg
    if cfg.get("nms", {}).get("type") != "nms" or cfg.get("nms_pre", -1) <= 0:
        raise _unsupported(detector, f"its test_cfg is not nms_pre > 0 with plain 'nms' (got "
                                     f"{dict(cfg)})")


def meshgrid_by_repeat(x: torch.Tensor, y: torch.Tensor,
                       row_major: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """A prior generator's ``_meshgrid`` (flattened ``x`` and ``y`` of every grid cell, row by row)
    built by repeating, as mmdet's ``AnchorGenerator`` does. ``MlvlPointGenerator`` (FCOS, ...)
    flattens ``torch.meshgrid``'s expanded views instead, and whether that is a view or a copy
    depends on a side being 1: a trace takes a guard that no level is one pixel high or wide."""
    xx = x.repeat(y.shape[0])
    yy = y.view(-1, 1).repeat(1, x.shape[0]).view(-1)
    return (xx, yy) if row_major else (yy, xx)


class DenseDetections(nn.Module):
    """A one-stage mmdet detector as ``images (1, C, H, W) -> (boxes (K, 4), scores (K,),
    labels (K,))``, K <= ``max_per_img``, sorted by score: what its ``predict(..., rescale=False)``
    returns for an image of that size. The images are normalised (and padded, if the results must
    equal the data preprocessor's) already; boxes are in input pixels, clipped to the input.

    The head's ``score_thr`` filter and ``nms_pre`` top-k per level become a fixed-size top-k over
    scores padded with ``-inf``, and the pairs at or below the threshold get score ``-inf`` (after
    the top-k, before any score factor such as FCOS's centerness, as mmdet orders them): NMS visits
    boxes by decreasing score, so those suppress only each other, and they are dropped after it.
    Boxes no wider or taller than ``min_bbox_size`` are dropped the same way. Classes are kept
    apart by offsetting each class's boxes past all others.

    Args:
        detector: The mmdet detector (:func:`check_detector` must accept it).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        check_detector(detector)
        self.detector = detector
        # the head's prior generator with the traceable meshgrid (a copy: the detector is unchanged)
        self.prior_generator = copy.copy(detector.bbox_head.prior_generator)
        self.prior_generator._meshgrid = meshgrid_by_repeat

    @property
    def backbone(self) -> nn.Module:
        return self.detector.backbone

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        head = self.detector.bbox_head
        cfg = head.test_cfg
        outs = head(self.detector.extract_feat(images))
        factors = outs[2] if len(outs) > 2 else [None] * len(outs[0])
        priors = self.prior_generator.grid_priors([s.shape[-2:] for s in outs[0]],
                                                  dtype=images.dtype, device=images.device)
        picked = [self._top_k(s[0], b[0], f if f is None else f[0], p, head, cfg["nms_pre"],
                              cfg.get("score_thr", 0))
                  for s, b, f, p in zip(outs[0], outs[1], factors, priors)]
        deltas, anchors, scores, labels = (torch.cat(parts) for parts in zip(*picked))
        boxes = head.bbox_coder.decode(anchors, deltas, max_shape=images.shape[-2:])
        if cfg.get("min_bbox_size", -1) >= 0:
            sides = boxes[:, 2:] - boxes[:, :2]
            scores = scores.masked_fill((sides <= cfg["min_bbox_size"]).any(1), float("-inf"))
        offsets = labels.to(boxes.dtype) * (boxes.max() + 1)
        keep = torchvision.ops.nms(boxes + offsets[:, None], scores, cfg["nms"]["iou_threshold"])
        keep = keep[torch.isfinite(scores[keep])][:cfg["max_per_img"]]
        return boxes[keep], scores[keep], labels[keep]

    @staticmethod
    def _top_k(cls_score: torch.Tensor, bbox_pred: torch.Tensor, factor, priors: torch.Tensor,
               head: nn.Module, k: int, threshold: float) -> Tuple[torch.Tensor, ...]:
        """One level's ``k`` best (prior, class) pairs as ``(deltas, priors, scores, labels)``;
        pairs past the level's count, or scoring at most ``threshold``, get score ``-inf``."""
        classes = head.cls_out_channels
        scores = cls_score.permute(1, 2, 0).reshape(-1).sigmoid()
        scores = torch.cat([scores, scores.new_full((k,), float("-inf"))])
        values, index = scores.topk(k)
        values = values.masked_fill(values <= threshold, float("-inf"))
        count = cls_score.shape[-2] * cls_score.shape[-1] * (cls_score.shape[0] // classes)
        prior = (index // classes).clamp(max=count - 1)
        deltas = bbox_pred.permute(1, 2, 0).reshape(-1, head.bbox_coder.encode_size)[prior]
        if factor is not None:
            values = values * factor.permute(1, 2, 0).reshape(-1).sigmoid()[prior]
        return deltas, priors[prior], values, index % classes
