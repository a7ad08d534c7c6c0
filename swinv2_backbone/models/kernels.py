"""The operations of the model whose execution strategy may change without changing the math: their
reference implementations, the records they receive, and the switch between strategies.

:class:`Kernels` names the seam: the model's modules call the operations of the active set
(:func:`active`), handing each what it needs as arguments or one small typed record
(:class:`AttentionArgs`, :class:`BlockParts`). :data:`REFERENCE` is the specification, written
plainly; :mod:`swinv2_backbone.models.fast` holds the faster strategies, each tested against it,
and makes them the default when the models package is imported. Every operation is total: a fast
strategy that does not apply to some input calls the reference itself, so the modules' forwards have
no fallback branches.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from ..compat import tracing
from .ops import (Offset, Size, autocast_off, crop, dense, drop_path, inverse_norm, pad_to_multiple, roll,
                  window_partition, window_reverse)

#: ``(rows, cols)`` cyclic shift of the windows (tensors where decided from symbolic sizes).
Shift = Tuple[Offset, Offset]
Map = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttentionArgs:
    """What a window-attention kernel needs besides the windows and the mask.

    Args:
        qkv: The qkv projection, a ``C -> 3C`` ``nn.Linear`` whose call takes the bias to add
            (``qkv(x, bias)``; see :func:`linear`).
        qkv_bias: ``(3C,)`` bias of the qkv projection, or ``None``.
        num_heads: Attention heads; the head dimension is ``C // num_heads``.
        cosine: Normalise q and k (cosine attention, V2) before q is scaled; else only scale q (V1).
        q_scale: The factor q is multiplied by: a float, or a ``(heads, 1, 1)`` tensor (V2's learned
            temperature, which may need a gradient).
        dropout: Dropout probability on the attention probabilities in effect now (0 outside
            training).
        sdpa: Use ``F.scaled_dot_product_attention`` (logits in the input dtype) rather than the
            explicit fp32 matmul-softmax-matmul.
    """

    qkv: nn.Linear
    qkv_bias: Optional[torch.Tensor]
    num_heads: int
    cosine: bool
    q_scale: Union[float, torch.Tensor]
    dropout: float
    sdpa: bool


@dataclass(frozen=True)
class BlockParts:
    """A transformer block as the block kernel sees it: its layout on the current map and the
    functions of its two residual branches.

    Args:
        window: Window side length used on this map.
        shift: ``(rows, cols)`` cyclic shift of the windows.
        mask: Additive ``(nW or 1, heads, N, N)`` attention mask (position bias + shift mask).
        roll_first: Roll the map before padding it (timm's order) rather than after.
        pre_norm: The norms act on the branches' inputs (V1) rather than their outputs (V2).
        norm1: The attention branch's LayerNorm.
        norm2: The MLP branch's LayerNorm.
        attention: ``(windows, mask) -> windows``: the window attention.
        mlp: The feed-forward network.
        drop_path: Stochastic-depth probability in effect now (0 outside training).
        recorded: A gradient is recorded through the block (its input or a parameter needs one).
        dropout: A dropout layer of the block is active (training with a non-zero probability).
    """

    window: int
    shift: Shift
    mask: torch.Tensor
    roll_first: bool
    pre_norm: bool
    norm1: Map
    norm2: Map
    attention: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mlp: Map
    drop_path: float
    recorded: bool
    dropout: bool

    def branch(self, norm: Map, f: Map, x: torch.Tensor) -> torch.Tensor:
        """A residual branch's contribution before drop path: ``f(norm(x))`` (pre-norm) or
        ``norm(f(x))`` (res-post-norm)."""
        return f(norm(x)) if self.pre_norm else norm(f(x))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP branch's contribution for the tokens ``x`` (before drop path)."""
        return self.branch(self.norm2, self.mlp, x)


@dataclass(frozen=True)
class Kernels:
    """One implementation of every replaceable operation.

    Args:
        name: Shown in reports.
        linear: ``(x, layer, bias)`` -> ``x @ layer.weight^T + bias`` for an ``nn.Linear``
            ``layer``, with its own bias where ``bias`` is ``None`` (:func:`linear`).
        to_windows: ``(x, window, shift, roll_first)``: a ``(B, H, W, C)`` map zero-padded to window
            multiples, rolled by ``-shift`` (before the padding when ``roll_first``, timm's order)
            and partitioned into ``(B, nW, window*window, C)``.
        from_windows: ``(windows, window, H, W, shift, roll_first)``: the inverse of ``to_windows``
            (merge, roll back, crop).
        scores: ``(q, k, mask)`` -> ``q @ k^T + mask`` for ``(B, nW, heads, N, d)`` queries and keys
            and a mask broadcastable to ``(B, nW, heads, N, N)``.
        mlp: ``(x, fc1, fc2, dropout)`` -> ``drop(fc2(drop(gelu(fc1(x)))))`` for the two
            ``nn.Linear`` layers and the dropout probability in effect.
        attention: ``(windows, mask, args)`` -> multi-head attention inside the ``(B, nW, N, C)``
            windows (their qkv projection included) with an additive mask broadcastable to
            ``(B, nW, heads, N, N)``, as the ``(B, nW, N, C)`` input of the output projection
            (:class:`AttentionArgs`).
        block: ``(x, parts)`` -> a whole transformer block on the ``(B, H, W, C)`` map ``x``
            (:class:`BlockParts`).
        recompute: ``(block, x)`` -> ``block(x)`` with activation checkpointing: only ``x`` is kept
            for the backward pass, which recomputes the block.
    """

    name: str
    linear: Callable[[torch.Tensor, nn.Linear, Optional[torch.Tensor]], torch.Tensor]
    to_windows: Callable[[torch.Tensor, int, Shift, bool], torch.Tensor]
    from_windows: Callable[[torch.Tensor, int, Size, Size, Shift, bool], torch.Tensor]
    scores: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    mlp: Callable[[torch.Tensor, nn.Linear, nn.Linear, float], torch.Tensor]
    attention: Callable[[torch.Tensor, torch.Tensor, AttentionArgs], torch.Tensor]
    block: Callable[[torch.Tensor, BlockParts], torch.Tensor]
    recompute: Callable[[nn.Module, torch.Tensor], torch.Tensor]


def linear(x: torch.Tensor, layer: nn.Linear, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``layer(x)``, or ``layer(x, bias)`` with a bias in place of the layer's own (only the qkv
    projection takes one). Calling the module, rather than ``F.linear`` with its weight, lets FLOP
    counters and profilers attribute the product to it while the model is traced."""
    return layer(x) if bias is None else layer(x, bias)


def to_windows(x: torch.Tensor, window: int, shift: Shift, roll_first: bool = False) -> torch.Tensor:
    back = (-shift[0], -shift[1])
    if roll_first:
        return window_partition(pad_to_multiple(roll(x, back, (1, 2)), window), window)
    return window_partition(roll(pad_to_multiple(x, window), back, (1, 2)), window)


def from_windows(windows: torch.Tensor, window: int, h: Size, w: Size, shift: Shift,
                 roll_first: bool = False) -> torch.Tensor:
    if roll_first:
        return roll(crop(window_reverse(windows, window, h, w), h, w), shift, (1, 2))
    return crop(roll(window_reverse(windows, window, h, w), shift, (1, 2)), h, w)


def scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.matmul(q, k.transpose(-2, -1)) + mask


def mlp(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear, dropout: float) -> torch.Tensor:
    hidden = F.dropout(F.gelu(fc1(x)), dropout, dropout > 0)
    return F.dropout(fc2(hidden), dropout, dropout > 0)


def logits_qk(q: torch.Tensor, k: torch.Tensor, args: AttentionArgs, dtype: torch.dtype
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(q', k')`` with ``q' @ k'^T`` the attention logits before bias and mask; normalising
    factors are capped at the range of ``dtype``. Cosine attention applies the temperature to q
    (N*d values, not N*N): one multiply each, so training keeps no normalised copy of q or k besides
    the scaled ones."""
    if args.cosine:
        return q * inverse_norm(q, args.q_scale, dtype), k * inverse_norm(k, None, dtype)
    return q * args.q_scale, k


def attention(windows: torch.Tensor, mask: torch.Tensor, args: AttentionArgs) -> torch.Tensor:
    b, nw, n, c = windows.shape
    h, d = args.num_heads, c // args.num_heads
    qkv = active().linear(windows, args.qkv, args.qkv_bias)
    # One copy to heads-first layout makes q, k and v contiguous, so no later reshape copies; the
    # projection's own output is not kept past it.
    q, k, v = dense(qkv.view(b * nw, n, 3, h, d).permute(2, 0, 3, 1, 4)).unbind(0)
    del qkv
    if args.sdpa:
        q, k = logits_qk(q, k, args, q.dtype)  # (B*nW, heads, N, d)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.to(q.dtype).expand(b, nw, -1, -1, -1).flatten(0, 1),
            dropout_p=args.dropout, scale=1.0)
    else:
        # Logits and softmax in fp32 whatever the input dtype (only the probabilities go back to
        # v's dtype): in bf16 a SwinV2 logit of up to 116 (cosine x 100 plus a bias of up to 16)
        # keeps 8 significant bits, an error of up to 0.25 before the exponential. At fp32 the
        # casts are no-ops.
        with autocast_off(v):
            q, k = logits_qk(q.float(), k.float(), args, q.dtype)
            attn = active().scores(q.view(b, nw, h, n, d), k.view(b, nw, h, n, d), mask.float())
            attn = F.dropout(attn.softmax(dim=-1), args.dropout, args.dropout > 0).to(v.dtype)
            out = torch.matmul(attn.view(b * nw, h, n, n), v)
    return out.view(b, nw, h, n, d).transpose(2, 3).reshape(b, nw, n, c)


def block(x: torch.Tensor, parts: BlockParts) -> torch.Tensor:
    kernels = active()
    h, w = x.shape[1:3]
    branch_in = parts.norm1(x) if parts.pre_norm else x
    windows = kernels.to_windows(branch_in, parts.window, parts.shift, parts.roll_first)
    attn = parts.attention(windows, parts.mask)
    attn = kernels.from_windows(attn, parts.window, h, w, parts.shift, parts.roll_first)  # merge, roll back, crop
    x = x + drop_path(attn if parts.pre_norm else parts.norm1(attn), parts.drop_path, True)
    return x + drop_path(parts.mlp_branch(x), parts.drop_path, True)


def recompute(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch_checkpoint(block, x, use_reentrant=False)


#: The specification: plain torch operations.
REFERENCE = Kernels("reference", linear=linear, to_windows=to_windows, from_windows=from_windows,
                    scores=scores, mlp=mlp, attention=attention, block=block, recompute=recompute)

_active = REFERENCE
#: The kernels a trace takes: the reference, or those an exporter selects (:func:`traced_with`).
_traced = REFERENCE


def active() -> Kernels:
    """The kernels the model runs with now: while it is traced into a graph
    (:func:`~swinv2_backbone.compat.tracing`) the reference (or what :func:`traced_with` selects),
    else the selected ones."""
    return _traced if tracing() else _active


def use(kernels: Kernels) -> None:
    """Run the model with ``kernels`` (tests combine single fast operations with the reference)."""
    global _active
    if not isinstance(kernels, Kernels):
        raise TypeError(f"expected a Kernels, got {type(kernels).__name__}")
    _active = kernels


@contextlib.contextmanager
def traced_with(kernels: Kernels) -> Iterator[None]:
    """Traces inside the ``with`` block take ``kernels`` instead of the reference (an exporter's
    graph-friendly strategies; the eager selection is unchanged)."""
    global _traced
    if not isinstance(kernels, Kernels):
        raise TypeError(f"expected a Kernels, got {type(kernels).__name__}")
    previous, _traced = _traced, kernels
    try:
        yield
    finally:
        _traced = previous


@contextlib.contextmanager
def using(kernels: Kernels) -> Iterator[None]:
    """:func:`use` for the duration of a ``with`` block."""
    previous = _active
    use(kernels)
    try:
        yield
    finally:
        use(previous)
