"""The operations of the model whose execution strategy may change without changing the math, and
their reference implementations.

:class:`Kernels` names the seam: the model's modules call the operations of the active set
(:func:`swinv2_backbone.models.fast.active`). :data:`REFERENCE` is the specification, written
plainly; :mod:`swinv2_backbone.models.fast` holds the faster strategies, each tested against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from .ops import pad_to_multiple, window_partition, window_reverse

Shift = Tuple[int, int]


def recompute(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch_checkpoint(block, x, use_reentrant=False)


@dataclass(frozen=True)
class Kernels:
    """One implementation of every replaceable operation.

    Args:
        name: Shown in reports.
        linear: ``(x, weight, bias, activation)`` -> ``activation(x @ weight^T + bias)``, with
            ``activation`` ``'none'`` or ``'gelu'`` and ``bias`` possibly ``None``.
        to_windows: ``(x, window, shift, roll_first)``: a ``(B, H, W, C)`` map zero-padded to window
            multiples, rolled by ``-shift`` (before the padding when ``roll_first``, timm's order)
            and partitioned into ``(B, nW, window*window, C)``.
        from_windows: ``(windows, H, W, shift, roll_first)``: the inverse of ``to_windows`` (merge,
            roll back, crop).
        scores: ``(q, k, mask)`` -> ``q @ k^T + mask`` for ``(B, nW, heads, N, d)`` queries and keys
            and a mask broadcastable to ``(B, nW, heads, N, N)``.
        mlp: ``(mlp, x)`` -> the output of an :class:`~swinv2_backbone.models.blocks.Mlp`.
        attention: ``(attention, qkv, mask)`` -> the window attention of the module ``attention``
            (a :class:`~swinv2_backbone.models.attention.WindowAttention`) from its ``(B, nW, N, 3C)``
            qkv projection output and its ``(nW or 1, heads, N, N)`` additive mask, as the
            ``(B, nW, N, C)`` input of its output projection; ``None`` where that strategy does not
            apply (the module then runs its own attention). ``None``: no such strategy.
        block: ``(block, x)`` -> the output of a whole
            :class:`~swinv2_backbone.models.blocks.SwinV2Block` computed another way, or ``None``
            where that strategy does not apply (the block then runs its own forward). ``None``: no
            such strategy.
        recompute: ``(block, x)`` -> ``block(x)`` with activation checkpointing: only ``x`` is
            kept for the backward pass, which recomputes the block.
    """

    name: str
    linear: Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], str], torch.Tensor]
    to_windows: Callable[[torch.Tensor, int, Shift, bool], torch.Tensor]
    from_windows: Callable[[torch.Tensor, int, int, Shift, bool], torch.Tensor]
    scores: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    mlp: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    attention: Optional[Callable[[nn.Module, torch.Tensor, torch.Tensor],
                                 Optional[torch.Tensor]]] = None
    block: Optional[Callable[[nn.Module, torch.Tensor], Optional[torch.Tensor]]] = None
    recompute: Callable[[nn.Module, torch.Tensor], torch.Tensor] = recompute


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: str = "none") -> torch.Tensor:
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else out


def to_windows(x: torch.Tensor, window: int, shift: Shift, roll_first: bool = False) -> torch.Tensor:
    if roll_first:
        return window_partition(pad_to_multiple(torch.roll(x, (-shift[0], -shift[1]), (1, 2)), window),
                                window)
    return window_partition(torch.roll(pad_to_multiple(x, window), (-shift[0], -shift[1]), (1, 2)),
                            window)


def from_windows(windows: torch.Tensor, h: int, w: int, shift: Shift, roll_first: bool = False
                 ) -> torch.Tensor:
    if roll_first:
        return torch.roll(window_reverse(windows, h, w)[:, :h, :w], shift, (1, 2))
    return torch.roll(window_reverse(windows, h, w), shift, (1, 2))[:, :h, :w]


def scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.matmul(q, k.transpose(-2, -1)) + mask


def mlp(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module.drop(module.fc2(module.drop(F.gelu(module.fc1(x)))))


#: The specification: plain torch operations.
REFERENCE = Kernels("reference", linear=linear, to_windows=to_windows, from_windows=from_windows,
                    scores=scores, mlp=mlp)
