"""Building blocks of the Swin backbones: patch embedding, the transformer blocks (V2 res-post-norm,
V1 pre-norm, sharing their window plumbing), patch merging of both versions and a stage of blocks.
All of them work on channels-last ``(B, H, W, C)`` maps."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import WindowAttention, WindowAttentionV1, WindowAttentionV2
from .kernels import BlockParts, Shift, active
from .ops import Size, dense, drop_path, index_scalar, pad_to, padded_size, static_zero, symbolic

#: Rules for feature maps not larger than the window (defined at :func:`window_and_shift`).
SMALL_MAP_RULES = ("pad", "official", "hf", "timm", "mmdet")


def active_dropout(module: nn.Module) -> bool:
    """Whether a dropout layer of ``module`` has a non-zero probability."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())


class DropPath(nn.Module):
    """Stochastic depth module.

    Args:
        p: Probability of dropping a sample's residual branch.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def window_and_shift(
    hw: Tuple[Size, Size], window: int, shifted: bool, rule: str
) -> Tuple[int, Shift]:
    """The window and (row, col) shift a block uses on an ``hw`` feature map.

    ``'pad'`` keeps the window (the map is padded up to it) and shifts an axis only when its padded
    length holds more than one window. ``'official'`` is the classification rule of the official
    release: if the map is not larger than the window, the window becomes ``min(H, W)`` and nothing
    is shifted. ``'hf'`` is Hugging Face ``Swinv2Model``'s rule, which looks at the height only: the
    window becomes ``min(H, window)`` (the width is padded up to it) and nothing is shifted when
    ``H`` is not larger than the window; it equals ``'official'`` on square maps. ``'timm'`` shifts
    like ``'pad'`` (only the axes longer than the window; the block then rolls the map before
    padding it, as timm does) and shrinks the window to ``min(H, W)`` when a side is shorter than
    the window; timm's rectangular window for a non-square such map is not reproduced. ``'mmdet'``
    keeps the window and shifts both axes of every shifted block, even where the padded map is one
    window (the official Swin for detection, mmdet/mmseg ``SwinTransformer`` and mmpretrain's
    ``pad_small_map=True``): it differs from ``'pad'`` only where a padded axis holds one window.
    """
    h, w = hw
    if symbolic(h) or symbolic(w):
        return _traced_window_and_shift(hw, window, shifted, rule)
    if rule == "mmdet":
        shift = window // 2 if shifted else 0
        return window, (shift, shift)
    if rule == "timm" and min(h, w) < window:
        return min(h, w), (0, 0)
    if rule == "hf":
        if h <= window:
            return h, (0, 0)
        shift = window // 2 if shifted else 0
        return window, (shift, shift)
    if rule == "official":
        if min(h, w) <= window:
            return min(h, w), (0, 0)
        shift = window // 2 if shifted else 0
        return window, (shift, shift)
    if not shifted:
        return window, (0, 0)
    shift = window // 2
    return window, (shift if h > window else 0, shift if w > window else 0)


def _decisive_side(rule: str) -> Optional[str]:
    """The side whose length decides a rule's small-map case: ``'min'`` (the shorter), ``'height'``,
    or ``None`` (``'pad'`` and ``'mmdet'`` never shrink the window). A function, not a dict lookup:
    torch 2.1's dynamo cannot trace ``dict.get``."""
    if rule in ("official", "timm"):
        return "min"
    return "height" if rule == "hf" else None


def _traced_window_and_shift(hw: Tuple[Size, Size], window: int, shifted: bool, rule: str
                             ) -> Tuple[int, Shift]:
    """:func:`window_and_shift` on the symbolic sizes of a dynamic-shape trace, without a guard on
    them: each shift that depends on a size is a 0-d tensor (``window // 2`` or 0). The window does
    not shrink in a graph (its size sets the shapes of the position bias): where a rule would shrink
    it, the map must be at least a window, which the trace records as a runtime check."""
    h, w = hw
    decisive = _decisive_side(rule)
    side = None if decisive is None else (h if decisive == "height" else torch.sym_min(h, w))
    if side is not None:
        torch._check(side >= window, lambda: (
            f"small_map={rule!r} shrinks the window on a map smaller than it ({window}); a traced "
            f"graph keeps the window, so its maps must be at least {window} on that side"))
    half = window // 2 if shifted else 0
    if rule == "mmdet" or not shifted:
        return window, (half, half)
    cpu = torch.device("cpu")
    if side is None or rule == "timm":  # each axis longer than the window is shifted
        return window, (half * (index_scalar(h, cpu) > window).long(),
                        half * (index_scalar(w, cpu) > window).long())
    longer = half * (index_scalar(side, cpu) > window).long()  # 'official', 'hf': both or none
    return window, (longer, longer)


def traced_input_floor(rule: str, windows: Sequence[int], patch_size: int) -> Tuple[int, int]:
    """The smallest input ``(H, W)`` a traced graph of a backbone serves: where ``rule`` shrinks the
    window on a map smaller than it (:func:`_traced_window_and_shift`), every stage's map must hold
    a window on the rule's decisive side. Stage ``i`` (0-based) has ``ceil(H / (patch_size *
    2**i))`` rows, at least ``w`` exactly when ``H > patch_size * 2**i * (w - 1)``.

    Args:
        rule: The blocks' :func:`window_and_shift` rule.
        windows: The window of each built stage.
        patch_size: The patch embedding's stride.
    """
    side = _decisive_side(rule)
    if side is None:
        return 1, 1
    need = max(patch_size * 2 ** i * (w - 1) + 1 for i, w in enumerate(windows))
    return (need, need) if side == "min" else (need, 1)


class Mlp(nn.Module):
    """Two-layer feed-forward network ``drop(fc2(drop(gelu(fc1(x)))))``.

    Args:
        dim: Input and output channels.
        hidden: Hidden channels.
        drop: Dropout after the activation and after ``fc2``.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return active().mlp(x, self.fc1, self.fc2, self.drop.p if self.training else 0.0)


class SwinBlock(nn.Module):
    """The transformer block machinery both Swin versions share: windows, shifts, padding, masks
    and the two residual branches. V2 (:class:`SwinV2Block`) normalises each branch's output
    (res-post-norm): ``x = x + drop_path(norm1(attn(x)))``, ``x = x + drop_path(norm2(mlp(x)))``;
    V1 (:class:`SwinV1Block`) its input (pre-norm): ``x = x + drop_path(attn(norm1(x)))``,
    ``x = x + drop_path(mlp(norm2(x)))``, with ``norm1`` before the padding (as the official Swin
    for detection and HF do: padded tokens enter the attention as zeros).

    Each forward pads the map to a window multiple, rolls it (shifted blocks), attends inside windows
    with the combined position-bias/shift mask, reverses the roll and crops. The window and shift come
    from the actual map size (see :func:`window_and_shift`). The block hands its layout and branches
    to the block kernel (:meth:`parts`); the reference kernel
    (:func:`swinv2_backbone.models.kernels.block`) is the specification, and the fast one
    (:mod:`swinv2_backbone.models.fast`) computes the same another way.

    Args:
        dim: Channels.
        window_size: Window side length.
        shifted: Whether this block uses shifted windows (odd blocks of a stage).
        attn: The window attention (a :class:`~swinv2_backbone.models.attention.WindowAttention`).
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
        drop: Dropout in the MLP.
        drop_path: Stochastic-depth probability of this block.
        small_map: Rule for maps not larger than the window (see :func:`window_and_shift`).
    """

    #: Whether the norms act on the branches' inputs (V1) rather than their outputs (V2).
    pre_norm = False

    def __init__(self, dim: int, window_size: int, shifted: bool, attn: WindowAttention,
                 mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 small_map: str = "pad") -> None:
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.small_map = small_map
        self.attn = attn
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.norm2 = nn.LayerNorm(dim)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shifted={self.shifted}, small_map={self.small_map!r}"

    @property
    def layout_rule(self) -> str:
        """The :func:`window_and_shift` rule that gives this block's ``small_map`` behaviour."""
        return self.small_map

    @property
    def roll_first(self) -> bool:
        """Roll a shifted map before padding it (timm's order) rather than after."""
        return self.small_map == "timm"

    def parts(self, x: torch.Tensor) -> BlockParts:
        """The block as the block kernel sees it on the ``(B, H, W, C)`` map ``x``: window, shift and
        attention mask for its size, and the branches' functions."""
        hw = tuple(x.shape[1:3])
        window, shift = window_and_shift(hw, self.window_size, self.shifted, self.layout_rule)
        mask = self.attn.attention_mask(window, padded_size(hw, window), shift,
                                        self.attn.mask_dtype(x))
        recorded = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return BlockParts(window=window, shift=shift, mask=mask, roll_first=self.roll_first,
                          pre_norm=self.pre_norm, norm1=self.norm1, norm2=self.norm2,
                          attention=self.attn, mlp=self.mlp,
                          drop_path=self.drop_path.p if self.training else 0.0,
                          recorded=recorded, dropout=self.training and active_dropout(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return active().block(x, self.parts(x))


class SwinV2Block(SwinBlock):
    """SwinV2 transformer block (res-post-norm, :class:`WindowAttentionV2`); see :class:`SwinBlock`.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        window_size: Window side length.
        shifted: Whether this block uses shifted windows (odd blocks of a stage).
        pretrained_window_size: Window the weights were trained with (0: none).
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
        qkv_bias: Learn q and v biases.
        drop: Dropout after the attention projection and in the MLP.
        attn_drop: Dropout on attention probabilities.
        drop_path: Stochastic-depth probability of this block.
        small_map: Rule for maps not larger than the window (see :func:`window_and_shift`).
        use_sdpa: Attention kernel choice, see :class:`WindowAttention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shifted: bool,
        pretrained_window_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        small_map: str = "pad",
        use_sdpa: str = "auto",
    ) -> None:
        attn = WindowAttentionV2(dim, num_heads, pretrained_window_size, qkv_bias, attn_drop, drop,
                                 use_sdpa=use_sdpa)
        super().__init__(dim, window_size, shifted, attn, mlp_ratio, drop, drop_path, small_map)


class SwinV1Block(SwinBlock):
    """Swin V1 transformer block (pre-norm, :class:`WindowAttentionV1` with a bias table for
    ``window_size``); see :class:`SwinBlock`.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        window_size: Window side length (and the bias table's window).
        shifted: Whether this block uses shifted windows (odd blocks of a stage).
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
        qkv_bias: Learn q, k and v biases.
        drop: Dropout after the attention projection and in the MLP.
        attn_drop: Dropout on attention probabilities.
        drop_path: Stochastic-depth probability of this block.
        small_map: Rule for maps not larger than the window (see :func:`window_and_shift`).
        use_sdpa: Attention kernel choice, see :class:`WindowAttention`.
    """

    pre_norm = True

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shifted: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        small_map: str = "pad",
        use_sdpa: str = "auto",
    ) -> None:
        attn = WindowAttentionV1(dim, num_heads, window_size, qkv_bias, attn_drop, drop,
                                 use_sdpa=use_sdpa)
        super().__init__(dim, window_size, shifted, attn, mlp_ratio, drop, drop_path, small_map)

    @property
    def layout_rule(self) -> str:
        """Hugging Face ``SwinModel`` (V1) looks at ``min(H, W)``, the official rule, where its
        ``Swinv2Model`` looks at the height only (the ``'hf'`` rule)."""
        return "official" if self.small_map == "hf" else self.small_map


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: zero-pad to a patch multiple (bottom/right), strided conv,
    LayerNorm. Returns a channels-last map.

    Args:
        in_channels: Image channels.
        embed_dims: Output channels.
        patch_size: Patch side length (kernel and stride of the convolution).
        patch_norm: Apply LayerNorm after the projection.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, patch_norm: bool = True
                 ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        hp, wp = padded_size((h, w), self.patch_size)
        pad_h, pad_w = hp - h, wp - w
        if not static_zero(pad_h, pad_w):
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def merge_neighbourhoods(x: torch.Tensor, out_hw: Optional[Tuple[Size, Size]] = None
                         ) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 4C)``: each 2x2 neighbourhood's tokens
    concatenated in the official order ``(0,0), (1,0), (0,1), (1,1)`` (row offset fastest); odd
    sizes are zero-padded bottom/right. ``out_hw``: that output size where the caller has it in
    a simpler form (:func:`~swinv2_backbone.models.ops.stage_sizes`)."""
    b, h, w, c = x.shape
    oh, ow = out_hw if out_hw is not None else ((h + 1) // 2, (w + 1) // 2)
    x = pad_to(x, 2 * oh, 2 * ow)
    # (B, H/2, dh, W/2, dw, C) -> (B, H/2, W/2, dw, dh, C): index dw*2 + dh gives x0..x3.
    return dense(x.view(b, oh, 2, ow, 2, c).permute(0, 1, 3, 4, 2, 5)).view(b, oh, ow, 4 * c)


class PatchMergingV2(nn.Module):
    """SwinV2 patch merging: each 2x2 neighbourhood concatenated (:func:`merge_neighbourhoods`),
    ``Linear(4C, 2C, bias=False)``, then ``LayerNorm(2C)``.

    Args:
        dim: Input channels ``C``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor, out_hw: Optional[Tuple[Size, Size]] = None) -> torch.Tensor:
        """``out_hw``: as in :func:`merge_neighbourhoods`."""
        return self.norm(active().linear(merge_neighbourhoods(x, out_hw), self.reduction))


class PatchMergingV1(nn.Module):
    """Swin V1 patch merging: the 2x2 neighbourhoods concatenated as in :class:`PatchMergingV2`,
    then ``LayerNorm(4C)`` and ``Linear(4C, 2C, bias=False)``. Odd sizes are zero-padded
    bottom/right.

    Args:
        dim: Input channels ``C``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, out_hw: Optional[Tuple[Size, Size]] = None) -> torch.Tensor:
        """``out_hw``: as in :func:`merge_neighbourhoods`."""
        return active().linear(self.norm(merge_neighbourhoods(x, out_hw)), self.reduction)


class SwinStage(nn.Module):
    """A stage: blocks alternating regular and shifted windows, then (optionally) patch merging.
    :meth:`forward` returns both the stage output and the downsampled map.

    Args:
        blocks: The stage's blocks (:class:`SwinBlock`).
        downsample: The patch merging at the end of the stage, or ``None``.
    """

    def __init__(self, blocks: Sequence[SwinBlock], downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, recomputed: Sequence[bool] = (),
                out_hw: Optional[Tuple[Size, Size]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``recomputed``: per block, whether it runs with activation checkpointing (its
        activations recomputed in the backward pass; missing entries: no). ``out_hw``: the
        downsampled map's size, as in :func:`merge_neighbourhoods`."""
        for j, block in enumerate(self.blocks):
            if j < len(recomputed) and recomputed[j]:
                x = active().recompute(block, x)
            else:
                x = block(x)
        return x, (self.downsample(x, out_hw) if self.downsample is not None else x)


def recompute_plan(sizes: Sequence[float], recorded: Sequence[bool]) -> List[bool]:
    """Which blocks ``with_cp`` checkpoints, in network order: every block that records a graph,
    except the trailing ones whose activations together are no larger than the largest recorded
    block's.

    Under checkpointing the backward pass holds one block's recomputed activations at a time, so
    its peak holds the largest block's. The trailing blocks are differentiated first and free what
    they saved before any checkpointed block is recomputed, so keeping their activations (at most
    that much, all together) leaves the peak where it was and saves their recomputation.

    Args:
        sizes: Each block's saved activations, in any common unit (tokens x channels).
        recorded: Whether each block records a graph (a gradient reaches its input or parameters);
            the others have nothing to checkpoint.
    """
    if len(sizes) != len(recorded):
        raise ValueError(f"recompute_plan: {len(sizes)} sizes for {len(recorded)} blocks")
    budget = max((s for s, r in zip(sizes, recorded) if r), default=0.0)
    plan = list(recorded)
    kept = 0.0
    for i in reversed(range(len(sizes))):
        if not recorded[i] or kept + sizes[i] > budget:
            break
        kept += sizes[i]
        plan[i] = False
    return plan


def stochastic_depth_schedule(depths: Sequence[int], rate: float) -> List[List[float]]:
    """Linear drop-path schedule from 0 to ``rate`` over all blocks, split per stage."""
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out
