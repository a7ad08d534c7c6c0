"""Seeded random weights that exercise every parameter: for parity checks and benchmarks.

Fresh initialisations hide mapping errors and make blocks trivial: LayerNorm weights of 1 (timm and
the official code even zero the res-post-norm weights, which turns every block into the identity),
zero biases, one ``logit_scale`` for all heads. :func:`randomize_` overwrites all of them.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter with seeded random, non-trivial values (in place).

    Linear/conv weights ~ N(0, 1/fan_in); LayerNorm weights 1 + N(0, 0.3²), biases N(0, 0.2²);
    ``logit_scale`` uniform in [log 3, log 60] per head; every other parameter N(0, 0.2²).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name.endswith("logit_scale"):
                low, high = math.log(3.0), math.log(60.0)
                value = low + (high - low) * torch.rand(param.shape, generator=gen)
            elif param.ndim >= 2 and not name.endswith(("pos_embed", "position_embeddings", "mask_token")):
                value = noise / math.sqrt(param[0].numel())
            elif _is_norm_weight(module, name):
                value = 1.0 + 0.3 * noise
            else:
                value = 0.2 * noise
            param.copy_(value)
    return module


def _is_norm_weight(root: nn.Module, name: str) -> bool:
    owner, _, leaf = name.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    return isinstance(module, nn.LayerNorm) and leaf == "weight"
