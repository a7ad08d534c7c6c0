"""mmpretrain ``SwinTransformerV2`` checkpoints -> native.

mmpretrain saves ``{'state_dict': {'backbone.*', 'head.*'}, ...}`` with ``stages`` for layers,
``attn.w_msa.`` around the attention, an mmcv ``FFN`` (``ffn.layers.0.0`` = fc1, ``ffn.layers.1`` =
fc2), ``patch_embed.projection``, and patch merging at the *start* of stages 1-3. Its merge gathers
each 2x2 neighbourhood with ``nn.Unfold`` (channel-major, then row offset, then column offset)
instead of the official ``x0..x3`` concatenation (column offset major, row offset, then channel),
so the ``reduction`` weight's input columns are permuted back; the merge norm acts on the outputs
and is left alone. Output norms ``norm{i}`` have the native names already.
"""
from __future__ import annotations

import re
from typing import Collection

from .common import Mapped, Source
from .keys import CLASSIFICATION_HEAD, StateDict, Tensor, is_buffer_key, shift_downsample

NAME = "mmpretrain"
DESCRIPTION = ("mmpretrain SwinTransformerV2 ({'state_dict': ...}, 'backbone.stages', "
               "'attn.w_msa', 'ffn.layers', nn.Unfold patch merging)")

#: mmpretrain's ``LinearClsHead`` keys -> the native classifier keys.
_LINEAR_CLS_HEAD = {"head.fc.weight": "head.weight", "head.fc.bias": "head.bias"}
#: Why any other ``head`` is dropped: only a linear head is the classifier of the peers.
_OTHER_HEAD = "classification head (not a LinearClsHead)"
_STAGE_PREFIX = re.compile(r"^stages\.(\d+)\.")
_RENAMES = (
    ("attn.w_msa.", "attn."),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
)


def detect(keys: Collection[str]) -> bool:
    """``stages.N.blocks.M.attn.w_msa.`` keys, optionally under ``backbone.``."""
    return any(re.match(r"^(backbone\.)?stages\.\d+\.blocks\.\d+\.attn\.w_msa\.", k) for k in keys)


def unfold_to_official(weight: Tensor) -> Tensor:
    """Reorder the ``(2C, 4C)`` merge ``reduction`` weight from ``nn.Unfold`` input order
    (index ``c*4 + dh*2 + dw``) to the official order (index ``(dw*2 + dh)*C + c``)."""
    out_dim, in_dim = weight.shape
    blocks = weight.reshape(out_dim, in_dim // 4, 4)[:, :, [0, 2, 1, 3]]
    return blocks.permute(0, 2, 1).reshape(out_dim, in_dim)


def _rename(key: str) -> str:
    """The native name of an mmpretrain backbone key (patch merging moved to the previous stage)."""
    m = _STAGE_PREFIX.match(key)
    if not m:
        return key.replace("patch_embed.projection.", "patch_embed.proj.")
    rest = key[m.end():]
    if not rest.startswith("downsample."):
        for old, new in _RENAMES:
            rest = rest.replace(old, new)
    return shift_downsample(f"layers.{m.group(1)}.{rest}", -1)


def to_native(source: Source) -> Mapped:
    """mmpretrain -> native: take ``backbone.*``, keep a ``LinearClsHead`` (``head.fc``) as the
    classification head (another kind of ``head`` is dropped), rename, move patch merging to the
    end of the previous stage with its ``reduction`` weight reordered, drop the coordinate
    buffers."""
    mapped = Mapped()
    state = source.state_dict
    if any(k.startswith("backbone.") for k in state):
        head = {k: v for k, v in state.items() if k.startswith("head.")}
        if set(head) == set(_LINEAR_CLS_HEAD):
            for key, value in head.items():
                mapped.keep_head(CLASSIFICATION_HEAD, key, _LINEAR_CLS_HEAD[key], value)
            state = {k: v for k, v in state.items() if k not in head}
        state, others = mapped.take_prefix(state, "backbone.", (("head.", _OTHER_HEAD),))
        mapped.state_dict.update(others)  # left for validation to report
    buffers: StateDict = {}
    for key, value in state.items():
        new = _rename(key)
        if is_buffer_key(key):
            mapped.drop("recomputed buffers", key)
            buffers[new] = value
            continue
        if new.endswith(".downsample.reduction.weight"):
            value = unfold_to_official(value)
        mapped.state_dict[new] = value
    mapped.read_tables(buffers)
    return mapped
