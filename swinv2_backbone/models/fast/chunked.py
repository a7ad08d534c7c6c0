"""Inference of a block a few thousand tokens at a time, in place.

Every temporary of the block (the attention's ``N x N`` scores, the MLP's ``4C`` hidden layer)
then stays a few MiB, reused by the allocator and cache-resident, instead of map-sized: on CPU every
fresh map-sized temporary costs page faults on first touch. Applies only where no gradient is
needed and no dropout is active; an active drop path is drawn exactly as the block's own forward
draws it (one Bernoulli draw per image and branch, attention branch first), so a training-mode
forward without gradients (the first pass of :mod:`.recompute`) consumes the same random numbers
and gives the same result. Reference: the reference block kernel
(:func:`swinv2_backbone.models.kernels.block`). Both block versions take it: the
:class:`~swinv2_backbone.models.kernels.BlockParts` place their norms (V1 pre-norm, V2
res-post-norm).
"""
from __future__ import annotations

from typing import Optional

import torch
from .. import kernels
from ..kernels import BlockParts
from .windows import from_windows, to_windows

#: A chunk holds at most ``CHUNK_TOKENS`` tokens, and a map is split into at least ``CHUNK_SPLIT``
#: chunks unless that would make them smaller than ``MIN_CHUNK_TOKENS``: the chunk temporaries
#: (about 5 KiB per stage-1 token) then stay a small share of the map's own memory, so peak memory
#: grows linearly with the pixels, plus at most one minimum chunk's temporaries on small inputs.
#: The minimum is set by speed: chunks of a few hundred tokens (stage 3 at 512x512 in chunks of
#: 256) make every Linear and attention operation of the chunk loop several short calls, and slowed
#: the whole forward by 6-10 % against chunks of 1024.
CHUNK_TOKENS = 2048
CHUNK_SPLIT = 8
MIN_CHUNK_TOKENS = 1024


def chunk_rows(rows: int, row_tokens: int) -> int:
    """Rows (windows of ``row_tokens`` tokens, or single tokens) per chunk of a map of ``rows``."""
    tokens = min(CHUNK_TOKENS, max(MIN_CHUNK_TOKENS, -(-rows * row_tokens // CHUNK_SPLIT)))
    return max(1, tokens // row_tokens)


def _mask_rows(mask: torch.Tensor, start: int, stop: int, nw: int) -> torch.Tensor:
    """Rows ``start:stop`` of a per-window ``(nW or 1, ...)`` tensor (a ``(nW or 1, heads, N, N)``
    mask) repeated over the batch, for windows flattened as ``(B * nW)``."""
    if mask.shape[0] == 1:
        return mask
    if start // nw == (stop - 1) // nw:  # within one image: a view
        return mask[start % nw:(stop - 1) % nw + 1]
    return mask.index_select(0, torch.arange(start, stop, device=mask.device) % nw)


def chunkable(parts: BlockParts) -> bool:
    """Whether the chunked path applies to a block: no dropout active, nothing needs a gradient."""
    return not (parts.dropout or parts.recorded)


def _drop_path_factors(p: float, branch: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    """The ``(batch,)`` factors (0 or ``1 / keep``) a drop path of probability ``p`` multiplies one
    branch's output by, drawn as :func:`~swinv2_backbone.models.ops.drop_path` draws them (one
    Bernoulli value per image, in ``branch``'s dtype and device), or ``None`` when ``p`` is 0."""
    if p == 0.0:
        return None
    keep = 1.0 - p
    return branch.new_empty((batch,)).bernoulli_(keep).div_(keep)


def _rows_of(factors: Optional[torch.Tensor], start: int, stop: int, per_image: int
             ) -> Optional[torch.Tensor]:
    """The factors of rows ``start:stop`` of an image-major flattening with ``per_image`` rows per
    image, as a ``(stop - start, 1)`` column (``None`` stays ``None``)."""
    if factors is None:
        return None
    index = torch.arange(start, stop, device=factors.device) // per_image
    return factors.index_select(0, index).unsqueeze(1)


def _add_branch(target: torch.Tensor, branch: torch.Tensor, factors: Optional[torch.Tensor]) -> None:
    """``target += branch`` (times the drop-path ``factors``, one per leading row, when given)."""
    if factors is not None:
        branch = branch * factors.view(-1, *(1,) * (branch.ndim - 1))
    target.add_(branch)


def block_inference(x: torch.Tensor, parts: BlockParts) -> torch.Tensor:
    """:attr:`Kernels.block <swinv2_backbone.models.kernels.Kernels>`: the block chunk by chunk
    where :func:`chunkable`, else the reference.

    The attention half runs in window order; the MLP half, after the crop, on the real tokens only,
    so no work is spent on padding. Each half is its own function so that its map-sized buffers are
    freed as it returns.
    """
    if not chunkable(parts):
        return kernels.block(x, parts)
    x = _attention_half(x, parts)  # a fresh tensor: updated in place by the MLP half
    tokens = x.view(-1, x.shape[-1])
    per_image = tokens.shape[0] // x.shape[0]
    step = chunk_rows(tokens.shape[0], 1)
    factors = None
    for start in range(0, tokens.shape[0], step):
        chunk = tokens[start:start + step]
        branch = parts.mlp_branch(chunk)
        if start == 0:  # drawn once the branch's dtype is known, after the attention branch's
            factors = _drop_path_factors(parts.drop_path, branch, x.shape[0])
        _add_branch(chunk, branch, _rows_of(factors, start, start + chunk.shape[0], per_image))
    return x


def _attention_half(x: torch.Tensor, parts: BlockParts) -> torch.Tensor:
    """``x`` plus the attention branch, window chunk by window chunk, as a new map.

    A pre-norm block normalises each chunk itself; the padding tokens, which the reference pads
    after the norm, are zeroed again there (``valid`` marks the real tokens in window order)."""
    b, h, w, c = x.shape
    window, shift, mask = parts.window, parts.shift, parts.mask
    windows = to_windows(x, window, shift, parts.roll_first)  # fresh: updated chunk by chunk
    nw, n = windows.shape[1:3]
    flat = windows.view(b * nw, n, c)
    valid = None
    if parts.pre_norm and (h % window or w % window):
        valid = to_windows(x.new_ones(1, h, w, 1), window, shift, parts.roll_first)[0]  # (nW, N, 1)
    step = chunk_rows(b * nw, n)
    factors = None
    for start in range(0, b * nw, step):
        stop = min(start + step, b * nw)
        chunk = flat[start:stop]
        inputs = parts.norm1(chunk) if parts.pre_norm else chunk
        if valid is not None:
            inputs = inputs * _mask_rows(valid, start, stop, nw)
        attn = parts.attention(inputs.unsqueeze(0), _mask_rows(mask, start, stop, nw))[0]
        branch = attn if parts.pre_norm else parts.norm1(attn)
        if start == 0:
            factors = _drop_path_factors(parts.drop_path, branch, b)
        # the attention has read the chunk already
        _add_branch(chunk, branch, _rows_of(factors, start, stop, nw))
    return from_windows(windows, window, h, w, shift, parts.roll_first)
