"""Activation checkpointing of a block whose first pass runs without autograd. Reference:
``torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)``
(:func:`swinv2_backbone.models.kernels.recompute`).

torch's checkpoint runs the first pass with autograd on (and drops what it saves): the block takes
its training kernels twice per step. Here the first pass runs under ``no_grad``, so the block takes
its inference path (:mod:`.chunked`: in place, a chunk at a time); the backward pass recomputes the
block with autograd, from the saved input and the random-number state of the first pass (the drop
path's draws), and differentiates it. The block's parameters are inputs of the autograd Function, so
their gradients flow back through it (a block whose input needs no gradient, behind frozen stages,
still gets them, and DDP's gradient hooks fire as usual).
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from ...compat import autocast_dtype, autocast_enabled
from ..blocks import active_dropout


def recompute(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:attr:`Kernels.recompute <swinv2_backbone.models.kernels.Kernels>`: ``block(x)`` saving
    only ``x``, its first pass without autograd; torch's checkpoint where a dropout is active (its
    per-element draws would differ between the two passes' kernels)."""
    if block.training and active_dropout(block):
        return torch_checkpoint(block, x, use_reentrant=False)
    params = tuple(block.parameters())
    return _Recomputed.apply(block, x, *params)


def _rng_states(device: torch.device) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The CPU generator's state, and the CUDA one of ``device`` where it is a CUDA device."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


class _Recomputed(torch.autograd.Function):
    """``block(x)`` whose forward runs without autograd and whose backward recomputes the block
    with it (same random-number state, same autocast) and differentiates that recomputation."""

    @staticmethod
    def forward(ctx: Any, block: nn.Module, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.block = block
        ctx.rng = _rng_states(x.device)
        device_type = x.device.type
        ctx.autocast = (device_type, autocast_enabled(device_type), autocast_dtype(device_type))
        ctx.save_for_backward(x)
        return block(x)  # autograd is off inside an autograd Function's forward

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        (x,) = ctx.saved_tensors
        params = list(ctx.block.parameters())
        needs = ctx.needs_input_grad[1:]
        cpu_state, cuda_state = ctx.rng
        device_type, enabled, dtype = ctx.autocast
        devices = [x.device] if cuda_state is not None else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, x.device)
            inp = x.detach().requires_grad_(needs[0])
            with torch.autocast(device_type, dtype=dtype, enabled=enabled):
                out = ctx.block(inp)
        wanted: List[torch.Tensor] = [t for t, need in zip([inp] + params, needs) if need]
        found = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True))
        return (None,) + tuple(next(found) if need else None for need in needs)
