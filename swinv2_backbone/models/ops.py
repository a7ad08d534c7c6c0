"""Pure tensor plumbing for shifted-window attention: padding, window partition, shift masks and the
log-spaced relative-coordinate table of the continuous position bias.

Every function here is stateless; feature maps are channels-last ``(B, H, W, C)`` tensors.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..compat import DYNAMO_TRACES_AUTOGRAD_FUNCTIONS, autocast_dtype, autocast_enabled, is_compiling

#: Additive value the official SwinV2 uses for masked (cross-region) attention logits. It is finite on
#: purpose: the published weights were trained with it, so parity needs the same value.
MASK_VALUE = -100.0


def padded_size(hw: Tuple[int, int], window: int) -> Tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``window``: the map size windows are laid on."""
    return hw[0] + (-hw[0]) % window, hw[1] + (-hw[1]) % window


def pad_to_multiple(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad a ``(B, H, W, C)`` map at the bottom/right so H and W are multiples of ``window``."""
    _, h, w, _ = x.shape
    hp, wp = padded_size((h, w), window)
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    return x


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` with H, W multiples of ``window`` -> ``(B, nW, window*window, C)``.

    Windows are ordered row-major over the map, tokens row-major inside a window (the official order).
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // window) * (w // window), window * window, c)


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

    Pure index arithmetic (no data-dependent shapes, so ``torch.compile`` traces it). Cached: the
    result depends on sizes only; callers must not modify the returned tensors.
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


def _gather_rows(x: torch.Tensor, index: torch.Tensor, back: torch.Tensor,
                 zero_out: Optional[torch.Tensor], zero_back: Optional[torch.Tensor]) -> torch.Tensor:
    """:class:`_GatherRows`, or the plain differentiable gather where ``torch.compile`` cannot trace
    the Function (:data:`~swinv2_backbone.compat.DYNAMO_TRACES_AUTOGRAD_FUNCTIONS`)."""
    if not DYNAMO_TRACES_AUTOGRAD_FUNCTIONS and is_compiling():
        return _gather(x, index, zero_out)
    return _GatherRows.apply(x, index, back, zero_out, zero_back)


def _gather_index(*args) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """:func:`window_gather_index`; traced without its cache under ``torch.compile``."""
    if is_compiling():
        return window_gather_index.__wrapped__(*args)
    return window_gather_index(*args)


def to_windows(x: torch.Tensor, window: int, shift: Tuple[int, int], roll_first: bool = False
               ) -> torch.Tensor:
    """``(B, h, w, C)`` -> zero-padded to window multiples, rolled by ``-shift`` (before the padding
    with ``roll_first``) and partitioned into ``(B, nW, window*window, C)``, as one gather (see
    :func:`window_gather_index`)."""
    b, h, w, c = x.shape
    forward, inverse, padding = _gather_index(b, h, w, window, shift, x.device, roll_first)
    rows = _gather_rows(x.reshape(-1, c), forward, inverse, padding, None)
    return rows.view(b, -1, window * window, c)


def from_windows(windows: torch.Tensor, h: int, w: int, shift: Tuple[int, int],
                 roll_first: bool = False) -> torch.Tensor:
    """Inverse of :func:`to_windows`: ``(B, nW, N, C)`` -> ``(B, h, w, C)`` (reverse, roll back,
    crop), as one gather."""
    b, _, n, c = windows.shape
    window = math.isqrt(n)
    forward, inverse, padding = _gather_index(b, h, w, window, shift, windows.device, roll_first)
    return _gather_rows(windows.reshape(-1, c), inverse, forward, None, padding).view(b, h, w, c)


def _region_ids(length: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region label of each position along one padded axis after a cyclic shift by ``shift``."""
    ids = torch.zeros(length, dtype=torch.int64, device=device)
    if shift > 0:
        ids[length - window:length - shift] = 1
        ids[length - shift:] = 2
    return ids


def shift_window_mask(
    h: int, w: int, window: int, shift: Tuple[int, int], device: torch.device
) -> torch.Tensor | None:
    """Boolean ``(nW, N, N)`` mask, True where two tokens of a window come from different regions of
    the padded ``h x w`` map rolled by ``shift`` (rows, cols); ``None`` when nothing is shifted."""
    if shift[0] == 0 and shift[1] == 0:
        return None
    rows = _region_ids(h, window, shift[0], device)
    cols = _region_ids(w, window, shift[1], device)
    region = (rows[:, None] * 3 + cols[None, :]).view(1, h, w, 1)
    region = window_partition(region, window).squeeze(-1).squeeze(0)  # (nW, N)
    return region[:, :, None] != region[:, None, :]


def relative_coords_table(window: int, pretrained_window: int) -> torch.Tensor:
    """Log-spaced relative coordinates ``((2w-1)^2, 2)`` fed to the continuous position bias MLP.

    Coordinates are normalised by ``pretrained_window - 1`` when a pretrained window is given
    (``> 0``), else by ``window - 1``; both are guarded so a window of 1 gives zeros, not NaN.
    """
    coords = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1)
    norm = pretrained_window - 1 if pretrained_window > 0 else window - 1
    table = table / max(norm, 1) * 8.0
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8.0)
    return table.view(-1, 2)


def relative_position_index(window: int) -> torch.Tensor:
    """``(N, N)`` index into the ``(2w-1)^2`` table for every pair of tokens of a window."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def _autocast_on(x: torch.Tensor) -> bool:
    return x.device.type in ("cpu", "cuda") and autocast_enabled(x.device.type)


def autocast_off(x: torch.Tensor):
    """A context that disables autocast on ``x``'s device where it is on (else a no-op)."""
    return torch.autocast(x.device.type, enabled=False) if _autocast_on(x) else contextlib.nullcontext()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a Linear on ``x`` computes in: the autocast dtype where autocast is on."""
    return autocast_dtype(x.device.type) if _autocast_on(x) else x.dtype
