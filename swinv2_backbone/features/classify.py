"""Classifying image files with a classification checkpoint of any supported format.

:func:`load_classifier` builds a :class:`~swinv2_backbone.models.SwinClassifier` from the checkpoint
alone (architecture, windows, class count and names). :func:`preprocessing_for` follows the
checkpoint's preprocessing where it states it (an HF ``preprocessor_config.json`` next to the
weights), else: RGB, resized to the checkpoint's image size, ImageNet mean and std.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch

from ..checkpoint import CheckpointError, ConvertedCheckpoint, convert_checkpoint, load_pretrained
from ..checkpoint.export import default_image_size
from ..checkpoint.keys import CLASSIFICATION_HEAD
from ..models import SwinClassifier
from ..models.args import IntOrSeq
from .extractor import IMAGENET_MEAN, IMAGENET_STD, channel_stats
from .images import PathLike, Size, target_size
from .pixels import as_float, pixels_size, read_pixels

PREPROCESSOR_CONFIG = "preprocessor_config.json"
#: Input size when the checkpoint tells none (the official 256 px releases).
DEFAULT_IMAGE_SIZE = 256
#: Pillow's filter numbers, which HF preprocessor configs use for ``resample``.
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the classifier's input.

    Args:
        size: Fixed input (rows, columns), or ``None`` with ``short_side``.
        short_side: Resize keeping the aspect ratio so the shorter side is this long (HF
            ``shortest_edge``), or ``None`` with ``size``.
        resample: Pillow filter number (see :data:`PIL_FILTERS`).
        scale: Factor from 0-255 pixel values to the model's range before normalising.
        mean: Per-channel mean subtracted (after scaling); zeros for none.
        std: Per-channel divisor; ones for none.
        origin: What defined this, for the printout.
        channels: The model's input channels: every image is read with them (see
            :mod:`.pixels`), ``mean`` and ``std`` have one value each.
    """

    size: Optional[Size]
    short_side: Optional[int] = None
    resample: int = 2
    scale: float = 1 / 255
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    origin: str = "default"
    channels: int = 3

    def describe(self) -> str:
        """One line: size, filter, normalisation and origin."""
        size = f"{self.size[0]}x{self.size[1]}" if self.size else f"shorter side {self.short_side}"
        return (f"{size}, {PIL_FILTERS.get(self.resample, self.resample)}, x{self.scale:g}, "
                f"mean {list(self.mean)}, std {list(self.std)} ({self.origin})")

    def load(self, path: PathLike) -> torch.Tensor:
        """The ``(channels, H, W)`` float model input of an image file (raises
        ``ImageReadError``; also for an image of other channels). Arrays of floats in [0, 1] are
        scaled like the 0-255 values of the images (by ``255 * scale``)."""
        size = self.size
        if size is None:
            size = target_size(pixels_size(path, self.channels), short_side=self.short_side)
        read = read_pixels(path, self.channels, size, self.resample)
        pixels = read.float() * self.scale if read.dtype == torch.uint8 else (
            as_float(read) * (255 * self.scale))
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (pixels - mean) / std


def _square(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def checkpoint_image_size(converted: ConvertedCheckpoint, config: Optional[Mapping[str, Any]]) -> int:
    """The input size the checkpoint was made for: HF ``config.json``'s ``image_size``, else the
    size its windows imply (:func:`~swinv2_backbone.checkpoint.export.default_image_size`), else
    :data:`DEFAULT_IMAGE_SIZE`."""
    if config is not None and "image_size" in config:
        return _square(config["image_size"])
    s = converted.structure
    if converted.windows_known:
        return default_image_size(converted.window_sizes, s.patch_size, s.pos_embed_grid,
                                  converted.backbone_class.release_image_size)
    return s.pos_embed_grid * s.patch_size if s.pos_embed_grid is not None else DEFAULT_IMAGE_SIZE


def hf_preprocessing(config: Mapping[str, Any], name: str) -> Preprocessing:
    """:class:`Preprocessing` from an HF ``preprocessor_config.json``.

    Raises:
        ValueError: A ``size`` or ``resample`` it does not understand (the message names them).
    """
    size, short_side = None, None
    if config.get("do_resize", True):
        given = config.get("size")
        if isinstance(given, int):
            size = (given, given)
        elif isinstance(given, Mapping) and {"height", "width"} <= set(given):
            size = (int(given["height"]), int(given["width"]))
        elif isinstance(given, Mapping) and "shortest_edge" in given:
            short_side = int(given["shortest_edge"])
        else:
            raise ValueError(f"{name}: unsupported size {given!r} (expected an int, height/width "
                             "or shortest_edge)")
    resample = int(config.get("resample", 2))
    if resample not in PIL_FILTERS:
        raise ValueError(f"{name}: unknown resample {resample} (Pillow filters {PIL_FILTERS})")
    normalize = config.get("do_normalize", True)
    return Preprocessing(
        size=size, short_side=short_side, resample=resample,
        scale=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
        mean=tuple(config.get("image_mean", IMAGENET_MEAN)) if normalize else (0.0, 0.0, 0.0),
        std=tuple(config.get("image_std", IMAGENET_STD)) if normalize else (1.0, 1.0, 1.0),
        origin=name)


def preprocessing_for(checkpoint: PathLike, converted: ConvertedCheckpoint, channels: int = 3,
                      mean: Optional[Sequence[float]] = None,
                      std: Optional[Sequence[float]] = None) -> Preprocessing:
    """The checkpoint's own preprocessing (``preprocessor_config.json`` in its directory), else the
    default at the checkpoint's image size (:func:`checkpoint_image_size`), for a model of
    ``channels`` input channels, with ``mean`` and ``std`` instead of the checkpoint's where given
    (required for ``channels != 3``: :func:`~.extractor.channel_stats`).

    Raises:
        ValueError: An unreadable or unsupported ``preprocessor_config.json``, or a normalisation
            that does not fit ``channels``.
    """
    found = _checkpoint_preprocessing(checkpoint, converted)
    if mean is None and std is None and channels == 3:
        return found
    mean, std = channel_stats(mean, std, channels)
    return replace(found, channels=channels, mean=mean, std=std,
                   origin=f"{found.origin}; {channels} channels, mean and std given")


def _checkpoint_preprocessing(checkpoint: PathLike, converted: ConvertedCheckpoint) -> Preprocessing:
    """:func:`preprocessing_for` as the checkpoint alone says it."""
    directory = Path(checkpoint) if Path(checkpoint).is_dir() else None
    config = None
    if directory is not None and (directory / "config.json").is_file():
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if directory is not None and (directory / PREPROCESSOR_CONFIG).is_file():
        path = directory / PREPROCESSOR_CONFIG
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read {path}: {err}") from None
        if not isinstance(found, Mapping):
            raise ValueError(f"{path} holds a {type(found).__name__}, not a JSON object")
        return hf_preprocessing(found, str(path))
    side = checkpoint_image_size(converted, config)
    return Preprocessing(size=(side, side),
                         origin=f"default: RGB, {side} px (the checkpoint's), ImageNet mean/std")


def load_classifier(checkpoint: PathLike, window_size: Optional[IntOrSeq] = None,
                    pretrained_window_sizes: IntOrSeq = 0, in_channels: Optional[int] = None
                    ) -> Tuple[SwinClassifier, ConvertedCheckpoint]:
    """A ``SwinClassifier`` in eval mode built from and loaded with ``checkpoint``: architecture
    and windows as the checkpoint records them (its position-bias normalisation included), class
    count from its head, class names where it names them.

    Args:
        checkpoint: Classification checkpoint of any supported format.
        window_size: The training windows of a checkpoint that does not record them (a timm state
            dict saved without its buffers, say), one int or one per stage; ``None`` takes the
            checkpoint's, or the model default where it records none (the returned
            :class:`ConvertedCheckpoint` then says ``windows_known`` is False).
        pretrained_window_sizes: With ``window_size``: the windows that normalised the position
            bias in training (0: none), one int or one per stage.
        in_channels: Input channels of the model; ``None`` takes the checkpoint's (an RGB
            checkpoint's patch embedding is adapted to another count by the loader).

    Raises:
        CheckpointError: Unreadable checkpoint, or one without a classification head.
        ValueError: ``window_size`` given for a checkpoint that records other windows.
    """
    converted = convert_checkpoint(os.fspath(checkpoint))
    head = converted.heads.get(CLASSIFICATION_HEAD)
    if head is None or "head.weight" not in head:
        raise CheckpointError(f"{converted.source} ({converted.format}) has no classification head; "
                              "give a classification checkpoint")
    if window_size is not None:
        given = converted.with_windows(window_size, pretrained_window_sizes)
        if converted.windows_known and (given.window_sizes, given.pretrained_window_sizes) != (
                converted.window_sizes, converted.pretrained_window_sizes):
            raise ValueError(f"{converted.source} records {converted.describe_windows()}; the "
                             f"windows given ({given.window_sizes}, pretrained "
                             f"{given.pretrained_window_sizes}) disagree: leave them out")
        converted = given
    cfg = {k: v for k, v in converted.backbone_cfg().items() if k != "type"}
    if in_channels is not None:
        cfg["in_channels"] = in_channels
    model = SwinClassifier(num_classes=int(head["head.weight"].shape[0]),
                             backbone_type=converted.model_type, **cfg)
    # a Swin V1 model has no coordinate normalisation: its window_size is all there is
    take_windows = converted.windows_known and converted.version == 2
    load_pretrained(model, converted, pretrained_window_sizes="checkpoint" if take_windows else None)
    return model.eval(), converted


def top_k(logits: torch.Tensor, k: int, names: Optional[Sequence[str]]
          ) -> List[Tuple[int, Optional[str], float]]:
    """The ``k`` most probable classes of one ``(num_classes,)`` logit vector: ``(index, name or
    None, softmax probability)``, most probable first."""
    probs = logits.float().softmax(-1)
    values, indices = probs.topk(min(k, probs.numel()))
    return [(int(i), names[int(i)] if names else None, float(p)) for p, i in zip(values, indices)]
