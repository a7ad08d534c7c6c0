"""Faster execution strategies for the model's replaceable operations
(:class:`~swinv2_backbone.models.kernels.Kernels`) and the switch between them and the
reference implementations.

* :mod:`.chunked`: inference of a block a few thousand tokens at a time, in place;
* :mod:`.onednn`: Linear layers through oneDNN on CPU, forward and backward;
* :mod:`.mlp`: the training MLP that recomputes its GELU output in the backward pass;
* :mod:`.windows`: pad + roll + partition (and back) as single row gathers;
* :mod:`.scores`: the mask added inside the score GEMM for one image;
* :mod:`.attention_train`: training attention a chunk of windows at a time, recomputing the
  probabilities in the backward pass;
* :mod:`.recompute`: activation checkpointing whose first pass takes the inference path.

Each applies only where it is valid and otherwise calls the reference kernel itself. They are on by
default in eager execution (a trace takes the reference: :func:`~swinv2_backbone.models.kernels.active`); ``set_fast_paths(False)`` (or ``with fast_paths(False):``) runs the reference instead. The
switch itself lives beside :class:`Kernels` (:func:`~swinv2_backbone.models.kernels.use`), so the
reference modules never import this package.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..kernels import REFERENCE, Kernels, active, use, using
from . import attention_train, chunked, mlp, onednn, recompute, scores, windows

#: The fast strategies (the default: :mod:`swinv2_backbone.models` selects them when imported).
FAST = Kernels("fast", linear=onednn.linear_layer, to_windows=windows.to_windows,
               from_windows=windows.from_windows, scores=scores.scores, mlp=mlp.mlp,
               attention=attention_train.window_attention, block=chunked.block_inference,
               recompute=recompute.recompute)


def set_fast_paths(enabled: bool) -> None:
    """Run the model with :data:`FAST` (``True``, the default) or the reference kernels."""
    if not isinstance(enabled, bool):
        raise TypeError(f"set_fast_paths takes True or False, got {enabled!r}")
    use(FAST if enabled else REFERENCE)


@contextlib.contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """:func:`set_fast_paths` for the duration of a ``with`` block."""
    if not isinstance(enabled, bool):
        raise TypeError(f"fast_paths takes True or False, got {enabled!r}")
    with using(FAST if enabled else REFERENCE):
        yield


def describe() -> str:
    """The kernels in use and the Linear path they take on CPU, for benchmark reports."""
    if active() is not FAST:
        return f"{active().name} kernels (F.linear)"
    if onednn.onednn_available(torch.float32):
        return ("fast kernels; Linear through oneDNN (torch.ops.mkldnn._linear_pointwise) on CPU "
                "without autocast, F.linear otherwise")
    return "fast kernels; F.linear (oneDNN linear ops unavailable)"


__all__ = ["FAST", "REFERENCE", "Kernels", "active", "describe", "fast_paths", "set_fast_paths", "use",
           "using"]
