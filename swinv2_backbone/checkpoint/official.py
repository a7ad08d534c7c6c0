"""The official Microsoft SwinV2 release (``swinv2_*_patch4_window*_*.pth``, ``{'model': ...}``) and its
SimMIM pre-training files (``encoder.`` prefix, ``rpe_mlp`` for ``cpb_mlp``, MIM decoder).

Their key names are the native ones plus the persistent buffers (``relative_coords_table``,
``relative_position_index``, ``attn_mask``), the final ``norm`` (the last stage's output norm here)
and the classifier ``head``. The coordinate tables tell each stage's training and pretrained window.
"""
from __future__ import annotations

import re
from typing import Collection, Dict

from .common import Mapped, Source, StateDict, Tensor, is_buffer_key, num_stages
from .native import OFFICIAL_ONLY, has_official_body

NAME = "official"
DESCRIPTION = "official Microsoft SwinV2 release ({'model': ...}, final 'norm', 'head', buffers)"
SIMMIM_NAME = "simmim"
SIMMIM_DESCRIPTION = "official SimMIM pre-training ('encoder.' prefix, 'rpe_mlp', MIM decoder)"

_TABLE = re.compile(r"^layers\.(\d+)\.blocks\.0\.attn\.relative_coords_table$")


def detect(keys: Collection[str]) -> bool:
    """Bare official key names with at least one official-only key (final norm, head, buffers)."""
    return has_official_body(keys) and any(map(OFFICIAL_ONLY.search, keys))


def detect_simmim(keys: Collection[str]) -> bool:
    """Official names under ``encoder.`` (SimMIM), with ``rpe_mlp`` or ``cpb_mlp``."""
    inner = [k[len("encoder."):].replace(".rpe_mlp.", ".cpb_mlp.") for k in keys
             if k.startswith("encoder.")]
    return has_official_body(inner)


def tables(state: StateDict) -> Dict[int, Tensor]:
    """Stage index -> the first block's ``relative_coords_table`` (official key names)."""
    return {int(m.group(1)): state[key] for key in state if (m := _TABLE.match(key))}


def official_to_native(state: StateDict, mapped: Mapped) -> Mapped:
    """Map bare official keys into ``mapped``: drop buffers and ``head``, final ``norm`` ->
    ``norm{last}``, everything else unchanged (unknown keys are left for validation to report)."""
    last = num_stages(state) - 1
    for key, value in state.items():
        if is_buffer_key(key):
            mapped.drop("recomputed buffers", key)
        elif key.startswith("head."):
            mapped.drop("classification head", key)
        elif key in ("norm.weight", "norm.bias"):
            mapped.state_dict[f"norm{last}.{key[5:]}"] = value
        else:
            mapped.state_dict[key] = value
    mapped.read_tables(tables(state))
    return mapped


def to_native(source: Source) -> Mapped:
    """Official release -> native (see :func:`official_to_native`)."""
    return official_to_native(source.state_dict, Mapped())


def simmim_to_native(source: Source) -> Mapped:
    """SimMIM pre-training -> native: take ``encoder.*``, rename ``rpe_mlp`` to ``cpb_mlp``, drop
    the mask token and the ``decoder`` (the MIM head)."""
    mapped = Mapped()
    encoder: StateDict = {}
    for key, value in source.state_dict.items():
        if not key.startswith("encoder."):
            if key.startswith("decoder."):
                mapped.drop("masked-image-modeling head", key)
            else:
                mapped.state_dict[key] = value  # left for validation to report
            continue
        key = key[len("encoder."):]
        if key == "mask_token":
            mapped.drop("masked-image-modeling head", "encoder." + key)
        else:
            encoder[key.replace(".rpe_mlp.", ".cpb_mlp.")] = value
    return official_to_native(encoder, mapped)
