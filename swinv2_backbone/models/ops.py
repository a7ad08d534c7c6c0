"""Pure tensor plumbing for shifted-window attention: padding, window partition, shift masks and the
log-spaced relative-coordinate table of the continuous position bias.

Every function here is stateless; feature maps are channels-last ``(B, H, W, C)`` tensors.
"""
from __future__ import annotations

import contextlib
import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..compat import autocast_dtype, autocast_enabled, is_compiling

#: Additive value the official SwinV2 uses for masked (cross-region) attention logits. It is finite on
#: purpose: the published weights were trained with it, so parity needs the same value.
MASK_VALUE = -100.0

#: A size: an int, or a symbolic size (``torch.SymInt``) while a dynamic-shape trace runs.
Size = Union[int, torch.SymInt]
#: A shift along one axis: an int, or a 0-d int64 tensor where it was decided from a symbolic size.
Offset = Union[int, torch.Tensor]


def padded_size(hw: Tuple[Size, Size], window: int) -> Tuple[Size, Size]:
    """``(H, W)`` rounded up to multiples of ``window``: the map size windows are laid on. Written
    as ``window * ceil(H / window)`` so that a trace on symbolic sizes can tell it is a multiple of
    the window (the window partition's views need that)."""
    return tuple(window * ((n + window - 1) // window) for n in hw)


def symbolic(size: Size) -> bool:
    """Whether a size may change without a new trace: a ``torch.SymInt`` of a dynamic-shape trace,
    or any size under ``torch.compile`` (dynamo hands symbolic sizes to Python as ints, and a test of
    their value becomes a guard that recompiles on other sizes)."""
    return not isinstance(size, int) or is_compiling()


def static_zero(*amounts: Size) -> bool:
    """Whether every amount is a plain ``0``. Symbolic sizes (:func:`symbolic`) never count as zero
    here, so no trace takes a guard on them: the padding they decide stays in the graph (a pad by
    zero is a no-op there)."""
    return not any(symbolic(a) for a in amounts) and all(a == 0 for a in amounts)


def pad_to(x: torch.Tensor, hp: Size, wp: Size) -> torch.Tensor:
    """Zero-pad a ``(B, H, W, C)`` map at the bottom/right to ``hp x wp`` (not smaller than it)."""
    _, h, w, _ = x.shape
    if not static_zero(hp - h, wp - w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    return x


def pad_to_multiple(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad a ``(B, H, W, C)`` map at the bottom/right so H and W are multiples of ``window``."""
    return pad_to(x, *padded_size(tuple(x.shape[1:3]), window))


def stage_sizes(hw: Tuple[Size, Size], patch_size: int, stages: int) -> List[Tuple[Size, Size]]:
    """Each stage's map size for an ``H x W`` input: ``ceil(H / (patch_size * 2**i))`` rows.

    Each is computed from the input size, not by halving the previous stage's (equal values): a
    trace on symbolic sizes then holds one short expression per stage instead of roundings nested
    as deep as the stage, which ``torch.export``, its ONNX conversion and the loading of a ``.pt2``
    spend their time simplifying (docs/speed.md, "Export time")."""
    strides = [patch_size * 2 ** i for i in range(stages)]
    return [tuple((n + s - 1) // s for n in hw) for s in strides]


def crop(x: torch.Tensor, h: Size, w: Size) -> torch.Tensor:
    """The top-left ``h x w`` of a ``(B, H, W, C)`` map. Symbolic sizes take a gather: a slice
    would make the trace prove ``h <= H``, which its solver cannot for a padded ``H``."""
    if not (symbolic(h) or symbolic(w)):
        return x[:, :h, :w]
    rows = torch.arange(h, device=x.device)
    return x.index_select(1, rows).index_select(2, torch.arange(w, device=x.device))


def index_scalar(n: Union[Size, torch.Tensor], device: torch.device) -> torch.Tensor:
    """``n`` (an int, a symbolic size or a 0-d tensor) as a 0-d int64 tensor: index arithmetic on
    it stays tensor arithmetic, which every exporter translates, where arithmetic on a symbolic
    size may not be."""
    if isinstance(n, torch.Tensor):
        return n.to(device=device, dtype=torch.int64)
    return torch.scalar_tensor(n, dtype=torch.int64, device=device)


def roll(x: torch.Tensor, shift: Tuple[Offset, Offset], dims: Tuple[int, int]) -> torch.Tensor:
    """``torch.roll(x, shift, dims)``; a shift given as a 0-d tensor (decided from a symbolic size
    while tracing) is done as a gather, ``out[i] = x[(i - s) mod n]``."""
    if all(isinstance(s, int) for s in shift):
        return torch.roll(x, shift, dims)
    for s, d in zip(shift, dims):
        n = x.shape[d]
        source = torch.arange(n, device=x.device) - index_scalar(s, x.device)
        x = x.index_select(d, torch.remainder(source, index_scalar(n, x.device)))
    return x


def dense(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``x`` (a permuted view). Unlike ``contiguous()``, which returns ``x``
    itself where it happens to be contiguous already, this decides nothing from the sizes, so a
    trace on symbolic sizes takes no guard on them."""
    return x.clone(memory_format=torch.contiguous_format)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` with H, W multiples of ``window`` -> ``(B, nW, window*window, C)``.

    Windows are ordered row-major over the map, tokens row-major inside a window (the official order).
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return dense(x.permute(0, 1, 3, 2, 4, 5)).view(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: Size, w: Size) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, nW, window*window, C)`` windows of the map
    ``(h, w)`` padded to window multiples -> that padded ``(B, Hp, Wp, C)`` map."""
    b, _, _, c = windows.shape
    hp, wp = padded_size((h, w), window)
    x = windows.view(b, hp // window, wp // window, window, window, c)
    return dense(x.permute(0, 1, 3, 2, 4, 5)).view(b, hp, wp, c)


def _region_ids(length: Size, window: int, shift: Offset, device: torch.device) -> torch.Tensor:
    """Region label of each position along one padded axis after a cyclic shift by ``shift``: 0
    before the last window, 1 in it up to the last ``shift`` positions, 2 there. Labels change only
    at window borders where ``shift`` is 0, so they then mask nothing."""
    position = torch.arange(length, device=device)
    end = index_scalar(length, device)
    return (position >= end - window).long() + (position >= end - index_scalar(shift, device)).long()


def shift_window_mask(
    h: Size, w: Size, window: int, shift: Tuple[Offset, Offset], device: torch.device
) -> torch.Tensor | None:
    """Boolean ``(nW, N, N)`` mask, True where two tokens of a window come from different regions of
    the padded ``h x w`` map rolled by ``shift`` (rows, cols); ``None`` when nothing is shifted
    (known without a trace: shifts given as tensors always get a mask, all False where they are 0)."""
    if static_zero(*shift):
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


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``p`` and rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


def inverse_norm(x: torch.Tensor, scale: Optional[torch.Tensor] = None,
                 cap_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``scale / max(||x||, 1e-12)`` over the last dim, computed in fp32 (fp64 for fp64 ``x``),
    capped at the largest value of ``cap_dtype`` (default ``x``'s dtype) that the computing dtype
    holds, and returned in ``x``'s dtype. For the all-zero rows of padded tokens the factor would
    overflow fp16 (in the forward, or in the gradient once cast back); a capped factor still gives
    the zero row ``F.normalize`` gives."""
    compute = torch.promote_types(x.dtype, torch.float32)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=compute)
    inv = (1.0 if scale is None else scale.to(compute)) / norm.clamp_min(1e-12)
    cap = min(torch.finfo(cap_dtype or x.dtype).max, torch.finfo(compute).max)
    return inv.clamp_max(cap).to(x.dtype)


def _autocast_on(x: torch.Tensor) -> bool:
    return x.device.type in ("cpu", "cuda") and autocast_enabled(x.device.type)


def autocast_off(x: torch.Tensor):
    """A context that disables autocast on ``x``'s device where it is on (else a no-op)."""
    return torch.autocast(x.device.type, enabled=False) if _autocast_on(x) else contextlib.nullcontext()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a Linear on ``x`` computes in: the autocast dtype where autocast is on."""
    return autocast_dtype(x.device.type) if _autocast_on(x) else x.dtype
