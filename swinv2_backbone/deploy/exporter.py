"""Exporting a model (or a source: a checkpoint or mmdet/mmseg config) to one file that serves
every input size in a range."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

from torch import nn

from .sources import Exportable
from .targets import check_target, write
from .tracing import (DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, ExportError, SizeRange,
                      size_range, trace)


def export(model: Union[nn.Module, Exportable], output: Union[str, os.PathLike], target: str = "onnx",
           outputs: Optional[Sequence[str]] = None, channels: Optional[int] = None,
           min_side: int = DEFAULT_MIN_SIDE, max_side: int = DEFAULT_MAX_SIDE,
           max_batch: Optional[int] = None, opset: int = 18,
           fixed_size: Optional[Tuple[int, int]] = None) -> SizeRange:
    """Export ``model`` for every input in a size range and write it to ``output``.

    The trace takes the reference kernels by itself (the fast CPU paths are eager strategies) and
    leaves the model's train/eval mode as it was; dropout, drop path and ``with_cp`` do nothing in
    the exported (eval) graph.

    Args:
        model: A module taking ``(N, C, H, W)`` images (a backbone, classifier, SimMIM encoder...),
            or an :class:`Exportable` from :func:`load_source`.
        output: The file: ``*.onnx``, ``*.xml`` (OpenVINO IR, with its ``.bin``) or ``*.pt2``.
        target: ``'onnx'``, ``'openvino'`` or ``'torch-export'``.
        outputs: A name per output (default: a backbone's feature names, else ``output0``...).
        channels: Input channels (default: the backbone's ``in_channels``).
        min_side: Smallest height and width to serve (raised to what the backbone's ``small_map``
            rule allows, see :func:`size_range`).
        max_side: Largest height and width to serve.
        max_batch: Largest batch to serve (default: :data:`DEFAULT_MAX_BATCH`, or the most the
            model takes, 1 for a whole detector).
        opset: ONNX opset (ONNX and OpenVINO targets).
        fixed_size: ``(height, width)``: serve that size alone (static height and width: OpenVINO
            folds the graph's size arithmetic and runs it faster than a range);
            ``min_side``/``max_side`` must then be left at their defaults.

    Returns:
        The sizes the file serves (also recorded inside it).

    Raises:
        ExportError: A bad target, path, opset or size range (a batch above what the model takes
            included), a missing package, or a failed trace.
    """
    path = check_target(target, output, opset)
    exportable = as_exportable(model)
    sizes = planned_sizes(exportable, channels, min_side, max_side, max_batch, fixed_size)
    program = trace(exportable.model, sizes, exportable.least_side)
    names = list(outputs or exportable.outputs)
    count = len(program.graph_signature.user_outputs)
    if not names:
        names = [f"output{i}" for i in range(count)]
    if len(names) != count:
        raise ExportError(f"{len(names)} output names ({', '.join(names)}) for {count} outputs")
    write(program, target, path, sizes, names, opset)
    return sizes


def as_exportable(model: Union[nn.Module, Exportable]) -> Exportable:
    """``model`` as an :class:`Exportable` (a module: its backbone's channels and feature names)."""
    if isinstance(model, Exportable):
        return model
    backbone = getattr(model, "backbone", model)
    names = tuple(f.name for f in getattr(model, "feature_info", ()))
    return Exportable(model, getattr(backbone, "in_channels", 3), names, type(model).__name__)


def planned_sizes(model: Union[nn.Module, Exportable], channels: Optional[int] = None,
                  min_side: int = DEFAULT_MIN_SIDE, max_side: int = DEFAULT_MAX_SIDE,
                  max_batch: Optional[int] = None,
                  fixed_size: Optional[Tuple[int, int]] = None) -> SizeRange:
    """The sizes :func:`export` with these arguments serves, decided before any tracing (a tool
    checks its inputs against them first).

    Raises:
        ExportError: A batch above what the model takes, a fixed size with a range, or a bad fixed
            size.
    """
    exportable = as_exportable(model)
    channels = channels or exportable.channels
    if max_batch is None:
        max_batch = exportable.max_batch
    elif max_batch > exportable.max_batch:
        raise ExportError(f"{exportable.description} takes batches of at most "
                          f"{exportable.max_batch}, not {max_batch}")
    if fixed_size is None:
        return size_range(exportable.model, channels, min_side, max_side, max_batch)
    if (min_side, max_side) != (DEFAULT_MIN_SIDE, DEFAULT_MAX_SIDE):
        raise ExportError("give either a fixed size or min_side/max_side, not both")
    if len(fixed_size) != 2 or any(not isinstance(s, int) or s < 1 for s in fixed_size):
        raise ExportError(f"fixed_size must be two positive ints (height, width), got {fixed_size!r}")
    return SizeRange(channels, fixed_size[0], fixed_size[1], max(fixed_size), max_batch, fixed=True)
