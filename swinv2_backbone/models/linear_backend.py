"""Linear layers at inference on CPU through oneDNN.

On some CPUs (AMD EPYC among them) the fp32 GEMM behind ``F.linear`` takes an AVX2 path while oneDNN
runs AVX-512. ``torch.ops.mkldnn._linear_pointwise`` is oneDNN's linear (with GELU fusable); the op is
private, so it is used only after a capability check and a numerical self-test, and only where no
gradient is needed. Everything else, and any CPU without it, takes ``F.linear``.

Weights are passed as they are, never prepacked into a cached copy: a cache keyed on the weight's
storage goes stale under in-place updates through ``.data`` (EMA swaps, mean teachers), and checking
values would cost as much as packing. (Prepacking measured no faster on this path.)
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

#: ``'auto'``: oneDNN where available and valid (CPU, fp32/bf16, no grad); ``'torch'``: F.linear.
BACKENDS = ("auto", "torch")
_backend = "auto"


def set_backend(name: str) -> None:
    """Choose the Linear backend for inference: one of :data:`BACKENDS`."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"linear backend must be one of {BACKENDS}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The backend chosen with :func:`set_backend`."""
    return _backend


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
        got = onednn_linear(x, w, b, "gelu")
        want = F.gelu(F.linear(x.float(), w.float(), b.float()))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    return got.shape == want.shape and bool(((got.float() - want).abs() <= tol * (1 + want.abs())).all())


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  activation: str = "none") -> torch.Tensor:
    """``activation(x @ weight^T + bias)`` through oneDNN; ``activation`` is 'none' or 'gelu'."""
    shape = x.shape
    out = torch.ops.mkldnn._linear_pointwise(
        x.reshape(-1, shape[-1]), weight, bias, activation, [], "none" if activation == "gelu" else "")
    return out.view(*shape[:-1], out.shape[-1])


def use_onednn(x: torch.Tensor, module: nn.Linear) -> bool:
    """Whether ``module(x)`` may run through oneDNN: CPU, fp32/bf16, no gradient needed, no autocast,
    not inside ``torch.compile`` (which chooses its own GEMMs; the capability check would break the
    graph)."""
    if torch.compiler.is_compiling():
        return False
    return (_backend == "auto" and x.device.type == "cpu" and x.dtype == module.weight.dtype
            and not (torch.is_grad_enabled() and (x.requires_grad or module.weight.requires_grad))
            and not torch.is_autocast_enabled("cpu") and onednn_available(x.dtype))


def linear(x: torch.Tensor, module: nn.Linear, activation: str = "none",
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``activation(module(x))`` (``bias`` replaces the module's own when given), through oneDNN when
    :func:`use_onednn` allows, else ``F.linear``."""
    bias = module.bias if bias is None else bias
    if use_onednn(x, module):
        return onednn_linear(x, module.weight.detach(), None if bias is None else bias.detach(),
                             activation)
    out = F.linear(x, module.weight, bias)
    return F.gelu(out) if activation == "gelu" else out


def describe() -> str:
    """The Linear path used at CPU inference, for benchmark reports."""
    if _backend == "torch":
        return "F.linear (forced)"
    if onednn_available(torch.float32):
        return "oneDNN (torch.ops.mkldnn._linear_pointwise) at CPU inference, F.linear otherwise"
    return "F.linear (oneDNN linear ops unavailable)"
