"""The native layout (this project's ``Swinv2Backbone`` and Swin V1 ``SwinBackbone`` state dicts) and
its validation; the version is told by the keys (:func:`version_of`).

Native keys are the official Microsoft names without buffers: ``patch_embed.{proj,norm}.*``, optional
``absolute_pos_embed``, ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*`` (patch merging at
the end of stage i, absent after the last stage) and one output LayerNorm ``norm{i}`` per returned
stage (the patterns are in :mod:`.keys`). Every other layout is mapped to this one and then checked
here with :func:`infer_structure`. Swin V1 blocks hold ``attn.qkv.bias`` and
``attn.relative_position_bias_table`` instead of SwinV2's ``q_bias``/``v_bias``, ``logit_scale`` and
``cpb_mlp``, and their patch merging normalises ``4C`` channels.

As a source format, ``native`` also covers whole mmdet/mmseg model checkpoints: their ``backbone.``
part is taken and the other modules (neck, heads) are dropped. A whole model whose only other module
is a linear classifier (``head.*``: :class:`~swinv2_backbone.models.SwinClassifier`; ``head.fc.*``:
an mmpretrain ``ImageClassifier`` around ``Swinv2Backbone``) keeps it as the classification head; one
whose only other module is the SimMIM ``decoder.0.*`` (:class:`~swinv2_backbone.models.SimMIM`, and
the mmengine training checkpoints of ``SwinSimMIM``) keeps it as the masked-image-modeling head. A
backbone's ``mask_token`` (``use_mask_token=True``) is kept as the mask token head, not an encoder
key (see :mod:`.keys`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

from ..models import SMALL_MAP_RULES

from .common import CheckpointError, Mapped, SmallMapSource, Source, StageWindow, format_keys
from .keys import BLOCK, CLASSIFICATION_HEAD, FINAL_NORM, MASK_TOKEN, MASK_TOKEN_KEY, MIM_HEAD, \
    OUT_NORM, RECOMPUTED_BUFFERS, StateDict, linear_head, mim_decoder, split_prefix, stage_of, \
    strip_prefix

NAME = "native"
DESCRIPTION = ("this project's Swinv2Backbone checkpoints, and whole mmdet/mmseg model checkpoints "
               "(the 'backbone.' part)")

Shape = Tuple[int, ...]

_QKV_WEIGHT = re.compile(r"^layers\.\d+\.blocks\.\d+\.attn\.qkv\.weight$")
#: Keys only the official layout has: its final norm, classifier and buffers.
OFFICIAL_ONLY = re.compile(
    rf"^({'|'.join(map(re.escape, FINAL_NORM + ('head.weight', 'head.bias')))})$"
    rf"|\.({'|'.join(RECOMPUTED_BUFFERS)})$")


def _block_shapes(dim: int, heads: int, hidden: int, cpb: int, qkv_bias: bool, version: int,
                  window: int) -> Dict[str, Shape]:
    shapes: Dict[str, Shape] = {
        "norm1.weight": (dim,), "norm1.bias": (dim,),
        "norm2.weight": (dim,), "norm2.bias": (dim,),
        "attn.qkv.weight": (3 * dim, dim),
        "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
        "mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,),
    }
    if version == 1:
        shapes["attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, heads)
        if qkv_bias:
            shapes["attn.qkv.bias"] = (3 * dim,)
        return shapes
    shapes.update({"attn.logit_scale": (heads, 1, 1),
                   "attn.cpb_mlp.0.weight": (cpb, 2), "attn.cpb_mlp.0.bias": (cpb,),
                   "attn.cpb_mlp.2.weight": (heads, cpb)})
    if qkv_bias:
        shapes.update({"attn.q_bias": (dim,), "attn.v_bias": (dim,)})
    return shapes


def _merging_shapes(stage: int, dim: int, version: int) -> Dict[str, Shape]:
    """Patch merging at the end of stage ``stage``: V1 normalises its ``4C`` input, V2 its ``2C``
    output."""
    norm = 4 * dim if version == 1 else 2 * dim
    return {f"layers.{stage}.downsample.reduction.weight": (2 * dim, 4 * dim),
            f"layers.{stage}.downsample.norm.weight": (norm,),
            f"layers.{stage}.downsample.norm.bias": (norm,)}


#: A key only Swin V1 has (its learned bias table), and keys only SwinV2 has (its continuous
#: position bias; ``rpe_mlp`` in SimMIM files).
V1_KEY = re.compile(r"\.attn\.relative_position_bias_table$")
V2_KEY = re.compile(r"\.attn\.(logit_scale|cpb_mlp\.|rpe_mlp\.)")


def version_of(keys: Collection[str], name: str = "<state dict>") -> int:
    """The Swin version of official-named encoder ``keys``: 1 with ``relative_position_bias_table``,
    2 otherwise (``cpb_mlp`` / ``logit_scale``); both kinds is an error."""
    v1 = any(map(V1_KEY.search, keys))
    if v1 and any(map(V2_KEY.search, keys)):
        raise CheckpointError(f"{name}: holds both Swin V1 bias tables (relative_position_bias_table) "
                              "and SwinV2 position-bias MLPs (cpb_mlp/logit_scale); not one model")
    return 1 if v1 else 2


@dataclass(frozen=True)
class Structure:
    """Architecture read from a native state dict.

    Args:
        embed_dims: Channels of stage 1.
        depths: Blocks per stage present in the file.
        num_heads: Attention heads per stage.
        patch_size: Patch-embedding kernel/stride.
        in_channels: Input image channels.
        mlp_ratio: MLP hidden width relative to the stage channels.
        qkv_bias: Whether q and v biases are present.
        patch_norm: Whether the patch embedding has a LayerNorm.
        pos_embed_grid: Side of the absolute position embedding grid (``None``: no embedding).
        out_norms: Stage indices that have an output LayerNorm ``norm{i}``.
        cpb_hidden: Hidden width of the continuous position bias MLP (SwinV2).
        version: Swin version, 1 (bias tables) or 2 (continuous position bias).
        table_windows: Swin V1: the window of every stage's bias tables (their shape tells it);
            empty for SwinV2.
    """

    embed_dims: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    patch_size: int = 4
    in_channels: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_norm: bool = True
    pos_embed_grid: Optional[int] = None
    out_norms: Tuple[int, ...] = ()
    cpb_hidden: int = 512
    version: int = 2
    table_windows: Tuple[int, ...] = ()

    @property
    def num_stages(self) -> int:
        """Number of stages present."""
        return len(self.depths)

    @property
    def dims(self) -> Tuple[int, ...]:
        """Channels of every stage."""
        return tuple(self.embed_dims * 2 ** i for i in range(self.num_stages))

    def expected_shapes(self) -> Dict[str, Shape]:
        """Every native key this structure has, with its shape."""
        c, p = self.embed_dims, self.patch_size
        shapes: Dict[str, Shape] = {"patch_embed.proj.weight": (c, self.in_channels, p, p),
                                    "patch_embed.proj.bias": (c,)}
        if self.patch_norm:
            shapes.update({"patch_embed.norm.weight": (c,), "patch_embed.norm.bias": (c,)})
        if self.pos_embed_grid is not None:
            shapes["absolute_pos_embed"] = (1, self.pos_embed_grid ** 2, c)
        for i, (dim, depth, heads) in enumerate(zip(self.dims, self.depths, self.num_heads)):
            window = self.table_windows[i] if self.version == 1 else 0
            block = _block_shapes(dim, heads, int(dim * self.mlp_ratio), self.cpb_hidden,
                                  self.qkv_bias, self.version, window)
            for j in range(depth):
                shapes.update({f"layers.{i}.blocks.{j}.{k}": v for k, v in block.items()})
            if i < self.num_stages - 1:
                shapes.update(_merging_shapes(i, dim, self.version))
        for i in self.out_norms:
            if i < self.num_stages:
                shapes.update({f"norm{i}.weight": (self.dims[i],), f"norm{i}.bias": (self.dims[i],)})
        return shapes


def _shape(state: StateDict, key: str) -> Optional[Shape]:
    return tuple(state[key].shape) if key in state else None


def _stage_heads(state: StateDict, stage: int, depth: int) -> int:
    for j in range(depth):
        for key, axis in (("attn.logit_scale", 0), ("attn.cpb_mlp.2.weight", 0),
                          ("attn.relative_position_bias_table", 1)):
            shape = _shape(state, f"layers.{stage}.blocks.{j}.{key}")
            if shape and len(shape) > axis:
                return shape[axis]
    raise CheckpointError(f"stage {stage + 1} has no attention parameters (logit_scale, "
                          f"cpb_mlp.2.weight or relative_position_bias_table) to read its number "
                          "of heads from")


def _table_window(state: StateDict, stage: int, name: str) -> int:
    """The window of stage ``stage``'s first bias table, ``(2w-1)^2`` rows."""
    key = f"layers.{stage}.blocks.0.attn.relative_position_bias_table"
    shape = _shape(state, key)
    side = math.isqrt(shape[0]) if shape else 0
    if not shape or len(shape) != 2 or side * side != shape[0] or side % 2 == 0:
        raise CheckpointError(f"{name}: {key} has shape {shape}; expected ((2w-1)^2, heads) for a "
                              "window w")
    return (side + 1) // 2


def _first_shape(state: StateDict, suffix: str) -> Optional[Shape]:
    for key in sorted(state):
        if key.endswith(suffix):
            return tuple(state[key].shape)
    return None


def infer_structure(state: StateDict, name: str = "<state dict>") -> Structure:
    """Read the architecture from a native state dict and check every key and shape against it.

    Raises :class:`CheckpointError` naming ``name`` and listing unknown keys, missing keys (e.g. a
    missing block or patch merging) and shape mismatches.
    """
    proj = _shape(state, "patch_embed.proj.weight")
    if proj is None or len(proj) != 4 or proj[2] != proj[3]:
        raise CheckpointError(f"{name}: no usable patch_embed.proj.weight (got shape {proj}); this "
                              "is not a SwinV2 encoder")
    stage_ids = sorted({i for i in map(stage_of, state) if i is not None})
    if not stage_ids:
        raise CheckpointError(f"{name}: no 'layers.N.' keys; this is not a SwinV2 encoder")
    blocks: Dict[int, int] = {}
    for m in filter(None, map(BLOCK.match, state)):
        blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    stages = max(stage_ids) + 1
    depths = tuple(blocks.get(i, 0) for i in range(stages))
    empty = [f"layers.{i}" for i, d in enumerate(depths) if d == 0]
    if empty:
        raise CheckpointError(f"{name}: stages without blocks: {empty}; a checkpoint must hold "
                              "stages 1..N completely")
    embed_dims = proj[0]
    fc1 = _shape(state, "layers.0.blocks.0.mlp.fc1.weight")
    cpb = _first_shape(state, ".attn.cpb_mlp.0.weight")
    pos = _shape(state, "absolute_pos_embed")
    grid = None
    if pos is not None:
        grid = math.isqrt(pos[1]) if len(pos) == 3 else -1
        if grid < 1 or grid * grid != pos[1]:
            raise CheckpointError(f"{name}: absolute_pos_embed has shape {pos}; expected "
                                  "(1, G*G, embed_dims) for a square G x G patch grid")
    version = version_of(list(state), name)
    structure = Structure(
        embed_dims=embed_dims,
        depths=depths,
        num_heads=tuple(_stage_heads(state, i, d) for i, d in enumerate(depths)),
        patch_size=proj[2],
        in_channels=proj[1],
        mlp_ratio=fc1[0] / embed_dims if fc1 else 4.0,
        qkv_bias=any(k.endswith((".attn.q_bias", ".attn.v_bias", ".attn.qkv.bias")) for k in state),
        patch_norm="patch_embed.norm.weight" in state or "patch_embed.norm.bias" in state,
        pos_embed_grid=grid,
        out_norms=tuple(sorted({int(m.group(1)) for m in map(OUT_NORM.match, state) if m})),
        cpb_hidden=cpb[0] if cpb else 512,
        version=version,
        table_windows=tuple(_table_window(state, i, name) for i in range(stages)) if version == 1
        else (),
    )
    check_against(state, structure.expected_shapes(), name)
    return structure


def check_against(state: StateDict, expected: Dict[str, Shape], name: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys and shapes of
    ``expected``; the message lists unknown keys, missing keys and shape mismatches."""
    problems = describe_mismatch(state, expected)
    if problems:
        raise CheckpointError(f"{name} does not match a Swin encoder: " + "; ".join(problems))


def describe_mismatch(
    state: StateDict,
    expected: Dict[str, Shape],
    have: str = "file",
    want: str = "expected",
    extra: str = "unknown keys",
) -> List[str]:
    """Human-readable list of differences between ``state`` and ``expected`` (empty if none).

    Args:
        state: Tensors found.
        expected: Keys and shapes wanted.
        have: Name of the side holding ``state`` in shape messages.
        want: Name of the side holding ``expected`` in shape messages.
        extra: Label for keys of ``state`` not in ``expected``.
    """
    problems = []
    unknown = set(state) - set(expected)
    missing = set(expected) - set(state)
    wrong = [f"{k}: {have} {tuple(state[k].shape)} vs {want} {expected[k]}"
             for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != expected[k]]
    if unknown:
        problems.append(f"{extra} ({len(unknown)}): {format_keys(unknown)}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {format_keys(missing)}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {format_keys(wrong, limit=10, group=False)}")
    return problems


def _encoder_keys(keys: Collection[str]) -> List[str]:
    """The encoder's keys: those under ``backbone.`` (prefix removed) in a whole-model checkpoint,
    else all."""
    return strip_prefix(keys, "backbone.") or list(keys)


def has_official_encoder(keys: Collection[str]) -> bool:
    """Official/native block names with patch merging at the end of stages (``layers.0.downsample``
    present whenever stage 2 exists)."""
    keys = set(keys)
    if "patch_embed.proj.weight" not in keys or not any(map(_QKV_WEIGHT.match, keys)):
        return False
    multi_stage = any(k.startswith("layers.1.") for k in keys)
    return not multi_stage or any(k.startswith("layers.0.downsample.") for k in keys)


def detect(keys: Collection[str]) -> bool:
    """Native layout (optionally under ``backbone.``) without official-only keys."""
    encoder = _encoder_keys(keys)
    return has_official_encoder(encoder) and not any(map(OFFICIAL_ONLY.search, encoder))


def _module_names(keys: Collection[str]) -> str:
    return ", ".join(sorted({k.split(".", 1)[0] for k in keys}))


def keep_whole_model_heads(rest: StateDict, mapped: Mapped) -> None:
    """Record the non-backbone entries ``rest`` of a whole-model checkpoint in ``mapped``: a linear
    classifier as the classification head, a SimMIM decoder as the masked-image-modeling head (both
    only when they are the model's one other module), anything else as dropped."""
    classifier = linear_head(rest)
    decoder = mim_decoder(rest)
    for key, value in rest.items():
        if classifier is not None:
            mapped.keep_head(CLASSIFICATION_HEAD, key, key.replace("head.fc.", "head."), value)
        elif decoder is not None:
            mapped.keep_head(MIM_HEAD, key, key, value)
        else:
            mapped.drop("other modules of a whole model", key)


def to_native(source: Source) -> Mapped:
    """Take the state dict as it is (its ``backbone.`` part for whole-model checkpoints, the mask
    token and the heads apart) and the training windows recorded in this project's metadata, if
    any."""
    state = source.state_dict
    mapped = Mapped()
    token_key = MASK_TOKEN_KEY
    if any(k.startswith("backbone.") for k in state):
        inner, rest = split_prefix(state, "backbone.")
        keep_whole_model_heads(rest, mapped)
        mapped.notes.append(f"whole-model checkpoint: took 'backbone.*', left out {_module_names(rest)}"
                            if rest else "took 'backbone.*'")
        state, token_key = inner, "backbone." + MASK_TOKEN_KEY
    if MASK_TOKEN_KEY in state:
        mapped.keep_head(MASK_TOKEN, token_key, MASK_TOKEN_KEY, state[MASK_TOKEN_KEY])
        state = {k: v for k, v in state.items() if k != MASK_TOKEN_KEY}
    mapped.state_dict = dict(state)
    windows = (source.meta or {}).get("window_size")
    pretrained = (source.meta or {}).get("pretrained_window_sizes")
    if windows is not None:
        pretrained = pretrained or [0] * len(windows)
        mapped.windows = {i: StageWindow(int(w), int(p))
                          for i, (w, p) in enumerate(zip(windows, pretrained))}
        mapped.windows_from = "checkpoint metadata"
    mapped.small_map = recorded_small_map(source.meta or {}, source.name)
    return mapped


def recorded_small_map(meta: Mapping[str, Any], name: str) -> Optional[SmallMapSource]:
    """The ``small_map`` rule this project's metadata records (``small_map``, with the writer in
    ``small_map_writer`` and whether it is a finished model in ``small_map_finished``), if any.

    Raises:
        CheckpointError: A recorded rule that is none of ``SMALL_MAP_RULES``.
    """
    rule = meta.get("small_map")
    if rule is None:
        return None
    if rule not in SMALL_MAP_RULES:
        raise CheckpointError(f"{name}: its metadata records small_map={rule!r}, none of "
                              f"{SMALL_MAP_RULES}")
    return SmallMapSource(rule, str(meta.get("small_map_writer", "this project's model")),
                          bool(meta.get("small_map_finished", False)))
