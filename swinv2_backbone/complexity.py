"""Analytic parameter and FLOP counts of :class:`~swinv2_backbone.Swinv2Backbone`.

Convention: a multiply-accumulate (MAC) of a matrix product or convolution is one MAC, and
``FLOPs = 2 * MACs`` (what :class:`torch.utils.flop_counter.FlopCounterMode` reports). Only matrix
products and convolutions are counted: the patch-embedding convolution, the q/k/v projection, the
two attention products ``q @ k^T`` and ``attn @ v``, the output projection, both MLP layers, the
patch-merging reduction and the continuous-position-bias MLP. Normalisations, softmax, GELU, the
cosine normalisation of q and k, residual additions, padding and the absolute-position-embedding
interpolation are not counted (a few tenths of a percent).

The attention layers run on the map padded to a window multiple, so their counts use the padded
token count; the MLPs run on the unpadded map. The windows and shifts follow the model's own rule
(:func:`~swinv2_backbone.models.blocks.window_and_shift`), i.e. they depend on the input size. The
position-bias MLP runs once per attention module and window size (its output is cached at
inference); it is counted once per block and not per image.

To cross-check with :class:`~torch.utils.flop_counter.FlopCounterMode`, run the model on the
``'meta'`` device (free, and exact: see ``tools/analyze_complexity.py --measure``). On real CPU
tensors the counter misses work: at inference the model's Linear layers may run through oneDNN
(``mkldnn._linear_pointwise``, see :mod:`swinv2_backbone.models.fast.onednn`) and
``scaled_dot_product_attention`` through a CPU kernel, neither of which the counter knows, and a
second forward reuses the cached position-bias masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from .models import Swinv2Backbone
from .models.blocks import window_and_shift
from .models.ops import padded_size

#: Names of the counted operations, in the order they appear in a forward pass.
OPERATIONS = ("patch_embed", "qkv", "attn_qk", "attn_v", "proj", "mlp", "cpb_mlp", "patch_merging")


@dataclass(frozen=True)
class ArchSpec:
    """What the counts depend on, read from a built model.

    Args:
        embed_dims: Channels of stage 1.
        depths: Blocks of every built stage.
        num_heads: Heads of every built stage.
        window_sizes: Window of every built stage.
        patch_size: Patch-embedding stride and kernel.
        in_channels: Image channels.
        mlp_hidden: Hidden width of the MLP of every built stage.
        cpb_hidden: Hidden width of the continuous-position-bias MLP.
        qkv_bias: Whether q and v biases are learned.
        patch_norm: Whether the patch embedding has a LayerNorm.
        pos_embed_grid: Side of the absolute position embedding grid, or ``None``.
        out_norm_stages: Built stages (0-based) with an output LayerNorm ``norm{i}``.
        small_map: Window rule for small maps (one of ``SMALL_MAP_RULES``).
    """

    embed_dims: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    window_sizes: Tuple[int, ...]
    patch_size: int
    in_channels: int
    mlp_hidden: Tuple[int, ...]
    cpb_hidden: int
    qkv_bias: bool
    patch_norm: bool
    pos_embed_grid: Optional[int]
    out_norm_stages: Tuple[int, ...]
    small_map: str

    @property
    def dims(self) -> Tuple[int, ...]:
        """Channels of every built stage."""
        return tuple(self.embed_dims * 2 ** i for i in range(len(self.depths)))

    @classmethod
    def from_model(cls, model: Swinv2Backbone) -> "ArchSpec":
        """Read the architecture of a built model (any device, ``'meta'`` included).

        Args:
            model: The backbone to describe.
        """
        if not isinstance(model, Swinv2Backbone):
            raise TypeError(f"ArchSpec.from_model expects a Swinv2Backbone, got {type(model).__name__}")
        built = model.num_built_stages
        if not built:
            raise ValueError("the model builds no stage (out_features=('stem',)); nothing to analyse "
                             "beyond the patch embedding")
        return cls(
            embed_dims=model.embed_dims,
            depths=tuple(model.depths[:built]),
            num_heads=tuple(model.num_heads[:built]),
            window_sizes=tuple(model.window_size[:built]),
            patch_size=model.patch_size,
            in_channels=model.in_channels,
            mlp_hidden=model.mlp_hidden,
            cpb_hidden=model.cpb_hidden,
            qkv_bias=model.qkv_bias,
            patch_norm=model.patch_norm,
            pos_embed_grid=model.pos_embed_grid,
            out_norm_stages=model.out_norm_stages,
            small_map=model.small_map,
        )


def spec_from_config(**backbone_kwargs: Any) -> ArchSpec:
    """Build the backbone on the ``'meta'`` device (no memory, no initialisation cost) and read its
    :class:`ArchSpec`.

    Args:
        **backbone_kwargs: ``Swinv2Backbone`` keyword arguments (``arch='large'``, ``window_size=16``,
            ``out_indices=...``); invalid ones raise the model's own errors.
    """
    with torch.device("meta"):
        model = Swinv2Backbone(**backbone_kwargs)
    return ArchSpec.from_model(model)


def _linear_params(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def count_params(spec: ArchSpec) -> int:
    """Number of parameters of a model with architecture ``spec``, from the architecture alone.

    Args:
        spec: The architecture.
    """
    c0 = spec.embed_dims
    total = spec.in_channels * spec.patch_size ** 2 * c0 + c0 + (2 * c0 if spec.patch_norm else 0)
    if spec.pos_embed_grid is not None:
        total += spec.pos_embed_grid ** 2 * c0
    last = len(spec.depths) - 1
    for i, (dim, depth, heads, hidden) in enumerate(
            zip(spec.dims, spec.depths, spec.num_heads, spec.mlp_hidden)):
        block = (heads  # logit_scale
                 + _linear_params(2, spec.cpb_hidden) + _linear_params(spec.cpb_hidden, heads, bias=False)
                 + _linear_params(dim, 3 * dim, bias=False) + (2 * dim if spec.qkv_bias else 0)
                 + _linear_params(dim, dim)
                 + _linear_params(dim, hidden) + _linear_params(hidden, dim)
                 + 4 * dim)  # norm1, norm2
        total += depth * block
        if i < last:
            total += _linear_params(4 * dim, 2 * dim, bias=False) + 4 * dim  # reduction + norm(2C)
    total += sum(2 * spec.dims[i] for i in spec.out_norm_stages)
    return total


def block_macs(spec: ArchSpec, stage: int, shifted: bool, hw: Tuple[int, int]) -> Dict[str, int]:
    """MACs of one block of ``stage`` on an ``hw`` map, per operation.

    Args:
        spec: The architecture.
        stage: 0-based stage index.
        shifted: Whether the block uses shifted windows (odd blocks).
        hw: Map size (rows, columns) entering the block.
    """
    dim, heads = spec.dims[stage], spec.num_heads[stage]
    window, _ = window_and_shift(hw, spec.window_sizes[stage], shifted, spec.small_map)
    tokens = hw[0] * hw[1]
    padded = math.prod(padded_size(hw, window))
    table = (2 * window - 1) ** 2
    return {
        "qkv": padded * dim * 3 * dim,
        "attn_qk": padded * window * window * dim,
        "attn_v": padded * window * window * dim,
        "proj": padded * dim * dim,
        "mlp": 2 * tokens * dim * spec.mlp_hidden[stage],
        "cpb_mlp": table * spec.cpb_hidden * (2 + heads),
    }


def stage_sizes(spec: ArchSpec, image_hw: Tuple[int, int]) -> List[Tuple[int, int]]:
    """Map size of every built stage for an ``image_hw`` input (bottom/right padding throughout).

    Args:
        spec: The architecture.
        image_hw: Input image size (rows, columns).
    """
    h, w = math.ceil(image_hw[0] / spec.patch_size), math.ceil(image_hw[1] / spec.patch_size)
    sizes = []
    for _ in spec.depths:
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def count_macs(spec: ArchSpec, image_hw: Tuple[int, int], batch: int = 1) -> Dict[str, int]:
    """MACs of one forward pass, per operation (keys: :data:`OPERATIONS`).

    Args:
        spec: The architecture.
        image_hw: Input image size (rows, columns); both must be positive.
        batch: Number of images.
    """
    if len(image_hw) != 2 or any(not isinstance(s, int) or s < 1 for s in image_hw):
        raise ValueError(f"image_hw must be two positive ints (rows, columns), got {image_hw!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    sizes = stage_sizes(spec, image_hw)
    totals = dict.fromkeys(OPERATIONS, 0)
    h0, w0 = sizes[0]
    totals["patch_embed"] = batch * h0 * w0 * spec.embed_dims * spec.in_channels * spec.patch_size ** 2
    for stage, hw in enumerate(sizes):
        for j in range(spec.depths[stage]):
            for op, macs in block_macs(spec, stage, bool(j % 2), hw).items():
                # The position-bias MLP does not depend on the batch.
                totals[op] += macs if op == "cpb_mlp" else batch * macs
        if stage < len(sizes) - 1:
            dim = spec.dims[stage]
            nh, nw = sizes[stage + 1]
            totals["patch_merging"] += batch * nh * nw * 4 * dim * 2 * dim
    return totals


@dataclass(frozen=True)
class Complexity:
    """Parameters and compute of one model at one input size.

    Args:
        params: Number of parameters.
        image_hw: Input size (rows, columns).
        macs: MACs per operation for one image.
    """

    params: int
    image_hw: Tuple[int, int]
    macs: Dict[str, int]

    @property
    def total_macs(self) -> int:
        """All counted MACs."""
        return sum(self.macs.values())

    @property
    def flops(self) -> int:
        """``2 * total_macs``, the :class:`~torch.utils.flop_counter.FlopCounterMode` convention."""
        return 2 * self.total_macs


def analyze(spec: ArchSpec, image_hw: Tuple[int, int]) -> Complexity:
    """Parameters and per-image MACs of ``spec`` at ``image_hw``.

    Args:
        spec: The architecture.
        image_hw: Input size (rows, columns).
    """
    return Complexity(params=count_params(spec), image_hw=tuple(image_hw),
                      macs=count_macs(spec, tuple(image_hw)))
