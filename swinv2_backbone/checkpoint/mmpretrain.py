"""OpenMMLab Swin checkpoints -> native: mmpretrain ``SwinTransformerV2`` and ``SwinTransformer`` (V1),
and the Swin V1 backbone of mmdet/mmseg (``mmdet.models.backbones.SwinTransformer``, the same keys).

mmpretrain saves ``{'state_dict': {'backbone.*', 'head.*'}, ...}`` with ``stages`` for layers,
``attn.w_msa.`` around the attention, an mmcv ``FFN`` (``ffn.layers.0.0`` = fc1, ``ffn.layers.1`` =
fc2), ``patch_embed.projection`` and output norms ``norm{i}`` (the native names). SwinV2 puts patch
merging at the *start* of stages 1-3; V1 (mmpretrain, mmdet, mmseg) at the *end* of stages 0-2, as
native does. The merge gathers each 2x2 neighbourhood with ``nn.Unfold`` (channel-major, then row
offset, then column offset) instead of the official ``x0..x3`` concatenation (column offset major,
row offset, then channel), so every tensor indexed by the ``4C`` merge input is permuted back: the
``reduction`` weight's input columns, and in V1, whose merge LayerNorm acts on that input, the norm's
weight and bias too (SwinV2's merge norm acts on the ``2C`` output and is left alone).

A whole mmdet/mmseg model (``backbone.`` next to ``neck.``, ``rpn_head.``, ``decode_head.``, ...) keeps
its backbone; an mmpretrain ``ImageClassifier``'s ``LinearClsHead`` is kept as the classification
head.
"""
from __future__ import annotations

import re
from typing import Collection, Optional

from .common import Mapped, SmallMapSource, Source
from .keys import CLASSIFICATION_HEAD, StateDict, Tensor, is_buffer_key, shift_downsample

NAME = "mmpretrain"
DESCRIPTION = ("mmpretrain SwinTransformerV2 / SwinTransformer and mmdet/mmseg Swin ({'state_dict': ...}, "
               "'backbone.stages', 'attn.w_msa', 'ffn.layers', nn.Unfold patch merging)")

#: mmpretrain's ``LinearClsHead`` keys -> the native classifier keys.
_LINEAR_CLS_HEAD = {"head.fc.weight": "head.weight", "head.fc.bias": "head.bias"}
#: Why any other ``head`` is dropped: only a linear head is the classifier of the peers.
_OTHER_HEAD = "classification head (not a LinearClsHead)"
#: Why the other modules of a detector or segmentor are dropped (as for native whole models).
_OTHER_MODULES = "other modules of a whole model"
_STAGE_PREFIX = re.compile(r"^stages\.(\d+)\.")
_RENAMES = (
    ("attn.w_msa.", "attn."),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
)


def detect(keys: Collection[str]) -> bool:
    """``stages.N.blocks.M.attn.w_msa.`` keys, optionally under ``backbone.``."""
    return any(re.match(r"^(backbone\.)?stages\.\d+\.blocks\.\d+\.attn\.w_msa\.", k) for k in keys)


def unfold_to_official(value: Tensor) -> Tensor:
    """Reorder the last axis of a tensor indexed by the ``4C`` merge input (the ``(2C, 4C)``
    ``reduction`` weight, a V1 merge norm's ``(4C,)`` weight or bias) from ``nn.Unfold`` order
    (index ``c*4 + dh*2 + dw``) to the official order (index ``(dw*2 + dh)*C + c``)."""
    *lead, in_dim = value.shape
    blocks = value.reshape(*lead, in_dim // 4, 4)[..., [0, 2, 1, 3]]
    return blocks.transpose(-1, -2).reshape(*lead, in_dim)


def _rename(key: str, merge_at_start: bool) -> str:
    """The native name of an OpenMMLab backbone key (patch merging at the start of a stage moved
    to the end of the previous one)."""
    m = _STAGE_PREFIX.match(key)
    if not m:
        return key.replace("patch_embed.projection.", "patch_embed.proj.")
    rest = key[m.end():]
    if not rest.startswith("downsample."):
        for old, new in _RENAMES:
            rest = rest.replace(old, new)
    native = f"layers.{m.group(1)}.{rest}"
    return shift_downsample(native, -1) if merge_at_start else native


def to_native(source: Source) -> Mapped:
    """OpenMMLab -> native: take ``backbone.*``, keep a ``LinearClsHead`` (``head.fc``) as the
    classification head (another kind of ``head`` is dropped, and so are a detector's or
    segmentor's other modules), rename, move SwinV2's patch merging to the end of the previous
    stage, reorder the merge input (:func:`unfold_to_official`), drop the buffers."""
    mapped = Mapped()
    state = source.state_dict
    if any(k.startswith("backbone.") for k in state):
        head = {k: v for k, v in state.items() if k.startswith("head.")}
        if set(head) == set(_LINEAR_CLS_HEAD):
            for key, value in head.items():
                mapped.keep_head(CLASSIFICATION_HEAD, key, _LINEAR_CLS_HEAD[key], value)
            state = {k: v for k, v in state.items() if k not in head}
        state, others = mapped.take_prefix(state, "backbone.", (("head.", _OTHER_HEAD),))
        for key in others:
            mapped.drop(_OTHER_MODULES, key)
        if others:
            modules = sorted({k.split(".", 1)[0] for k in others})
            mapped.notes.append(f"whole-model checkpoint: took 'backbone.*', left out {', '.join(modules)}")
    v1 = any(k.endswith(".relative_position_bias_table") for k in state)
    buffers: StateDict = {}
    for key, value in state.items():
        new = _rename(key, merge_at_start=not v1)
        if is_buffer_key(key):
            mapped.drop("recomputed buffers", key)
            buffers[new] = value
            continue
        if new.endswith(".downsample.reduction.weight") or v1 and ".downsample.norm." in new:
            value = unfold_to_official(value)
        mapped.state_dict[new] = value
    mapped.read_tables(buffers)
    mapped.small_map = small_map_of(v1, classifier=CLASSIFICATION_HEAD in mapped.heads,
                                  others=_OTHER_MODULES in mapped.dropped)
    return mapped


def small_map_of(v1: bool, classifier: bool, others: bool) -> Optional[SmallMapSource]:
    """The rule of the OpenMMLab model that wrote the weights: mmpretrain's SwinV2 pads; its Swin V1
    shrinks the window to a small map (``pad_small_map=False``, the default: ``'official'``); the
    Swin V1 of mmdet/mmseg, told by a whole detector's or segmentor's other modules, shifts even a
    map of one window (``'mmdet'``). A bare V1 backbone state dict does not tell mmpretrain's from
    mmdet's (the same keys)."""
    if not v1:
        return SmallMapSource("pad", "mmpretrain SwinTransformerV2")
    if others:
        return SmallMapSource("mmdet", "an mmdet/mmseg detector or segmentor (SwinTransformer)",
                              finished=True)
    if classifier:
        return SmallMapSource("official", "an mmpretrain ImageClassifier (SwinTransformer, "
                              "pad_small_map=False)")
    return None
