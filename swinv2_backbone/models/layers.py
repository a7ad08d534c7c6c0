"""Building blocks of the SwinV2 backbone: patch embedding, the res-post-norm transformer block,
patch merging and a stage of blocks. All of them work on channels-last ``(B, H, W, C)`` maps."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import WindowAttentionV2
from .fast import active
from .ops import pad_to_multiple, padded_size

#: Rules for feature maps not larger than the window (defined at :func:`window_and_shift`).
SMALL_MAP_RULES = ("pad", "official", "hf", "timm")


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``p`` and rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


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
    hw: Tuple[int, int], window: int, shifted: bool, rule: str
) -> Tuple[int, Tuple[int, int]]:
    """The window and (row, col) shift a block uses on an ``hw`` feature map.

    ``'pad'`` keeps the window (the map is padded up to it) and shifts an axis only when its padded
    length holds more than one window. ``'official'`` is the classification rule of the official
    release: if the map is not larger than the window, the window becomes ``min(H, W)`` and nothing
    is shifted. ``'hf'`` is Hugging Face ``Swinv2Model``'s rule, which looks at the height only: the
    window becomes ``min(H, window)`` (the width is padded up to it) and nothing is shifted when
    ``H`` is not larger than the window; it equals ``'official'`` on square maps. ``'timm'`` shifts
    like ``'pad'`` (only the axes longer than the window; the block then rolls the map before
    padding it, as timm does) and shrinks the window to ``min(H, W)`` when a side is shorter than
    the window; timm's rectangular window for a non-square such map is not reproduced.
    """
    h, w = hw
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
        return active().mlp(self, x)


class SwinV2Block(nn.Module):
    """SwinV2 transformer block with res-post-norm:
    ``x = x + drop_path(norm1(attn(x)))``, ``x = x + drop_path(norm2(mlp(x)))``.

    Each forward pads the map to a window multiple, rolls it (shifted blocks), attends inside windows
    with the combined position-bias/shift mask, reverses the roll and crops. The window and shift come
    from the actual map size (see :func:`window_and_shift`). :meth:`forward` is the specification;
    how each step executes is the active kernels' business (:mod:`swinv2_backbone.models.kernels`,
    :mod:`swinv2_backbone.models.fast`), and a fast strategy may replace the whole block at inference.

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
        use_sdpa: Attention kernel choice, see :class:`WindowAttentionV2`.
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
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.small_map = small_map
        self.attn = WindowAttentionV2(dim, num_heads, pretrained_window_size, qkv_bias,
                                      attn_drop, drop, use_sdpa=use_sdpa)
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.norm2 = nn.LayerNorm(dim)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shifted={self.shifted}, small_map={self.small_map!r}"

    @property
    def roll_first(self) -> bool:
        """Roll a shifted map before padding it (timm's order) rather than after."""
        return self.small_map == "timm"

    def window_layout(self, x: torch.Tensor) -> Tuple[int, Tuple[int, int], torch.Tensor]:
        """Window, shift and attention mask for the ``(B, H, W, C)`` map ``x``."""
        hw = tuple(x.shape[1:3])
        window, shift = window_and_shift(hw, self.window_size, self.shifted, self.small_map)
        return window, shift, self.attn.attention_mask(window, padded_size(hw, window), shift,
                                                       self.attn.mask_dtype(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels = active()
        if kernels.block is not None:
            out = kernels.block(self, x)
            if out is not None:
                return out
        h, w = x.shape[1:3]
        window, shift, mask = self.window_layout(x)
        windows = kernels.to_windows(x, window, shift, self.roll_first)  # pad, roll, partition
        attn = self.attn(windows, mask)
        attn = kernels.from_windows(attn, h, w, shift, self.roll_first)  # merge, roll back, crop
        x = x + self.drop_path(self.norm1(attn))
        return x + self.drop_path(self.norm2(self.mlp(x)))


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
        pad_h, pad_w = (-h) % self.patch_size, (-w) % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMergingV2(nn.Module):
    """SwinV2 patch merging: concatenate each 2x2 neighbourhood in the official order
    ``(0,0), (1,0), (0,1), (1,1)`` (row offset fastest), ``Linear(4C, 2C, bias=False)``, then
    ``LayerNorm(2C)``. Odd sizes are zero-padded bottom/right.

    Args:
        dim: Input channels ``C``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, 2)
        b, h, w, c = x.shape
        # (B, H/2, dh, W/2, dw, C) -> (B, H/2, W/2, dw, dh, C): index dw*2 + dh gives x0..x3.
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.norm(active().linear(x, self.reduction.weight, None))


class SwinV2Stage(nn.Module):
    """A stage: ``depth`` blocks alternating regular and shifted windows, then (optionally) patch
    merging. :meth:`forward` returns both the stage output and the downsampled map.

    Args:
        dim: Channels of the stage.
        depth: Number of blocks.
        num_heads: Attention heads.
        window_size: Window side length.
        pretrained_window_size: Window the weights were trained with (0: none).
        drop_path: Per-block stochastic-depth probabilities (length ``depth``).
        downsample: Append :class:`PatchMergingV2`.
        with_cp: Activation checkpointing of each block while gradients are enabled.
        **block_kwargs: Forwarded to :class:`SwinV2Block`.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        pretrained_window_size: int,
        drop_path: Sequence[float],
        downsample: bool,
        with_cp: bool = False,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList([
            SwinV2Block(dim, num_heads, window_size, shifted=bool(i % 2),
                        pretrained_window_size=pretrained_window_size, drop_path=drop_path[i],
                        **block_kwargs)
            for i in range(depth)
        ])
        self.downsample = PatchMergingV2(dim) if downsample else None

    def set_window_size(self, window_size: int, pretrained_window_size: int) -> None:
        """Set the attention window and the position-bias normalisation window of every block."""
        for block in self.blocks:
            block.window_size = window_size
            block.attn.pretrained_window_size = pretrained_window_size

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


def stochastic_depth_schedule(depths: Sequence[int], rate: float) -> List[List[float]]:
    """Linear drop-path schedule from 0 to ``rate`` over all blocks, split per stage."""
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out
