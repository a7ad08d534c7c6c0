"""timm ``swinv2_*`` checkpoints <-> native.

timm keeps the official block names but puts patch merging at the *start* of stages 1-3
(``layers.{i+1}.downsample`` = native ``layers.{i}.downsample``), names the classifier ``head.fc``,
and stores no buffers. ``features_only`` models use ``layers_N.`` and the feature getter wraps the
model as ``model.``.
"""
from __future__ import annotations

import re
from typing import Collection, List, Tuple

import torch

from .common import Mapped, Source, StateDict, is_buffer_key, num_stages, split_prefix

NAME = "timm"
DESCRIPTION = ("timm swinv2_* (patch merging at the start of stages 1-3, 'head.fc'; also "
               "features_only 'layers_N.' and the 'model.' getter prefix)")

_FEATURES = re.compile(r"^layers_(\d+)\.")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
_TABLE = re.compile(r"^layers\.(\d+)\.blocks\.0\.attn\.relative_coords_table$")
_OUT_NORM = re.compile(r"^norm\d+\.")


def _normalise(keys: Collection[str]) -> Tuple[str, ...]:
    keys = [k[len("model."):] if k.startswith("model.") else k for k in keys]
    return tuple(_FEATURES.sub(r"layers.\1.", k) for k in keys)


def detect(keys: Collection[str]) -> bool:
    """timm names: patch merging at the start of stages (or features-only / getter / ``head.fc``
    markers), no native output norms and no official classifier."""
    body = _normalise(keys)
    if "patch_embed.proj.weight" not in body or not any(".blocks." in k for k in body):
        return False
    if any(_OUT_NORM.match(k) for k in body) or any(k.startswith("head.weight") for k in body):
        return False
    merge_at_start = any(k.startswith("layers.1.downsample.") for k in body) and not any(
        k.startswith("layers.0.downsample.") for k in body)
    markers = any(_FEATURES.match(k) or k.startswith("model.") for k in keys) or \
        any(k.startswith("head.fc.") for k in body)
    return merge_at_start or (markers and not any(k.startswith("layers.0.downsample.") for k in body))


def _shift_downsample(key: str, step: int) -> str:
    return _DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + step}.downsample.", key)


def to_native(source: Source) -> Mapped:
    """timm -> native: unwrap ``model.``/``layers_N.``, move patch merging to the end of the
    previous stage, final ``norm`` -> ``norm{last}``, drop ``head.fc`` and any buffers."""
    state = source.state_dict
    if any(k.startswith("model.") for k in state):
        inner, rest = split_prefix(state, "model.")
        state = {**inner, **rest}
    state = {_FEATURES.sub(r"layers.\1.", k): v for k, v in state.items()}
    mapped = Mapped()
    last = num_stages(state) - 1
    for key, value in state.items():
        if is_buffer_key(key) or key.endswith(".attn.k_bias"):
            mapped.drop("recomputed buffers", key)
        elif key.startswith("head."):
            mapped.drop("classification head", key)
        elif key in ("norm.weight", "norm.bias"):
            mapped.state_dict[f"norm{last}.{key[5:]}"] = value
        else:
            mapped.state_dict[_shift_downsample(key, -1)] = value
    mapped.read_tables({int(m.group(1)): v for k, v in state.items() if (m := _TABLE.match(k))})
    return mapped


def from_native(state: StateDict) -> Tuple[StateDict, List[str]]:
    """Native -> timm ``SwinTransformerV2`` keys (no classifier), with notes on what changed.

    The last stage's output norm becomes timm's final ``norm`` (a default LayerNorm, weight 1 and
    bias 0, when the state dict has none); other output norms have no timm counterpart and are
    left out.
    """
    last = num_stages(state) - 1
    out: StateDict = {}
    notes: List[str] = []
    left_out = set()
    for key, value in state.items():
        if key.startswith(f"norm{last}."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif _OUT_NORM.match(key):
            left_out.add(key.split(".", 1)[0])
        else:
            out[_shift_downsample(key, 1)] = value
    if left_out:
        notes.append(f"left out output norm(s) {sorted(left_out)} (timm has one final norm, after the last stage)")
    if "norm.weight" not in out:
        dim = state["patch_embed.proj.weight"].shape[0] * 2 ** last
        out["norm.weight"] = torch.ones(dim)
        out["norm.bias"] = torch.zeros(dim)
        notes.append(f"no norm{last} in the state dict: timm's final norm is a default LayerNorm")
    return out, notes
