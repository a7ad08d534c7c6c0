"""Window partitioning as single row gathers: pad + roll + partition (and back) as one
``index_select`` each, with index tensors computed once per map size. The gather's gradient is again a
gather (no scatter-add). Reference: :func:`swinv2_backbone.models.kernels.to_windows` /
:func:`~swinv2_backbone.models.kernels.from_windows`."""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ..ops import padded_size, window_partition


@functools.lru_cache(maxsize=64)
def window_gather_index(
    batch: int, h: int, w: int, window: int, shift: Tuple[int, int], device: torch.device,
    roll_first: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Row indices that do pad + roll + :func:`window_partition` (and back) as single gathers.

    For a ``(B*h*w, C)`` token matrix of a ``(B, h, w, C)`` map, returns

    - ``forward``: ``(B*nW*N,)`` rows such that ``tokens[forward]`` is the map zero-padded to window
      multiples, rolled by ``-shift`` and partitioned (rows of padding point at row 0); with
      ``roll_first`` the map is rolled before it is padded (timm's order),
    - ``inverse``: ``(B*h*w,)`` rows such that ``windows[inverse]`` undoes it (reverse, roll back,
      crop),
    - ``padding``: boolean ``(B*nW*N,)``, True at the padding rows (to be zeroed), or ``None``.

    Pure index arithmetic. Cached: the result depends on sizes only; callers must not modify the
    returned tensors.
    """
    hp, wp = padded_size((h, w), window)
    # The roll is cyclic over the padded length, or over the map's own with roll_first.
    period_h, period_w = (h, w) if roll_first else (hp, wp)
    # forward: window-order position (row i, col j of the padded, rolled map) -> source token
    i, j = torch.arange(hp, device=device), torch.arange(wp, device=device)
    rows, cols = (i + shift[0]) % period_h, (j + shift[1]) % period_w
    if roll_first:
        valid = (i[:, None] < h) & (j[None, :] < w)
    else:
        valid = (rows[:, None] < h) & (cols[None, :] < w)
    source = torch.where(valid, rows[:, None] * w + cols[None, :], 0)
    source = window_partition(source.view(1, hp, wp, 1), window).reshape(-1)
    offsets = torch.arange(batch, device=device)[:, None]
    forward = (source[None] + offsets * (h * w)).reshape(-1)
    # inverse: source token (r, c) sits at padded, rolled position ((r - s0) % period, ...),
    # written with non-negative operands (inductor needs them)
    i = (torch.arange(h, device=device)[:, None] + (period_h - shift[0])) % period_h
    j = (torch.arange(w, device=device)[None, :] + (period_w - shift[1])) % period_w
    position = ((i // window) * (wp // window) + j // window) * window * window \
        + (i % window) * window + j % window
    inverse = (position.reshape(1, -1) + offsets * (hp * wp)).reshape(-1)
    padding = None
    if hp != h or wp != w:
        padding = ~window_partition(valid.view(1, hp, wp, 1), window).reshape(-1).repeat(batch)
    return forward, inverse, padding


class _GatherRows(torch.autograd.Function):
    """``out = x[index]`` with the rows where ``zero_out`` is True zeroed, for an ``index`` that
    reaches every row of ``x`` at most once outside ``zero_out``: its gradient is then itself a
    gather, ``grad[back]`` with the rows where ``zero_back`` is True zeroed (no scatter-add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, back: torch.Tensor,
                zero_out: Optional[torch.Tensor], zero_back: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.back, ctx.zero_back = back, zero_back
        return _gather(x, index, zero_out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return _gather(grad, ctx.back, ctx.zero_back), None, None, None, None


def _gather(x: torch.Tensor, index: torch.Tensor, zero: Optional[torch.Tensor]) -> torch.Tensor:
    out = x.index_select(0, index)
    return out if zero is None else out.masked_fill_(zero.unsqueeze(1), 0)


def to_windows(x: torch.Tensor, window: int, shift: Tuple[int, int], roll_first: bool = False
               ) -> torch.Tensor:
    """:attr:`Kernels.to_windows <swinv2_backbone.models.kernels.Kernels>` as one gather (see
    :func:`window_gather_index`)."""
    b, h, w, c = x.shape
    forward, inverse, padding = window_gather_index(b, h, w, window, shift, x.device, roll_first)
    rows = _GatherRows.apply(x.reshape(-1, c), forward, inverse, padding, None)
    return rows.view(b, -1, window * window, c)


def from_windows(windows: torch.Tensor, window: int, h: int, w: int, shift: Tuple[int, int],
                 roll_first: bool = False) -> torch.Tensor:
    """Inverse of :func:`to_windows` (merge, roll back, crop), as one gather."""
    b, _, _, c = windows.shape
    forward, inverse, padding = window_gather_index(b, h, w, window, shift, windows.device, roll_first)
    return _GatherRows.apply(windows.reshape(-1, c), inverse, forward, None, padding).view(b, h, w, c)
