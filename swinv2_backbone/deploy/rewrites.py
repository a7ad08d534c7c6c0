"""What an export traces in place of modules and kernels that do not trace for a range of sizes, or
that a runtime runs slowly as traced: exact stand-ins, used only while exporting (:func:`traceable`).

``nn.AdaptiveAvgPool2d`` (UPerNet's pyramid pooling) is decomposed by the tracer into gathers whose
kernel extent is fixed at the traced size: at other sizes the exported graph reads out of bounds or
averages the wrong pixels. :class:`PoolByMatrices` computes the same bins with averaging matrices
built from the input's size inside the graph.

OpenVINO runs the reference attention and the model's LayerNorms slower than the same math written
its way (docs/speed.md, "The graph OpenVINO runs fastest"): a rank-5 permute of q, k and v together
takes its generic transpose kernel, a rank-5 mask addition keeps the attention's
MatMul-Softmax-MatMul from fusing, and a LayerNorm over a rank-4 map runs as several nodes where one
over rank-3 tokens runs as one. :data:`GRAPH` (the kernels traces take) and :class:`TokenLayerNorm`
write the same math in rank 4 and rank 3.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models import kernels
from ..models.kernels import AttentionArgs, Kernels
from ..models.ops import dense, inverse_norm


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


class TokenLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension that normalises an input of rank above 3 as
    ``(B, tokens, C)`` rows and gives it back in its shape: the same rows, so the same values.

    Args:
        norm: The LayerNorm whose parameters (the same tensors, under the same names) it uses.
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__(norm.normalized_shape, norm.eps, elementwise_affine=False)
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() <= 3:
            return super().forward(x)
        # A contiguous copy first: flattening a view (a cropped map) would make the trace decide
        # from the sizes whether a view suffices. Exporters write the copy as nothing.
        return super().forward(dense(x).flatten(1, -2)).view(x.shape)


def graph_attention(windows: torch.Tensor, mask: torch.Tensor, args: AttentionArgs) -> torch.Tensor:
    """The reference window attention (:func:`swinv2_backbone.models.kernels.attention`) in rank 4:
    q, k and v projected apart (three products with the thirds of the qkv weight: no rank-5 permute,
    no split), ``(B*nW, heads, N, ·)`` products and the mask expanded to that rank. fp32 alone (the
    dtype exports run in); other dtypes and active dropout take the reference."""
    if windows.dtype != torch.float32 or args.dropout > 0:
        return kernels.attention(windows, mask, args)
    b, nw, n, c = windows.shape
    h, d = args.num_heads, c // args.num_heads
    weight = args.qkv.weight
    bias = args.qkv_bias if args.qkv_bias is not None else args.qkv.bias

    def heads(i: int) -> torch.Tensor:  # (B*nW, heads, N, d)
        # Sliced, not chunked: for a Split of a weight the exporter logs a line per block
        # (runtimes fold either at load).
        rows = slice(i * c, (i + 1) * c)
        out = F.linear(windows, weight[rows], None if bias is None else bias[rows])
        return out.view(b * nw, n, h, d).transpose(1, 2)

    q, k = heads(0), heads(1)
    if args.cosine:
        # k divided by its norm rather than multiplied by the inverse: OpenVINO (2026.4) fuses the
        # attention into ScaledDotProductAttention when converting to IR and takes a Multiply on
        # the keys for its scalar scale, which a per-row factor is not.
        q = q * inverse_norm(q, args.q_scale)
        k = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(1e-12)
    else:
        q = q * args.q_scale
    # The mask copied out to every window of the batch (a reshape of the expanded view would make
    # the trace decide from the batch size whether it can stay a view); a runtime folds it for a
    # fixed size.
    mask = dense(mask.expand(b, nw, h, n, n)).view(b * nw, h, n, n)
    logits = torch.matmul(q, k.transpose(-2, -1)) + mask
    out = torch.matmul(logits.softmax(dim=-1), heads(2))
    return out.transpose(1, 2).reshape(b, nw, n, c)


#: The kernels an export traces: the reference with :func:`graph_attention`.
GRAPH = dataclasses.replace(kernels.REFERENCE, name="graph", attention=graph_attention)


def _stand_in(module: nn.Module) -> Optional[nn.Module]:
    """The export stand-in of ``module``, or ``None`` where it traces as it is."""
    if type(module) is nn.AdaptiveAvgPool2d:
        return PoolByMatrices(module.output_size)
    if type(module) is nn.LayerNorm and len(module.normalized_shape) == 1:
        return TokenLayerNorm(module)
    return None


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[int]:
    """Swap every ``nn.AdaptiveAvgPool2d`` of ``model`` for :class:`PoolByMatrices` and every
    ``nn.LayerNorm`` over one dimension for :class:`TokenLayerNorm`, and have traces take
    :data:`GRAPH`, while the ``with`` block runs (yields how many modules were swapped); the
    originals are put back afterwards."""
    swapped: List[Tuple[nn.Module, str, nn.Module, nn.Module]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            stand_in = _stand_in(child)
            if stand_in is not None:
                swapped.append((parent, name, child, stand_in))
    try:
        for parent, name, _, stand_in in swapped:
            setattr(parent, name, stand_in)
        with kernels.traced_with(GRAPH):
            yield len(swapped)
    finally:
        for parent, name, child, _ in swapped:
            setattr(parent, name, child)
