"""Export native backbone weights (e.g. after detection fine-tuning) to Hugging Face and timm, a
classifier to Hugging Face ``Swinv2ForImageClassification`` and a SimMIM model to Hugging Face
``Swinv2ForMaskedImageModeling``; Swin V1 weights to the V1 classes (``SwinModel``,
``SwinForImageClassification``, ``SwinForMaskedImageModeling``, timm ``SwinTransformer``).

``to_hf`` / ``to_timm`` return the peer's state dict (``to_hf_classifier`` with the classification
head, ``to_hf_mim`` with the mask token and the SimMIM decoder; :func:`from_model` turns a built
model into the converted weights they take); ``save_hf`` writes a directory that
``transformers.Swinv2Model.from_pretrained`` (or the task model's) loads, ``save_timm`` a file that timm's
``SwinTransformerV2`` (``num_classes=0``) loads with ``load_state_dict`` or through
``pretrained_cfg_overlay=dict(file=...)``. Only the last stage's output norm has a counterpart in
either peer (their final norm); the other output norms are left out and reported.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

from . import hf, timm
from .atomic import write_atomic
from .common import CheckpointError, SmallMapSource, StateDict
from .convert import ConvertedCheckpoint, convert_checkpoint
from .io import PathLike, save_state_dict
from .keys import CLASSIFICATION_HEAD, MASK_TOKEN, MASK_TOKEN_KEY, MIM_HEAD
from .load import backbone_of
from .native import describe_mismatch


class HeadExportError(CheckpointError):
    """A head that the task model cannot take: missing, or of another shape than the encoder's
    (e.g. a SimMIM decoder of another stride). Apart from :class:`CheckpointError` so that a caller
    can offer the encoder alone, which may still export."""


@dataclass
class Exported:
    """Weights in a peer's layout.

    Args:
        state_dict: The peer's keys and tensors.
        config: Constructor arguments (timm) or ``config.json`` content (HF).
        notes: What had no counterpart or was filled in.
    """

    state_dict: StateDict
    config: Dict[str, Any]
    notes: List[str] = field(default_factory=list)


def known_windows(converted: ConvertedCheckpoint) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The per-stage training and pretrained windows, which an export needs; an error naming the
    fix when the checkpoint does not record them."""
    if not converted.windows_known:
        raise CheckpointError(f"{converted.source} does not record its training windows; give them "
                              "with converted.with_windows(...) (CLI: --window-size)")
    return tuple(converted.window_sizes), tuple(converted.pretrained_window_sizes)


def default_image_size(windows: Sequence[int], patch_size: int, grid: Optional[int],
                       release_size: int) -> int:
    """The input size an exported model is built for: the position-embedding grid if any, else the
    size whose last-stage map equals a last-stage window smaller than the others (the official
    ``*_256``/``*_384`` releases), else ``release_size``, the version's usual size
    (:attr:`~swinv2_backbone.models.SwinBackboneBase.release_image_size`)."""
    if grid is not None:
        return grid * patch_size
    if windows[-1] < max(windows):
        return windows[-1] * patch_size * 2 ** (len(windows) - 1)
    return release_size


def to_hf(converted: ConvertedCheckpoint, image_size: Optional[int] = None) -> Exported:
    """Native weights -> HF ``Swinv2Model`` (Swin V1: ``SwinModel``) state dict and ``config.json``.

    Args:
        converted: Weights with known windows, e.g. from
            :func:`~swinv2_backbone.checkpoint.convert_checkpoint` (``.with_windows(...)`` if the
            file did not record them).
        image_size: Input size of the HF model (HF fixes windows and shifts from it); default
            :func:`default_image_size`.
    """
    s = converted.structure
    windows, pretrained = known_windows(converted)
    image_size = image_size or default_image_size(windows, s.patch_size, s.pos_embed_grid,
                                                  converted.backbone_class.release_image_size)
    if s.pos_embed_grid is not None and image_size != s.pos_embed_grid * s.patch_size:
        raise CheckpointError(f"the absolute position embedding is defined for "
                              f"{s.pos_embed_grid * s.patch_size} px; HF needs image_size equal to it")
    config = hf.hf_config(s.embed_dims, s.depths, s.num_heads, windows, pretrained, image_size,
                          s.patch_size, s.in_channels, s.mlp_ratio, s.qkv_bias,
                          s.pos_embed_grid is not None, converted.version)
    state, notes = hf.from_native(converted.state_dict)
    return Exported(state, config, notes)


def to_hf_classifier(converted: ConvertedCheckpoint, image_size: Optional[int] = None) -> Exported:
    """Native weights with a classification head -> HF ``Swinv2ForImageClassification`` state dict
    (``swinv2.`` encoder, ``classifier``; Swin V1: ``SwinForImageClassification``, ``swin.``) and ``config.json`` (``id2label`` from
    :attr:`~ConvertedCheckpoint.labels`, else HF's ``LABEL_i`` placeholders).

    Args:
        converted: Weights with known windows and a classification head (e.g. :func:`from_model`
            of a ``SwinClassifier``, or a converted classification checkpoint).
        image_size: As for :func:`to_hf`.

    Raises:
        HeadExportError: No classification head.
        CheckpointError: Encoder weights that HF cannot express (see :func:`to_hf`).
    """
    head = converted.heads.get(CLASSIFICATION_HEAD)
    if head is None:
        raise HeadExportError(f"{converted.source} has no classification head to export")
    encoder = to_hf(converted, image_size)
    num_classes = head["head.weight"].shape[0]
    labels = converted.labels or tuple(f"LABEL_{i}" for i in range(num_classes))
    prefix = hf.encoder_prefix(converted.version)
    state = {prefix + k: v for k, v in encoder.state_dict.items()}
    state.update({"classifier." + k[len("head."):]: v for k, v in head.items()})
    architecture = hf.hf_class(converted.version, "ForImageClassification")
    config = {**encoder.config, "architectures": [architecture],
              "id2label": {str(i): name for i, name in enumerate(labels)},
              "label2id": {name: i for i, name in enumerate(labels)}}
    return Exported(state, config, encoder.notes)


def to_hf_mim(converted: ConvertedCheckpoint, image_size: Optional[int] = None) -> Exported:
    """Native weights with a mask token and a SimMIM decoder -> HF
    ``Swinv2ForMaskedImageModeling`` state dict (``swinv2.`` encoder with
    ``swinv2.embeddings.mask_token``, ``decoder.0.*``; Swin V1: ``SwinForMaskedImageModeling``,
    ``swin.``) and ``config.json`` (``encoder_stride`` the
    encoder's output stride, which the decoder's pixel shuffle undoes).

    HF reconstructs square inputs of ``image_size`` only (it reshapes the tokens to a square and
    the mask to ``image_size / patch_size`` per side).

    Args:
        converted: Weights with known windows, a mask token and a decoder (e.g. :func:`from_model`
            of a ``SimMIM`` / ``SwinSimMIM``, or a converted SimMIM checkpoint).
        image_size: As for :func:`to_hf`.

    Raises:
        HeadExportError: No mask token or decoder, or a decoder of another stride or channel count
            than the encoder's.
        CheckpointError: Encoder weights that HF cannot express (see :func:`to_hf`).
    """
    missing = [name for name in (MASK_TOKEN, MIM_HEAD) if name not in converted.heads]
    if missing:
        raise HeadExportError(f"{converted.source} has no {' and no '.join(missing)} to export to "
                              "Swinv2ForMaskedImageModeling")
    s = converted.structure
    stride = s.patch_size * 2 ** (s.num_stages - 1)
    channels = stride ** 2 * s.in_channels
    decoder = converted.heads[MIM_HEAD]
    problems = describe_mismatch(decoder, {"decoder.0.weight": (channels, s.dims[-1], 1, 1),
                                           "decoder.0.bias": (channels,)},
                                 "checkpoint", f"HF at encoder_stride {stride}")
    if problems:
        raise HeadExportError(f"{converted.source}: the SimMIM decoder does not fit HF's: "
                              + "; ".join(problems))
    encoder = to_hf(converted, image_size)
    prefix = hf.encoder_prefix(converted.version)
    state = {prefix + k: v for k, v in encoder.state_dict.items()}
    state[prefix + "embeddings.mask_token"] = converted.heads[MASK_TOKEN][MASK_TOKEN_KEY]
    state.update(decoder)
    architecture = hf.hf_class(converted.version, "ForMaskedImageModeling")
    config = {**encoder.config, "architectures": [architecture],
              "encoder_stride": stride}
    return Exported(state, config, encoder.notes)


def from_model(model: nn.Module) -> ConvertedCheckpoint:
    """A built model's weights as a :class:`ConvertedCheckpoint` for the exporters: its windows and
    its ``small_map`` rule (kept in a native file's metadata), for a classifier its head and class names, for a SimMIM model (``SimMIM``, ``SwinSimMIM``)
    its mask token and decoder.

    Args:
        model: A ``Swinv2Backbone`` or ``SwinBackbone``, or a ``SwinClassifier``, ``SimMIM`` or
            ``SwinSimMIM`` around one.
    """
    backbone = backbone_of(model)
    converted = convert_checkpoint(model.state_dict(), format="native").with_windows(
        backbone.window_size, backbone.pretrained_window_sizes)
    names = getattr(model, "class_names", None)
    rule = SmallMapSource(backbone.small_map, f"a {type(model).__name__} with small_map="
                          f"{backbone.small_map!r}")
    return replace(converted, source=type(model).__name__,
                   labels=tuple(names) if names is not None else None, small_map=rule)


def to_timm(converted: ConvertedCheckpoint, image_size: Optional[int] = None) -> Exported:
    """Native weights -> timm ``SwinTransformerV2`` (Swin V1: ``SwinTransformer``) state dict and
    constructor arguments. timm's Swin V1 takes one window, clamped to each stage's map at
    ``img_size`` (as HF's).

    Args:
        converted: Weights with known windows (see :func:`to_hf`).
        image_size: ``img_size`` of the timm model; default :func:`default_image_size`.
    """
    s = converted.structure
    if s.pos_embed_grid is not None:
        raise CheckpointError("timm's Swin models have no absolute position embedding")
    windows, pretrained = known_windows(converted)
    img_size = image_size or default_image_size(windows, s.patch_size, None,
                                                converted.backbone_class.release_image_size)
    config = {"img_size": img_size, "patch_size": s.patch_size, "in_chans": s.in_channels,
              "num_classes": 0, "embed_dim": s.embed_dims, "depths": s.depths,
              "num_heads": s.num_heads, "mlp_ratio": s.mlp_ratio, "qkv_bias": s.qkv_bias}
    if converted.backbone_class.continuous_position_bias:
        config.update(window_size=windows, pretrained_window_sizes=pretrained)
    else:  # timm's SwinTransformer: one window for all stages
        config["window_size"] = hf.single_window(windows, img_size, s.patch_size, "timm's Swin V1")
    state, notes = timm.from_native(converted.state_dict)
    return Exported(state, config, notes)


def save_hf(exported: Exported, directory: PathLike) -> None:
    """Write ``model.safetensors`` and then ``config.json`` into ``directory`` (created if needed),
    each crash-safely (:func:`.atomic.write_atomic`): a reader needs both, and a directory killed
    between the two lacks the config and is refused as incomplete."""
    from safetensors.torch import save

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in exported.state_dict.items()}
    write_atomic(os.path.join(directory, "model.safetensors"), save(state, metadata={"format": "pt"}))
    write_atomic(os.path.join(directory, "config.json"),
                 json.dumps(exported.config, indent=2).encode("utf-8"))


def save_timm(exported: Exported, path: PathLike) -> None:
    """Write the timm state dict as ``.safetensors`` or a plain ``torch.save`` dict (``.pth``),
    crash-safely (:func:`.atomic.write_atomic`)."""
    path = os.fspath(path)
    state = {k: v.detach().contiguous() for k, v in exported.state_dict.items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save

        write_atomic(path, save(state))
    else:
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(path, buffer.getvalue())


def save_native(converted: ConvertedCheckpoint, path: PathLike) -> None:
    """Write the converted weights as this project's backbone checkpoint (with metadata)."""
    save_state_dict(converted.state_dict, path, converted.meta())
