"""The MLP of a block with its GELU output recomputed in the backward pass rather than stored
(less activation memory, same gradients), and the inference MLP with GELU fused into ``fc1`` through
oneDNN. Reference: :func:`swinv2_backbone.models.kernels.mlp`."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..ops import autocast_off, compute_dtype
from . import chunked
from .onednn import linear, linear_forward


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b``, in place, with ``acc`` possibly wider than ``a`` and ``b``."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(a.mm(b))


class _GeluMlp(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` for training: only the ``fc1`` output is saved (the GELU output is
    recomputed in the backward pass: ``4C`` fewer values per token and block), and both passes run
    ``step`` tokens at a time, so the ``4C``-wide temporaries (GELU output, its gradient) stay a few
    MiB, reused and cache-resident, rather than map-sized (see :mod:`.chunked` for why that matters
    on CPU).

    Under autocast both passes compute in the autocast dtype, as ``F.linear`` would; weight and bias
    gradients are accumulated over the chunks in fp32 and returned in the parameters' dtypes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                w2: torch.Tensor, b2: Optional[torch.Tensor], step: int) -> torch.Tensor:
        dtype = compute_dtype(x)
        rows = x.numel() // x.shape[-1]
        x2 = x.reshape(rows, x.shape[-1]).to(dtype)
        w1c, w2c = w1.to(dtype), w2.to(dtype)
        b1c = None if b1 is None else b1.to(dtype)
        b2c = None if b2 is None else b2.to(dtype)
        out = x2.new_empty(rows, w2.shape[0])
        hidden = []
        with autocast_off(x):
            for start in range(0, rows, step):
                hidden.append(linear_forward(x2[start:start + step], w1c, b1c))
                out[start:start + step] = linear_forward(F.gelu(hidden[-1]), w2c, b2c)
        ctx.save_for_backward(x, w1, w2, *hidden)
        ctx.has_bias = (b1 is not None, b2 is not None)
        return out.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, w1, w2, *hidden = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        dtype, step = hidden[0].dtype, hidden[0].shape[0]  # every chunk but the last has step rows
        rows = x.numel() // x.shape[-1]
        x2 = x.reshape(rows, x.shape[-1]).to(dtype)
        grad2 = grad_out.reshape(rows, grad_out.shape[-1]).to(dtype)
        # linear_forward() takes (out, in) weights: these give hidden @ w2 and hidden @ w1
        w1t, w2t = w1.to(dtype).t(), w2.to(dtype).t()  # views: see onednn.onednn_linear
        acc = dict(dtype=torch.float32, device=x.device)
        grad_w1 = torch.zeros(w1.shape, **acc) if need_w1 else None
        grad_w2 = torch.zeros(w2.shape, **acc) if need_w2 else None
        grad_b1 = torch.zeros(w1.shape[0], **acc) if need_b1 and ctx.has_bias[0] else None
        grad_x = x2.new_empty(x2.shape) if need_x else None
        for hid, start in zip(hidden, range(0, rows, step)):
            grad = grad2[start:start + step]
            if grad_w2 is not None:
                _accumulate(grad_w2, grad.t(), F.gelu(hid))
            if not (need_x or need_w1 or need_b1):
                continue
            grad_hid = torch.ops.aten.gelu_backward(linear_forward(grad, w2t), hid)
            if grad_w1 is not None:
                _accumulate(grad_w1, grad_hid.t(), x2[start:start + step])
            if grad_b1 is not None:
                grad_b1.add_(grad_hid.sum(0, dtype=torch.float32))
            if grad_x is not None:
                grad_x[start:start + step] = linear_forward(grad_hid, w1t)
        grad_b2 = grad2.sum(0, dtype=torch.float32) if need_b2 and ctx.has_bias[1] else None
        return (None if grad_x is None else grad_x.view(x.shape).to(x.dtype),
                None if grad_w1 is None else grad_w1.to(w1.dtype),
                None if grad_b1 is None else grad_b1.to(w1.dtype),
                None if grad_w2 is None else grad_w2.to(w2.dtype),
                None if grad_b2 is None else grad_b2.to(w2.dtype), None)


def mlp(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear, dropout: float) -> torch.Tensor:
    """:attr:`Kernels.mlp <swinv2_backbone.models.kernels.Kernels>`: the recomputing MLP where a
    gradient is needed and no dropout is active, else the two Linears through :func:`.onednn.linear`."""
    if torch.is_grad_enabled() and dropout == 0:
        step = chunked.CHUNK_TOKENS if x.device.type == "cpu" else max(x.numel() // x.shape[-1], 1)
        return _GeluMlp.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, step)
    hidden = F.dropout(linear(x, fc1.weight, fc1.bias, "gelu"), dropout, dropout > 0)
    return F.dropout(linear(hidden, fc2.weight, fc2.bias), dropout, dropout > 0)
