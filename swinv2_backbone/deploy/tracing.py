"""One traced program of a model for every input size in a range: ``torch.export`` with dynamic
batch, height and width, the reference kernels and no size-dependent branch left in the graph.

The model decides padding, window shifts and masks at every forward; on the symbolic sizes of a
trace it writes those decisions as graph operations (:mod:`swinv2_backbone.models.ops`,
:func:`swinv2_backbone.models.blocks.window_and_shift`), so the program takes no guard on H or W.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Tuple

import torch
from torch import nn

from ..compat import TORCH_RELEASE
from .rewrites import traceable

#: The sizes an export serves unless told otherwise: every side from 32 to 4096 pixels, batches of
#: 1 to 64.
DEFAULT_MIN_SIDE = 32
DEFAULT_MAX_SIDE = 4096
DEFAULT_MAX_BATCH = 64


#: The oldest torch whose ``torch.export`` traces the backbone for a range of sizes (non-strict
#: tracing, size-oblivious 0/1 handling).
EXPORT_RELEASE = (2, 6)


class ExportError(ValueError):
    """A model, setting or input that an export or an exported program cannot take; the message
    says what was wrong and what is allowed."""


@dataclass(frozen=True)
class SizeRange:
    """The inputs one exported program serves: ``(batch, channels, height, width)`` with each of
    batch, height and width inside its bounds (inclusive) and exactly ``channels`` channels.

    Args:
        channels: Input channels.
        min_height: Smallest height.
        min_width: Smallest width.
        max_side: Largest height and width.
        max_batch: Largest batch.
        fixed: Serve ``min_height x min_width`` alone (a graph traced with static height and
            width, whose size arithmetic OpenVINO folds: faster there than a range).
    """

    channels: int
    min_height: int = DEFAULT_MIN_SIDE
    min_width: int = DEFAULT_MIN_SIDE
    max_side: int = DEFAULT_MAX_SIDE
    max_batch: int = DEFAULT_MAX_BATCH
    fixed: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_height <= self.max_side or not 1 <= self.min_width <= self.max_side:
            raise ExportError(f"the size range {self.describe()} is empty: the smallest sides must "
                              f"be between 1 and the largest ({self.max_side})")
        if self.max_batch < 1:
            raise ExportError(f"max_batch must be at least 1, got {self.max_batch}")

    def describe(self) -> str:
        """``N x C x H x W`` with each dimension's range, for messages."""
        if self.fixed:
            return f"(1..{self.max_batch}) x {self.channels} x {self.min_height} x {self.min_width}"
        return (f"(1..{self.max_batch}) x {self.channels} x ({self.min_height}..{self.max_side}) x "
                f"({self.min_width}..{self.max_side})")

    def check(self, shape: Tuple[int, ...]) -> None:
        """Raise :class:`ExportError` unless an input of ``shape`` is served.

        Args:
            shape: The input's shape.
        """
        if len(shape) != 4:
            raise ExportError(f"expected a 4-D (N, C, H, W) input, got shape {tuple(shape)}")
        n, c, h, w = shape
        if c != self.channels:
            raise ExportError(f"expected {self.channels} input channels, got {c} (shape "
                              f"{tuple(shape)})")
        high_h, high_w = (self.min_height, self.min_width) if self.fixed else (self.max_side,) * 2
        if not (1 <= n <= self.max_batch and self.min_height <= h <= high_h
                and self.min_width <= w <= high_w):
            raise ExportError(f"input shape {tuple(shape)} is outside the exported range "
                              f"{self.describe()}")

    def example_shape(self, least_side: int = DEFAULT_MIN_SIDE) -> Tuple[int, int, int, int]:
        """The shape traced: batch 2 and sides of at least ``least_side`` that are no multiple of
        32 (neither 0 nor 1 nor a bound, so no size gets specialised).

        Args:
            least_side: Trace sides above this (a model whose smallest map must not be 1 pixel
                in the trace, or the trace takes that as a fixed size).
        """
        if self.fixed:
            return 2, self.channels, self.min_height, self.min_width
        side = lambda low: min(max(low, least_side) + 37, self.max_side)  # noqa: E731
        return 2, self.channels, side(self.min_height), side(self.min_width) + 24


def size_range(model: nn.Module, channels: int, min_side: int = DEFAULT_MIN_SIDE,
               max_side: int = DEFAULT_MAX_SIDE, max_batch: int = DEFAULT_MAX_BATCH) -> SizeRange:
    """The :class:`SizeRange` an export of ``model`` serves: ``min_side..max_side`` raised, where the
    backbone's ``small_map`` rule shrinks windows on small maps, to the backbone's
    ``traced_input_floor`` (a graph keeps its windows).

    Args:
        model: The model to export; its backbone is ``model`` itself or ``model.backbone``.
        channels: Input channels.
        min_side: Smallest height and width asked for.
        max_side: Largest height and width.
        max_batch: Largest batch.
    """
    backbone = getattr(model, "backbone", model)
    floor_h, floor_w = getattr(backbone, "traced_input_floor", (1, 1))
    return SizeRange(channels, max(min_side, floor_h), max(min_side, floor_w), max_side, max_batch)


@contextlib.contextmanager
def size_oblivious() -> Iterator[None]:
    """Let traces treat sizes of 0 or 1 like any other (no guard that a window count is not 1: a
    stage map can hold a single window), for ``torch.export`` and ``torch.compile(dynamic=True)``
    alike. The setting exists from torch 2.6."""
    try:
        from torch.fx.experimental import _config
    except ImportError:  # pragma: no cover - torch without the module
        yield
        return
    if not hasattr(_config, "backed_size_oblivious"):
        yield
        return
    with _config.patch(backed_size_oblivious=True):
        yield


def trace(model: nn.Module, sizes: SizeRange, least_side: int = DEFAULT_MIN_SIDE
          ) -> "torch.export.ExportedProgram":
    """``model`` in eval mode as a ``torch.export`` program for every input in ``sizes`` (the model's
    own train/eval mode is restored). The program's batch is dynamic even where ``sizes`` allows
    only 1 (a static batch of 1 trips OpenVINO's graph rewrites); the file's recorded range keeps
    larger batches out.

    Args:
        model: The module; ``model(images)`` returns a tensor or a tuple of tensors.
        sizes: The inputs to serve.
        least_side: See :meth:`SizeRange.example_shape`.

    Raises:
        ExportError: This torch has no ``torch.export`` with dynamic shapes, or the trace failed
            (the cause is chained).
    """
    if TORCH_RELEASE < EXPORT_RELEASE:
        raise ExportError(f"exporting needs torch >= {'.'.join(map(str, EXPORT_RELEASE))} (its "
                          f"torch.export traces without specialising sizes); this is torch "
                          f"{torch.__version__}")
    example = torch.randn(sizes.example_shape(least_side))
    dims = {0: torch.export.Dim("batch", min=1, max=max(2, sizes.max_batch))}
    if not sizes.fixed:
        dims[2] = torch.export.Dim("height", min=sizes.min_height, max=sizes.max_side)
        dims[3] = torch.export.Dim("width", min=sizes.min_width, max=sizes.max_side)
    was_training = model.training
    model.eval()
    try:
        with size_oblivious(), torch.no_grad(), traceable(model):
            return torch.export.export(model, (example,), dynamic_shapes=(dims,), strict=False)
    except Exception as err:
        raise ExportError(f"tracing {type(model).__name__} for {sizes.describe()} failed: "
                          f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    finally:
        model.train(was_training)
