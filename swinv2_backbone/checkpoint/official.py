"""The official Microsoft SwinV2 release (``swinv2_*_patch4_window*_*.pth``, ``{'model': ...}``) and its
SimMIM pre-training files (``encoder.`` prefix, ``rpe_mlp`` for ``cpb_mlp``, MIM decoder).

Their key names are the native ones plus the persistent buffers (``relative_coords_table``,
``relative_position_index``, ``attn_mask``), the final ``norm`` (the last stage's output norm here)
and the classifier ``head`` (kept as the classification head). The coordinate tables tell each stage's training and pretrained window.
"""
from __future__ import annotations

from typing import Collection

from .common import Mapped, Source
from .keys import (CLASSIFICATION_HEAD, StateDict, final_norm_to_native, is_buffer_key, num_stages,
                   strip_prefix)
from .native import OFFICIAL_ONLY, has_official_encoder

NAME = "official"
DESCRIPTION = "official Microsoft SwinV2 release ({'model': ...}, final 'norm', 'head', buffers)"
SIMMIM_NAME = "simmim"
SIMMIM_DESCRIPTION = "official SimMIM pre-training ('encoder.' prefix, 'rpe_mlp', MIM decoder)"

_MIM_HEAD = "masked-image-modeling head"


def detect(keys: Collection[str]) -> bool:
    """Bare official key names with at least one official-only key (final norm, head, buffers)."""
    return has_official_encoder(keys) and any(map(OFFICIAL_ONLY.search, keys))


def detect_simmim(keys: Collection[str]) -> bool:
    """Official names under ``encoder.`` (SimMIM), with ``rpe_mlp`` or ``cpb_mlp``."""
    return has_official_encoder([k.replace(".rpe_mlp.", ".cpb_mlp.") for k in strip_prefix(keys, "encoder.")])


def official_to_native(state: StateDict, mapped: Mapped) -> Mapped:
    """Map bare official keys into ``mapped``: drop buffers, keep ``head`` as the classification
    head, final ``norm`` -> ``norm{last}``, everything else unchanged (unknown keys are left for
    validation to report)."""
    last = num_stages(state) - 1
    for key, value in state.items():
        if is_buffer_key(key):
            mapped.drop("recomputed buffers", key)
        elif key.startswith("head."):
            mapped.keep_head(CLASSIFICATION_HEAD, key, key, value)
        else:
            mapped.state_dict[final_norm_to_native(key, last) or key] = value
    mapped.read_tables(state)
    return mapped


def to_native(source: Source) -> Mapped:
    """Official release -> native (see :func:`official_to_native`)."""
    return official_to_native(source.state_dict, Mapped())


def simmim_to_native(source: Source) -> Mapped:
    """SimMIM pre-training -> native: take ``encoder.*``, rename ``rpe_mlp`` to ``cpb_mlp``, drop
    the mask token and the ``decoder`` (the MIM head)."""
    mapped = Mapped()
    encoder, others = mapped.take_prefix(source.state_dict, "encoder.", (("decoder.", _MIM_HEAD),))
    mapped.state_dict.update(others)  # left for validation to report
    if "mask_token" in encoder:
        mapped.drop(_MIM_HEAD, "encoder.mask_token")
    official: StateDict = {k.replace(".rpe_mlp.", ".cpb_mlp."): v for k, v in encoder.items()
                           if k != "mask_token"}
    return official_to_native(official, mapped)
