"""A ``Swinv2Backbone`` or Swin V1 ``SwinBackbone`` with its weights, from a built model, a config
dict and/or a checkpoint (whose version picks the class).

The architecture of a checkpoint is read from the checkpoint itself
(:meth:`~swinv2_backbone.checkpoint.ConvertedCheckpoint.backbone_cfg`), so a caller may give only a
checkpoint path; a config then overrides single entries of it. Used by
:class:`swinv2_backbone.features.FeatureExtractor` and usable on its own.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..models import BACKBONE_TYPES, SwinBackboneBase, backbone_class
from . import convert_checkpoint, load_pretrained

#: What :func:`build_backbone` accepts as its model: a built backbone, its keyword arguments, or
#: ``None`` (the architecture then comes from the checkpoint).
ModelOrCfg = Union[SwinBackboneBase, Mapping[str, Any], None]

#: Keys that fix the architecture. A config naming any of them replaces all of the checkpoint's, so
#: a preset never mixes with another model's widths or depths (``arch='tiny'`` and the checkpoint's
#: ``embed_dims`` would otherwise both apply).
_ARCHITECTURE_KEYS = ("arch", "embed_dims", "depths", "num_heads")


def _backbone_kwargs(cfg: Mapping[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
    """The optional ``type`` of a config dict (checked) and the backbone keyword arguments."""
    kwargs = dict(cfg)
    kind = kwargs.pop("type", None)
    if kind is not None:
        backbone_class(kind, "model config type")
    return kind, kwargs


def _with_outputs(kwargs: Dict[str, Any], out_features: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``kwargs`` with ``out_features`` added; the outputs may be selected in one place only."""
    if out_features is None:
        return kwargs
    given = [k for k in ("out_indices", "out_features") if kwargs.get(k) is not None]
    if given:
        raise ValueError(f"the outputs are given twice: out_features={tuple(out_features)!r} and "
                         f"{given[0]} in the model config; give them once")
    return {**kwargs, "out_features": tuple(out_features)}


def _check_outputs_of(model: SwinBackboneBase, out_features: Optional[Sequence[str]]) -> None:
    """Raise unless every name in ``out_features`` is an output of the built ``model``."""
    if out_features is None:
        return
    if isinstance(out_features, str):
        raise ValueError(f"out_features must be a sequence of names, got the string {out_features!r}")
    missing = [n for n in out_features if n not in model.out_features]
    if missing:
        raise ValueError(f"out_features {missing} are not outputs of the given model: it returns "
                         f"{list(model.out_features)}")


def _merge_cfg(checkpoint_cfg: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """The checkpoint's config with ``overrides`` applied (see :data:`_ARCHITECTURE_KEYS`)."""
    merged = dict(checkpoint_cfg)
    if any(k in overrides for k in _ARCHITECTURE_KEYS):
        for key in _ARCHITECTURE_KEYS:
            merged.pop(key, None)
    return {**merged, **overrides}


def _random_backbone(kind: str, kwargs: Dict[str, Any]) -> SwinBackboneBase:
    """A backbone of a config without a checkpoint: default initialisation unless its ``init_cfg``
    or ``pretrained`` names weights."""
    backbone = BACKBONE_TYPES[kind](**kwargs)
    if backbone.init_cfg is not None:
        backbone.init_weights()
    return backbone


def build_backbone(
    model: ModelOrCfg = None,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    out_features: Optional[Sequence[str]] = None,
) -> SwinBackboneBase:
    """A backbone with its weights, from a model, a config and/or a checkpoint.

    Args:
        model: A built ``Swinv2Backbone`` or ``SwinBackbone`` (used as is), a config dict of their
            keyword arguments (``type='Swinv2Backbone'`` (the default without a checkpoint) or
            ``'SwinBackbone'``), or ``None`` (needs ``checkpoint``). With a checkpoint the class
            is the checkpoint's version's; a config ``type`` of the other version is an error.
        checkpoint: Any supported checkpoint (HF directory, official, timm, torchvision,
            mmpretrain, mmdet/mmseg or native file). With a config or ``None``, the architecture is
            read from the checkpoint (:meth:`~swinv2_backbone.checkpoint.ConvertedCheckpoint.backbone_cfg`)
            and the config's entries override it; when the config sets other windows than the
            checkpoint's but no ``pretrained_window_sizes``, the position bias keeps the
            checkpoint's coordinate normalisation.
        out_features: Outputs (``'stem'``, ``'stage1'``...). With a built model they must be
            among its outputs (checked here; :class:`~swinv2_backbone.features.FeatureExtractor`
            returns only them); with a config they are passed to the constructor (the config must
            not also select outputs).

    Without a checkpoint, a config gets the default random initialisation unless its ``init_cfg``
    or ``pretrained`` names one.
    """
    if isinstance(model, SwinBackboneBase):
        _check_outputs_of(model, out_features)
        if checkpoint is not None:
            load_pretrained(model, checkpoint=os.fspath(checkpoint))
        return model
    if model is not None and not isinstance(model, Mapping):
        raise TypeError(f"model must be a Swinv2Backbone, a SwinBackbone, a config dict or None, got "
                        f"{type(model).__name__}")
    kind, kwargs = _backbone_kwargs(model or {})
    kwargs = _with_outputs(kwargs, out_features)
    if checkpoint is None:
        if model is None:
            raise ValueError("give a model, a model config (e.g. dict(arch='tiny') for random "
                             "weights) or a checkpoint")
        return _random_backbone(kind or "Swinv2Backbone", kwargs)
    if kwargs.get("init_cfg") is not None or kwargs.get("pretrained") is not None:
        raise ValueError("the checkpoint is given twice: checkpoint= and init_cfg/pretrained in the "
                         "model config; give it once")
    converted = convert_checkpoint(os.fspath(checkpoint))
    if kind is not None and kind != converted.model_type:
        raise ValueError(f"{converted.source} is a Swin V{converted.version} checkpoint; the "
                         f"config says type={kind!r}: use type='{converted.model_type}'")
    backbone = BACKBONE_TYPES[converted.model_type](
        **_merge_cfg(_backbone_kwargs(converted.backbone_cfg())[1], kwargs))
    # SwinV2: the checkpoint's training windows define the position-bias normalisation unless the
    # config sets its own pretrained_window_sizes or the file does not record them.
    windows_from_config = ("pretrained_window_sizes" in kwargs or not converted.windows_known
                           or converted.version == 1)
    load_pretrained(backbone, checkpoint=converted,  # read and converted once
                    pretrained_window_sizes=None if windows_from_config else "checkpoint")
    return backbone
