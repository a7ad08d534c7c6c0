"""timm ``swinv2_*`` checkpoints <-> native.

timm keeps the official block names but puts patch merging at the *start* of stages 1-3
(``layers.{i+1}.downsample`` = native ``layers.{i}.downsample``), names the classifier ``head.fc``,
and stores no buffers. ``features_only`` models use ``layers_N.`` and the feature getter wraps the
model as ``model.``.
"""
from __future__ import annotations

import re
from typing import Collection, Dict, List, Mapping, Tuple, TypeVar

from .common import Mapped, SmallMapSource, Source
from .keys import (CLASSIFICATION_HEAD, OUT_NORM, StateDict, final_norm_for_export, shift_downsample,
                   split_prefix)
from .official import official_to_native

V = TypeVar("V")

NAME = "timm"
DESCRIPTION = ("timm swinv2_* (patch merging at the start of stages 1-3, 'head.fc'; also "
               "features_only 'layers_N.' and the 'model.' getter prefix)")

_FEATURES = re.compile(r"^layers_(\d+)\.")
_HEAD_FC = "head.fc."


def _plain_timm(state: Mapping[str, V]) -> Dict[str, V]:
    """``state`` under the names of a plain ``SwinTransformerV2``: without the feature getter's
    ``model.`` prefix, and ``layers_N.`` (``features_only``) as ``layers.N.``."""
    if any(k.startswith("model.") for k in state):
        inner, rest = split_prefix(state, "model.")
        state = {**inner, **rest}
    return {_FEATURES.sub(r"layers.\1.", k): v for k, v in state.items()}


def detect(keys: Collection[str]) -> bool:
    """timm names: patch merging at the start of stages (or features-only / getter / ``head.fc``
    markers), no native output norms and no official classifier."""
    names = list(_plain_timm(dict.fromkeys(keys)))
    if "patch_embed.proj.weight" not in names or not any(".blocks." in k for k in names):
        return False
    if any(OUT_NORM.match(k) for k in names) or any(k.startswith("head.weight") for k in names):
        return False
    merge_at_start = any(k.startswith("layers.1.downsample.") for k in names) and not any(
        k.startswith("layers.0.downsample.") for k in names)
    markers = any(_FEATURES.match(k) or k.startswith("model.") for k in keys) or \
        any(k.startswith("head.fc.") for k in names)
    return merge_at_start or (markers and not any(k.startswith("layers.0.downsample.") for k in names))


def to_native(source: Source) -> Mapped:
    """timm -> native: unwrap ``model.``/``layers_N.``, move patch merging to the end of the
    previous stage, ``head.fc`` -> the classification head's ``head``, and drop any ``k_bias``
    (timm's all-zero key bias buffer); the rest are official names (see
    :func:`~swinv2_backbone.checkpoint.official.official_to_native`)."""
    mapped = Mapped(small_map=SmallMapSource("timm", "timm"))
    official: StateDict = {}
    for key, value in _plain_timm(source.state_dict).items():
        if key.endswith(".attn.k_bias"):
            mapped.drop("recomputed buffers", key)
        elif key.startswith(_HEAD_FC):
            mapped.keep_head(CLASSIFICATION_HEAD, key, "head." + key[len(_HEAD_FC):], value)
        else:
            official[shift_downsample(key, -1)] = value
    return official_to_native(official, mapped)


def from_native(state: StateDict) -> Tuple[StateDict, List[str]]:
    """Native -> timm ``SwinTransformerV2`` keys (no classifier), with notes on what changed.

    The last stage's output norm becomes timm's final ``norm`` (a default LayerNorm, weight 1 and
    bias 0, when the state dict has none); other output norms have no timm counterpart and are
    left out.
    """
    rest, final_norm, notes = final_norm_for_export(state, "norm", "timm", "timm's final norm")
    out = {shift_downsample(key, 1): value for key, value in rest.items()}
    out.update(final_norm)
    return out, notes
