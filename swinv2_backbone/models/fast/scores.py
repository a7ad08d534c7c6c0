"""Attention scores with the mask added inside the GEMM. Reference:
:func:`swinv2_backbone.models.kernels.scores`."""
from __future__ import annotations

import torch


def scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:attr:`Kernels.scores <swinv2_backbone.models.kernels.Kernels>` for contiguous inputs. For one
    image the mask is added inside the GEMM (``baddbmm``), saving a pass over the ``N x N`` scores;
    otherwise in place (the matmul's backward does not need its output)."""
    b, nw, h, n, d = q.shape
    if b == 1:
        full = mask.expand(nw, h, n, n).reshape(nw * h, n, n)
        return torch.baddbmm(full, q.view(nw * h, n, d),
                             k.view(nw * h, n, d).transpose(1, 2)).view(1, nw, h, n, n)
    return torch.matmul(q, k.transpose(-2, -1)).add_(mask)
