"""Building blocks of the SwinV2 backbone: patch embedding, the res-post-norm transformer block,
patch merging and a stage of blocks. All of them work on channels-last ``(B, H, W, C)`` maps."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from ..compat import is_compiling
from .attention import WindowAttentionV2
from .linear_backend import dense, linear
from .ops import (autocast_off, compute_dtype, from_windows, pad_to_multiple, padded_size,
                  to_windows)

#: Rules for feature maps smaller than (or not larger than) the window.
SMALL_MAP_RULES = ("pad", "official", "hf", "timm")

#: The inference path (:meth:`SwinV2Block._forward_chunked`) runs at most ``CHUNK_TOKENS`` tokens
#: at a time, and splits a map into at least ``CHUNK_SPLIT`` chunks unless that would make them
#: smaller than ``MIN_CHUNK_TOKENS``: the chunk temporaries (about 5 KiB per token) then stay a small
#: share of the map's own memory at every input size, so peak memory grows linearly with the pixels.
CHUNK_TOKENS = 2048
CHUNK_SPLIT = 8
MIN_CHUNK_TOKENS = 256


def chunk_rows(rows: int, row_tokens: int) -> int:
    """Rows (windows of ``row_tokens`` tokens, or single tokens) per chunk of a map of ``rows``."""
    tokens = min(CHUNK_TOKENS, max(MIN_CHUNK_TOKENS, -(-rows * row_tokens // CHUNK_SPLIT)))
    return max(1, tokens // row_tokens)


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


def _mask_rows(mask: torch.Tensor, start: int, stop: int, nw: int) -> torch.Tensor:
    """Rows ``start:stop`` of a ``(nW or 1, heads, N, N)`` mask repeated over the batch, for windows
    flattened as ``(B * nW)``."""
    if mask.shape[0] == 1:
        return mask
    if start // nw == (stop - 1) // nw:  # within one image: a view
        return mask[start % nw:(stop - 1) % nw + 1]
    return mask.index_select(0, torch.arange(start, stop, device=mask.device) % nw)


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b``, in place, with ``acc`` possibly wider than ``a`` and ``b``."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(a.mm(b))


class _GeluMlp(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` for training: only the ``fc1`` output is saved (the GELU output is
    recomputed in the backward pass: ``4C`` fewer values per token and block), and both passes run
    ``step`` tokens at a time, so the ``4C``-wide temporaries (GELU output, its gradient) stay a few
    MiB, reused and cache-resident, rather than map-sized; on CPU every fresh map-sized temporary
    costs page faults (the GELU into a fresh 50 MiB tensor takes 4x as long as into a reused one).

    Under autocast both passes compute in the autocast dtype, as ``F.linear`` would; weight and bias
    gradients are accumulated over the chunks in fp32 and returned in the parameters' dtypes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                w2: torch.Tensor, b2: Optional[torch.Tensor], step: int) -> torch.Tensor:
        dtype = compute_dtype(x)
        rows = x.numel() // x.shape[-1]
        x2 = x.reshape(rows, x.shape[-1]).to(dtype)
        w1c, w2c = w1.to(dtype), w2.to(dtype)
        b1c = None if b1 is None else b1.to(dtype)
        b2c = None if b2 is None else b2.to(dtype)
        out = x2.new_empty(rows, w2.shape[0])
        hidden = []
        with autocast_off(x):
            for start in range(0, rows, step):
                hidden.append(dense(x2[start:start + step], w1c, b1c))
                out[start:start + step] = dense(F.gelu(hidden[-1]), w2c, b2c)
        ctx.save_for_backward(x, w1, w2, *hidden)
        ctx.has_bias = (b1 is not None, b2 is not None)
        return out.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, w1, w2, *hidden = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        dtype, step = hidden[0].dtype, hidden[0].shape[0]  # every chunk but the last has step rows
        rows = x.numel() // x.shape[-1]
        x2 = x.reshape(rows, x.shape[-1]).to(dtype)
        grad2 = grad_out.reshape(rows, grad_out.shape[-1]).to(dtype)
        # dense() takes (out, in) weights: these give hidden @ w2 and hidden @ w1
        w1t, w2t = w1.to(dtype).t().contiguous(), w2.to(dtype).t().contiguous()
        acc = dict(dtype=torch.float32, device=x.device)
        grad_w1 = torch.zeros(w1.shape, **acc) if need_w1 else None
        grad_w2 = torch.zeros(w2.shape, **acc) if need_w2 else None
        grad_b1 = torch.zeros(w1.shape[0], **acc) if need_b1 and ctx.has_bias[0] else None
        grad_x = x2.new_empty(x2.shape) if need_x else None
        for hid, start in zip(hidden, range(0, rows, step)):
            grad = grad2[start:start + step]
            if grad_w2 is not None:
                _accumulate(grad_w2, grad.t(), F.gelu(hid))
            if not (need_x or need_w1 or need_b1):
                continue
            grad_hid = torch.ops.aten.gelu_backward(dense(grad, w2t), hid)
            if grad_w1 is not None:
                _accumulate(grad_w1, grad_hid.t(), x2[start:start + step])
            if grad_b1 is not None:
                grad_b1.add_(grad_hid.sum(0, dtype=torch.float32))
            if grad_x is not None:
                grad_x[start:start + step] = dense(grad_hid, w1t)
        grad_b2 = grad2.sum(0, dtype=torch.float32) if need_b2 and ctx.has_bias[1] else None
        return (None if grad_x is None else grad_x.view(x.shape).to(x.dtype),
                None if grad_w1 is None else grad_w1.to(w1.dtype),
                None if grad_b1 is None else grad_b1.to(w1.dtype),
                None if grad_w2 is None else grad_w2.to(w2.dtype),
                None if grad_b2 is None else grad_b2.to(w2.dtype), None)


class Mlp(nn.Module):
    """Two-layer feed-forward network ``drop(fc2(drop(gelu(fc1(x)))))``: GELU fused into ``fc1``
    where the Linear backend allows; in training without dropout the GELU output is recomputed in
    the backward pass rather than stored (less activation memory, same gradients).

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
        if (torch.is_grad_enabled() and not is_compiling()
                and not (self.training and self.drop.p > 0)):
            step = CHUNK_TOKENS if x.device.type == "cpu" else max(x.numel() // x.shape[-1], 1)
            return _GeluMlp.apply(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                  step)
        return self.drop(linear(self.drop(linear(x, self.fc1, "gelu")), self.fc2))


class SwinV2Block(nn.Module):
    """SwinV2 transformer block with res-post-norm:
    ``x = x + drop_path(norm1(attn(x)))``, ``x = x + drop_path(norm2(mlp(x)))``.

    Each forward pads the map to a window multiple, rolls it (shifted blocks), attends inside windows
    with the combined position-bias/shift mask, reverses the roll and crops. The window and shift come
    from the actual map size (see :func:`window_and_shift`).

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
        small_map: Rule for maps not larger than the window, one of :data:`SMALL_MAP_RULES`.
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

    def _layout(self, x: torch.Tensor) -> Tuple[int, Tuple[int, int], torch.Tensor]:
        """Window, shift and attention mask for the ``(B, H, W, C)`` map ``x``."""
        hw = tuple(x.shape[1:3])
        window, shift = window_and_shift(hw, self.window_size, self.shifted, self.small_map)
        return window, shift, self.attn.attention_mask(window, padded_size(hw, window), shift,
                                                       self.attn.mask_dtype(x))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        window, shift, mask = self._layout(x)
        windows = to_windows(x, window, shift, self.roll_first)
        return from_windows(self.attn(windows, mask), *x.shape[1:3], shift, self.roll_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._chunkable(x):
            return self._forward_chunked(x)
        x = x + self.drop_path(self.norm1(self._attend(x)))
        return x + self.drop_path(self.norm2(self.mlp(x)))

    def _chunkable(self, x: torch.Tensor) -> bool:
        """Whether the chunked path applies: eval mode (no dropout, no drop path), nothing needs a
        gradient, not inside ``torch.compile`` (which fuses the block its own way)."""
        if self.training or is_compiling():
            return False
        return not (torch.is_grad_enabled()
                    and (x.requires_grad or any(p.requires_grad for p in self.parameters())))

    def _forward_chunked(self, x: torch.Tensor) -> torch.Tensor:
        """The block a few thousand tokens at a time, in place (inference only).

        The attention half runs in window order (:func:`to_windows` / :func:`from_windows` are
        one gather each); the MLP half, after the crop, on the real tokens only, so no work is
        spent on padding. Every temporary stays a few MiB (reused by the allocator,
        cache-resident) instead of map-sized, which on CPU avoids fresh page faults on every large
        temporary. Each half is its own method so that its map-sized buffers are freed as it
        returns.
        """
        x = self._attention_chunked(x)  # a fresh tensor: updated in place by the MLP half
        tokens = x.view(-1, x.shape[-1])
        step = chunk_rows(tokens.shape[0], 1)
        for start in range(0, tokens.shape[0], step):
            chunk = tokens[start:start + step]
            chunk.add_(self.norm2(self.mlp(chunk)))
        return x

    def _attention_chunked(self, x: torch.Tensor) -> torch.Tensor:
        """``x + norm1(attention(x))`` window chunk by window chunk, as a new map."""
        b, h, w, c = x.shape
        window, shift, mask = self._layout(x)
        windows = to_windows(x, window, shift, self.roll_first)  # fresh: updated chunk by chunk
        nw, n = windows.shape[1:3]
        flat = windows.view(b * nw, n, c)
        step = chunk_rows(b * nw, n)
        for start in range(0, b * nw, step):
            stop = min(start + step, b * nw)
            chunk = flat[start:stop]
            attn = self.attn(chunk.unsqueeze(0), _mask_rows(mask, start, stop, nw))[0]
            chunk.add_(self.norm1(attn))  # the attention has read the chunk already
        return from_windows(windows, h, w, shift, self.roll_first)


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
        return self.norm(linear(x, self.reduction))


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
