"""The native key vocabulary, defined once: the key patterns every layout is mapped to, and the rules
on them that several format modules share. A format module keeps only its own renames.

Native keys are the official Microsoft names without buffers:

* ``patch_embed.{proj,norm}.*`` and, optionally, ``absolute_pos_embed``;
* ``layers.{i}.blocks.{j}.*``: block ``j`` of stage ``i`` (:data:`STAGE`, :data:`BLOCK`);
* ``layers.{i}.downsample.*``: the patch merging at the *end* of stage ``i`` (:data:`DOWNSAMPLE`);
  timm and mmpretrain put it at the start of stage ``i + 1`` (:func:`shift_downsample`);
* ``norm{i}.weight`` / ``norm{i}.bias``: the output LayerNorm of stage ``i`` (:data:`OUT_NORM`).
  Classification layouts (official, timm, torchvision, Hugging Face) have one final norm after the
  last stage instead: it is the last stage's output norm (:func:`final_norm_to_native`, and
  :func:`final_norm_for_export` back).

Heads are kept apart from the encoder (:attr:`~swinv2_backbone.checkpoint.common.Mapped.heads`),
under a head name and their own native keys: the classifier is :data:`CLASSIFICATION_HEAD` with
``head.weight`` / ``head.bias`` (:data:`CLASSIFIER_KEYS`), the official and torchvision names. Masked
image modeling (SimMIM) has two parts, kept as two heads because a backbone built with
``use_mask_token=True`` takes the token alone: :data:`MASK_TOKEN` with the native key ``mask_token``
(:data:`MASK_TOKEN_KEY`, the backbone's parameter) and :data:`MIM_HEAD`, the decoder, with
``decoder.0.weight`` / ``decoder.0.bias`` (:data:`MIM_DECODER_KEYS`, the names of HF, the official
code and :class:`~swinv2_backbone.models.SimMIM`).

Some layouts also store buffers the model recomputes (:data:`RECOMPUTED_BUFFERS`); the first block's
``relative_coords_table`` of each stage tells the windows it was trained with (:func:`coords_tables`).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Pattern, Sequence, Set, Tuple, TypeVar, Union

import torch

from ..models.args import per_stage as model_per_stage

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]
V = TypeVar("V")

#: A key of stage ``i`` (group 1): its blocks and its patch merging.
STAGE = re.compile(r"^layers\.(\d+)\.")
#: A key of block ``j`` (group 2) of stage ``i`` (group 1).
BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
#: A key of the patch merging at the end of stage ``i`` (group 1).
DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
#: The module prefix of a block or a patch merging (group 1), e.g. ``layers.2.blocks.5.``.
BLOCK_OR_DOWNSAMPLE = re.compile(r"^(layers\.\d+\.(?:blocks\.\d+|downsample)\.)")
#: A parameter of the output LayerNorm of stage ``i`` (group 1): ``weight`` or ``bias`` (group 2).
OUT_NORM = re.compile(r"^norm(\d+)\.(weight|bias)$")
#: The relative-coordinate table of the first block of stage ``i`` (group 1).
COORDS_TABLE = re.compile(r"^layers\.(\d+)\.blocks\.0\.attn\.relative_coords_table$")
#: Key ending of a Swin V1 block's relative-position bias table.
BIAS_TABLE = ".attn.relative_position_bias_table"
#: The final norm of classification layouts (the last stage's output norm).
FINAL_NORM = ("norm.weight", "norm.bias")
#: Name of the classification head among a checkpoint's heads (also its reason in ``dropped``).
CLASSIFICATION_HEAD = "classification head"
#: Native keys of the classification head: one Linear from the last stage's channels to the classes.
CLASSIFIER_KEYS = ("head.weight", "head.bias")
#: Name of the SimMIM decoder among a checkpoint's heads (also its reason in ``dropped``).
MIM_HEAD = "masked-image-modeling head"
#: Native keys of the SimMIM decoder: the 1x1 convolution before the pixel shuffle.
MIM_DECODER_KEYS = ("decoder.0.weight", "decoder.0.bias")
#: Name of the mask token among a checkpoint's heads (also its reason in ``dropped``).
MASK_TOKEN = "mask token"
#: Native key of the mask token, ``(1, 1, embed_dims)``: the backbone's ``mask_token`` parameter.
MASK_TOKEN_KEY = "mask_token"
#: Names of the recomputed buffers that some layouts keep in their state dicts.
RECOMPUTED_BUFFERS = ("relative_coords_table", "relative_position_index", "attn_mask")


def stage_of(key: str) -> Optional[int]:
    """The stage index of a ``layers.{i}.`` key, ``None`` for any other key."""
    m = STAGE.match(key)
    return int(m.group(1)) if m else None


def num_stages(keys: Iterable[str], pattern: Union[str, Pattern[str]] = STAGE) -> int:
    """Number of stages, ``1 + max`` stage index (group 1 of ``pattern``, by default native
    ``layers.{i}.``) among ``keys`` (0 if none)."""
    regex = re.compile(pattern)
    indices = [int(m.group(1)) for m in map(regex.match, keys) if m]
    return max(indices) + 1 if indices else 0


def is_buffer_key(key: str) -> bool:
    """Whether ``key`` names one of the recomputed buffers (:data:`RECOMPUTED_BUFFERS`)."""
    return key.rsplit(".", 1)[-1] in RECOMPUTED_BUFFERS


def coords_tables(state: Mapping[str, Tensor]) -> Dict[int, Tensor]:
    """Stage index -> the first block's ``relative_coords_table``, from native-named keys."""
    return {int(m.group(1)): value for key, value in state.items() if (m := COORDS_TABLE.match(key))}


def split_prefix(state: Mapping[str, V], prefix: str) -> Tuple[Dict[str, V], Dict[str, V]]:
    """Split ``state`` into the entries under ``prefix`` (prefix removed) and the others."""
    inner: Dict[str, V] = {}
    rest: Dict[str, V] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            inner[key[len(prefix):]] = value
        else:
            rest[key] = value
    return inner, rest


def strip_prefix(keys: Iterable[str], prefix: str) -> List[str]:
    """The ``keys`` under ``prefix``, with the prefix removed (the others are left out)."""
    return [k[len(prefix):] for k in keys if k.startswith(prefix)]


def shift_downsample(key: str, step: int) -> str:
    """``key`` with its patch merging moved by ``step`` stages (other keys unchanged): -1 maps the
    merge at the start of stage ``i + 1`` (timm, mmpretrain) to the native end of stage ``i``."""
    return DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + step}.downsample.", key)


def linear_head(state: Mapping[str, V]) -> Optional[Dict[str, V]]:
    """The native classifier of a whole model's non-encoder entries ``state``: when they are
    exactly one linear head's weight and bias (``head.fc.*`` or ``head.*``), those under
    :data:`CLASSIFIER_KEYS`; otherwise ``None`` (another kind of head, or other modules)."""
    if set(state) == set(CLASSIFIER_KEYS):
        return dict(state)
    if set(state) == {"head.fc.weight", "head.fc.bias"}:
        return {"head." + k[len("head.fc."):]: v for k, v in state.items()}
    return None


def mim_decoder(state: Mapping[str, V]) -> Optional[Dict[str, V]]:
    """The SimMIM decoder of a whole model's non-encoder entries ``state`` when they are exactly
    :data:`MIM_DECODER_KEYS`, else ``None`` (another kind of head, or other modules)."""
    return dict(state) if set(state) == set(MIM_DECODER_KEYS) else None


def final_norm_to_native(key: str, last: int) -> Optional[str]:
    """The native key of a classification layout's final norm parameter (``norm.weight`` ->
    ``norm{last}.weight``), ``None`` for any other key."""
    return f"norm{last}.{key[len('norm.'):]}" if key in FINAL_NORM else None


def final_norm_for_export(
    state: StateDict, final: str, peer: str, default_name: str
) -> Tuple[StateDict, StateDict, List[str]]:
    """Split the output norms off a native state dict for a peer that has one final norm.

    The last stage's ``norm{last}`` becomes the peer's ``{final}.weight`` / ``{final}.bias``; when
    the state dict has none, a default LayerNorm (weight 1, bias 0) is filled in. The other stages'
    output norms have no counterpart and are left out.

    Args:
        state: Native (validated) tensors.
        final: The peer's name of its final norm (``'layernorm'``, ``'norm'``).
        peer: The peer model, for the notes (``'Swinv2Model'``, ``'timm'``).
        default_name: How the notes call the filled-in norm (``"timm's final norm"``).

    Returns:
        ``(rest, final_norm, notes)``: the entries of ``state`` that are not output norms, the
        peer's final norm tensors and what was left out or filled in.
    """
    last = num_stages(state) - 1
    rest: StateDict = {}
    final_norm: StateDict = {}
    left_out: Set[str] = set()
    for key, value in state.items():
        m = OUT_NORM.match(key)
        if m is None:
            rest[key] = value
        elif int(m.group(1)) == last:
            final_norm[f"{final}.{m.group(2)}"] = value
        else:
            left_out.add(f"norm{m.group(1)}")
    notes: List[str] = []
    if left_out:
        notes.append(f"left out output norm(s) {sorted(left_out)} ({peer} has one final {final}, "
                     "after the last stage)")
    if f"{final}.weight" not in final_norm:
        dim = state["patch_embed.proj.weight"].shape[0] * 2 ** last
        final_norm[f"{final}.weight"] = torch.ones(dim)
        final_norm[f"{final}.bias"] = torch.zeros(dim)
        notes.append(f"no norm{last} in the state dict: {default_name} is a default LayerNorm")
    return rest, final_norm, notes


def per_stage(values: Union[int, Sequence[int]], stages: int, name: str) -> Tuple[int, ...]:
    """One non-negative int per stage for windows given by hand: the backbone's rule
    (:func:`swinv2_backbone.models.args.per_stage`: one int for all stages, or one per stage), where
    a one-element sequence also means all stages (what the command line's ``nargs='+'`` gives).

    Raises:
        TypeError: Neither an int nor a sequence of ints.
        ValueError: Another number of values than 1 or ``stages``, or a negative one.
    """
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and len(values) == 1:
        values = values[0]
    found = model_per_stage(values, stages, name)
    if any(v < 0 for v in found):
        raise ValueError(f"{name} needs one non-negative int or {stages} (one per stage), got {found}")
    return found
