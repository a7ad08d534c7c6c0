"""Pure tensor plumbing for shifted-window attention: padding, window partition, shift masks and the
log-spaced relative-coordinate table of the continuous position bias.

Every function here is stateless; feature maps are channels-last ``(B, H, W, C)`` tensors.
"""
from __future__ import annotations

import contextlib
import math
from typing import Tuple

import torch
import torch.nn.functional as F

from ..compat import autocast_dtype, autocast_enabled

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


def window_reverse(windows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, nW, N, C)`` windows of the map ``(h, w)`` padded
    to window multiples -> that padded ``(B, Hp, Wp, C)`` map."""
    b, _, n, c = windows.shape
    window = math.isqrt(n)
    hp, wp = padded_size((h, w), window)
    x = windows.view(b, hp // window, wp // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)


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
