"""Linear layers on CPU through oneDNN, forward and backward.

On some CPUs (AMD EPYC among them) the fp32 GEMM behind ``F.linear`` takes an AVX2 path while oneDNN
runs AVX-512. ``torch.ops.mkldnn._linear_pointwise`` is oneDNN's linear (with GELU fusable); the op is
private, so it is used only after a capability check and a numerical self-test. Where a gradient is
needed, :class:`_OnednnLinear` runs the forward and the input gradient through it and the weight
gradient as one ``mm``. Autocast, other devices, and any CPU without the op take ``F.linear``. Reference: :func:`swinv2_backbone.models.kernels.linear`.

Weights are passed as they are, never prepacked into a cached copy: a cache keyed on the weight's
storage goes stale under in-place updates through ``.data`` (EMA swaps, mean teachers), and checking
values would cost as much as packing.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ...compat import autocast_enabled

@functools.lru_cache(maxsize=None)
def onednn_available(dtype: torch.dtype) -> bool:
    """Whether the private oneDNN linear ops exist here and agree with ``F.linear`` for ``dtype``."""
    if dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(64, 48, generator=gen).to(dtype)
        w = torch.randn(40, 48, generator=gen).to(dtype)
        b = torch.randn(40, generator=gen).to(dtype)
        wt = torch.randn(48, 40, generator=gen).to(dtype).t()  # a transposed view, as backward passes
        got = [onednn_linear(x, w, b, "gelu"), onednn_linear(x, wt, None)]
        want = [F.gelu(F.linear(x.float(), w.float(), b.float())), F.linear(x.float(), wt.float())]
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    return all(g.shape == v.shape and bool(((g.float() - v).abs() <= tol * (1 + v.abs())).all())
               for g, v in zip(got, want))


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  activation: str = "none") -> torch.Tensor:
    """``activation(x @ weight^T + bias)`` through oneDNN; ``activation`` is 'none' or 'gelu'.
    ``weight`` may have any strides: oneDNN reorders it into its own blocked layout on every call
    anyway, and reads a transposed view as fast as a contiguous one, so the backward passes
    ``weight.t()`` as it is rather than paying for a transposing copy first."""
    shape = x.shape
    out = torch.ops.mkldnn._linear_pointwise(
        x.reshape(-1, shape[-1]), weight, bias, activation, [], "none" if activation == "gelu" else "")
    return out.view(*shape[:-1], out.shape[-1])


def onednn_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight^T`` may run through oneDNN: CPU, fp32/bf16 with ``x`` in the weight's
    dtype, no autocast."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype and not autocast_enabled("cpu")
            and onednn_available(x.dtype))


def linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   activation: str = "none") -> torch.Tensor:
    """``activation(x @ weight^T + bias)`` outside autograd (inference, or inside an autograd
    Function): oneDNN where :func:`onednn_usable` allows, else ``F.linear``."""
    if onednn_usable(x, weight):
        return onednn_linear(x, weight, bias, activation)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else out


class _OnednnLinear(torch.autograd.Function):
    """``x @ weight^T + bias`` through oneDNN with its backward: the input gradient through oneDNN
    too, the weight gradient as one ``mm`` (which takes the transposed operands as they are)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
                ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad2 = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = onednn_linear(grad2, weight.t(), None).view(x.shape)
        if need_w:
            grad_w = grad2.t().mm(x.reshape(-1, x.shape[-1]))
        if need_b and ctx.has_bias:
            grad_b = grad2.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: str = "none") -> torch.Tensor:
    """``activation(x @ weight^T + bias)`` through oneDNN (forward and backward) where :func:`onednn_usable` allows, else ``F.linear``."""
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    if needs_grad and onednn_usable(x, weight):
        out = _OnednnLinear.apply(x, weight, bias)
        return F.gelu(out) if activation == "gelu" else out
    return linear_forward(x, weight, bias, activation)


def linear_layer(x: torch.Tensor, layer: nn.Linear, bias: Optional[torch.Tensor] = None
                 ) -> torch.Tensor:
    """:attr:`Kernels.linear <swinv2_backbone.models.kernels.Kernels>`: :func:`linear` with the
    layer's weight, and ``bias`` or else the layer's own."""
    return linear(x, layer.weight, layer.bias if bias is None else bias)
