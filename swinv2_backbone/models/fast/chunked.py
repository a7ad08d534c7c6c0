"""Inference of a block a few thousand tokens at a time, in place.

Every temporary of the block (the attention's ``N x N`` scores, the MLP's ``4C`` hidden layer)
then stays a few MiB, reused by the allocator and cache-resident, instead of map-sized: on CPU every
fresh map-sized temporary costs page faults on first touch. Applies only where no gradient is
needed and no stochastic layer is active. Reference: the block's own forward
(:meth:`swinv2_backbone.models.layers.SwinBlock.forward` with the reference kernels). Both block
versions take it: the block's ``branch_input`` / ``branch_output`` place its norms (V1 pre-norm,
V2 res-post-norm).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ...compat import is_compiling
from .windows import from_windows, to_windows

#: A chunk holds at most ``CHUNK_TOKENS`` tokens, and a map is split into at least ``CHUNK_SPLIT``
#: chunks unless that would make them smaller than ``MIN_CHUNK_TOKENS``: the chunk temporaries
#: (about 5 KiB per token) then stay a small share of the map's own memory at every input size, so
#: peak memory grows linearly with the pixels.
CHUNK_TOKENS = 2048
CHUNK_SPLIT = 8
MIN_CHUNK_TOKENS = 256


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


def chunkable(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether the chunked path applies to ``block`` on ``x``: eval mode (no dropout, no drop path),
    nothing needs a gradient, not inside ``torch.compile`` (which fuses the block its own way)."""
    if block.training or is_compiling():
        return False
    return not (torch.is_grad_enabled()
                and (x.requires_grad or any(p.requires_grad for p in block.parameters())))


def block_inference(block: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """:attr:`Kernels.block <swinv2_backbone.models.kernels.Kernels>`: the block chunk by chunk
    where :func:`chunkable`, else ``None``.

    The attention half runs in window order; the MLP half, after the crop, on the real tokens only,
    so no work is spent on padding. Each half is its own function so that its map-sized buffers are
    freed as it returns.
    """
    if not chunkable(block, x):
        return None
    x = _attention_half(block, x)  # a fresh tensor: updated in place by the MLP half
    tokens = x.view(-1, x.shape[-1])
    step = chunk_rows(tokens.shape[0], 1)
    for start in range(0, tokens.shape[0], step):
        chunk = tokens[start:start + step]
        chunk.add_(block.mlp_branch(chunk))
    return x


def _attention_half(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` plus the attention branch, window chunk by window chunk, as a new map.

    A pre-norm block normalises each chunk itself; the padding tokens, which the reference pads
    after the norm, are zeroed again there (``valid`` marks the real tokens in window order)."""
    b, h, w, c = x.shape
    window, shift, mask = block.window_layout(x)
    windows = to_windows(x, window, shift, block.roll_first)  # fresh: updated chunk by chunk
    nw, n = windows.shape[1:3]
    flat = windows.view(b * nw, n, c)
    valid = None
    if block.pre_norm and (h % window or w % window):
        valid = to_windows(x.new_ones(1, h, w, 1), window, shift, block.roll_first)[0]  # (nW, N, 1)
    step = chunk_rows(b * nw, n)
    for start in range(0, b * nw, step):
        stop = min(start + step, b * nw)
        chunk = flat[start:stop]
        inputs = block.branch_input(block.norm1, chunk)
        if valid is not None:
            inputs = inputs * _mask_rows(valid, start, stop, nw)
        attn = block.attn(inputs.unsqueeze(0), _mask_rows(mask, start, stop, nw))[0]
        chunk.add_(block.branch_output(block.norm1, attn))  # the attention has read the chunk already
    return from_windows(windows, h, w, shift, block.roll_first)
