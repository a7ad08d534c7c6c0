"""The official Microsoft SwinV2 release (``swinv2_*_patch4_window*_*.pth``, ``{'model': ...}``) and its
SimMIM pre-training files (``encoder.`` prefix, ``rpe_mlp`` for ``cpb_mlp``, ``encoder.mask_token``,
MIM ``decoder.0.*``; the token and the decoder are kept as their heads, see :mod:`.keys`).

Their key names are the native ones plus the persistent buffers (``relative_coords_table``,
``relative_position_index``, ``attn_mask``), the final ``norm`` (the last stage's output norm here)
and the classifier ``head`` (kept as the classification head). The coordinate tables tell each stage's training and pretrained window.
"""
from __future__ import annotations

from typing import Collection

from .common import Mapped, SmallMapSource, Source
from .keys import (CLASSIFICATION_HEAD, MASK_TOKEN, MASK_TOKEN_KEY, MIM_HEAD, StateDict,
                   final_norm_to_native, is_buffer_key, num_stages, split_prefix, strip_prefix)
from .native import OFFICIAL_ONLY, has_official_encoder

NAME = "official"
DESCRIPTION = ("official Microsoft SwinV2 / Swin (V1) release ({'model': ...}, final 'norm', 'head', "
               "buffers)")
SIMMIM_NAME = "simmim"
SIMMIM_DESCRIPTION = ("official SimMIM pre-training of SwinV2 or Swin V1 ('encoder.' prefix, "
                      "'rpe_mlp', MIM decoder)")


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
    return official_to_native(source.state_dict,
                              Mapped(small_map=SmallMapSource("official", "the official Microsoft code")))


def simmim_to_native(source: Source) -> Mapped:
    """SimMIM pre-training -> native: ``encoder.*`` as the official release (``rpe_mlp`` renamed
    ``cpb_mlp``), ``encoder.mask_token`` kept as the mask token and ``decoder.*`` as the
    masked-image-modeling head (native keys unchanged: ``decoder.0.weight/bias``); other keys are
    left for validation to report."""
    mapped = Mapped(small_map=SmallMapSource("official", "the official SimMIM code"))
    encoder, rest = split_prefix(source.state_dict, "encoder.")
    decoder, others = split_prefix(rest, "decoder.")
    for key, value in decoder.items():
        mapped.keep_head(MIM_HEAD, "decoder." + key, "decoder." + key, value)
    mapped.state_dict.update(others)
    if MASK_TOKEN_KEY in encoder:
        mapped.keep_head(MASK_TOKEN, "encoder." + MASK_TOKEN_KEY, MASK_TOKEN_KEY,
                         encoder.pop(MASK_TOKEN_KEY))
    official: StateDict = {k.replace(".rpe_mlp.", ".cpb_mlp."): v for k, v in encoder.items()}
    return official_to_native(official, mapped)
