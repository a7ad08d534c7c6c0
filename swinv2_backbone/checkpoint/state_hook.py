"""``load_state_dict`` with another implementation's backbone weights: the adapter
:mod:`swinv2_backbone.checkpoint` registers in
:data:`~swinv2_backbone.models.weights.STATE_DICT_ADAPTERS`.

mmengine loads a whole model's checkpoint (``tools/test.py CONFIG CHECKPOINT``, ``load_from``)
with ``load_state_dict``, which knows nothing of formats: a checkpoint of mmdet's own Swin
Mask2Former names its backbone ``backbone.stages.0.blocks.0.attn.w_msa.qkv.weight``, which ours
calls ``backbone.layers.0.blocks.0.attn.qkv.weight``, so without this hook mmengine would report the
keys as unexpected and leave the backbone random (a warning in a long log). With it, the part of the
state dict under the backbone's prefix goes through :func:`~.load.load_pretrained`, the same path as
``init_cfg=dict(type='Pretrained')`` (format detection, renames, fitting policy, one summary line,
the warnings about windows and the small-map rule), and the keys are replaced by the backbone's own.
Weights already in this project's layout are left to ``load_state_dict`` as they are (a resumed
training run's, with its own strictness).

``load_state_dict`` shows each module only the keys under its own prefix, so the backbone's
siblings, which tell a detector's or segmentor's Swin V1 from a bare mmpretrain backbone's (the same
keys, other small-map rules: :func:`.mmpretrain.small_map_of`), are out of sight. A backbone inside
a model that is given mmdet's Swin V1 layout takes it as a whole mmdet/mmseg model's (what mmengine
loads into a detector or segmentor); loaded on its own, the writer stays unknown, as in
:func:`~.convert.convert_checkpoint`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict

import torch
from torch import nn

from . import mmpretrain
from .common import CheckpointError
from .convert import convert_checkpoint
from .load import load_pretrained
from .native import NAME as NATIVE
from .registry import detect_format


def adapt_foreign_state(model: nn.Module, state: Dict[str, torch.Tensor], prefix: str) -> None:
    """Load the weights under ``prefix`` in ``state`` into the backbone ``model`` through
    :func:`~.load.load_pretrained` when they are in another layout, and replace them in ``state``
    by the backbone's own state dict (so that ``load_state_dict`` then finds nothing missing or
    unexpected). A ``Pretrained`` ``init_cfg`` of the backbone gives its
    ``pretrained_window_sizes`` / ``small_map`` choices (``'checkpoint'``) to that load.

    Nothing happens when there is nothing under ``prefix``, when every key there is one of the
    model's, or when the keys are in no layout the adapters know or in this project's own.

    Raises:
        CheckpointError: Weights in a foreign layout that do not fit the model (the message lists
            the keys), or of the other Swin version.
    """
    mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not mine or set(mine) <= set(model.state_dict()):
        return
    try:
        layout = detect_format(list(mine), "<state dict>").name
    except CheckpointError:
        return  # load_state_dict reports the keys as usual
    if layout == NATIVE:
        return
    converted = convert_checkpoint(mine)
    source = f"load_state_dict ({prefix.rstrip('.') or 'the backbone'})"
    small_map = converted.small_map
    if prefix and layout == mmpretrain.NAME and converted.version == 1 and small_map is None:
        small_map = mmpretrain.small_map_of(v1=True, classifier=False, others=True)
    converted = dataclasses.replace(converted, source=source, small_map=small_map)
    cfg = model.init_cfg if isinstance(model.init_cfg, dict) else {}
    options = {k: cfg[k] for k in ("pretrained_window_sizes", "small_map")
               if cfg.get("type") == "Pretrained" and k in cfg}
    load_pretrained(model, converted, **options)
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]
    state.update({prefix + k: v for k, v in model.state_dict().items()})
