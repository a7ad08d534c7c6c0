"""Modules of the heads that do not trace for a range of sizes, and their exact stand-ins used only
while exporting.

``nn.AdaptiveAvgPool2d`` (UPerNet's pyramid pooling) is decomposed by the tracer into gathers whose
kernel extent is fixed at the traced size: at other sizes the exported graph reads out of bounds or
averages the wrong pixels. :class:`PoolByMatrices` computes the same bins with averaging matrices
built from the input's size inside the graph.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Tuple

import torch
from torch import nn


def bin_matrix(length: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, length)`` averaging matrix of adaptive pooling along one axis: row ``i`` holds
    ``1 / size`` over ``[floor(i * length / bins), ceil((i + 1) * length / bins))``, as
    ``adaptive_avg_pool`` defines its bins."""
    position = torch.arange(length, device=like.device)
    index = torch.arange(bins, device=like.device)[:, None]
    start = torch.div(index * length, bins, rounding_mode="floor")
    stop = torch.div((index + 1) * length + bins - 1, bins, rounding_mode="floor")
    inside = (position[None, :] >= start) & (position[None, :] < stop)
    return inside.to(like.dtype) / (stop - start).to(like.dtype)


class PoolByMatrices(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` as ``rows @ x @ cols^T`` with the averaging matrices
    of :func:`bin_matrix`.

    Args:
        output_size: The pooled ``(height, width)`` (an int for both; ``None`` keeps that side).
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.output_size
        out_h, out_w = (size, size) if isinstance(size, int) else size
        h, w = x.shape[-2:]
        rows = bin_matrix(h, out_h if out_h is not None else h, x)
        cols = bin_matrix(w, out_w if out_w is not None else w, x)
        # Broadcast products summed (not matmul, whose batching would guard on a side of 1): the
        # pooled maps are small, at most (N, C, out, H, W) values in between.
        x = (x[..., None, :, :] * rows[:, :, None]).sum(-2)  # (N, C, out_h, W)
        return (x[..., None, :] * cols).sum(-1)  # (N, C, out_h, out_w)


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[int]:
    """Swap every ``nn.AdaptiveAvgPool2d`` of ``model`` for :class:`PoolByMatrices` while the
    ``with`` block runs (yields how many); the originals are put back afterwards."""
    swapped: List[Tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.AdaptiveAvgPool2d:
                swapped.append((parent, name, child))
    try:
        for parent, name, child in swapped:
            setattr(parent, name, PoolByMatrices(child.output_size))
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
