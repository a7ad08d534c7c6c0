"""Deployment: a model exported once for every input size in a range (ONNX, OpenVINO IR,
``torch.export``), and the exported files run in onnxruntime, OpenVINO or torch behind one call.

* :func:`export`: a model (or a source: checkpoint or mmdet/mmseg config, :mod:`.sources`) to a file;
* :func:`load_exported`: a file to an :class:`ExportedModel` that checks its inputs and returns
  torch tensors;
* :func:`runtime_forward`: a model's forward in a runtime (the model itself, or an exported copy of
  it), as the tools run it;
* :func:`quantize_int8`: an exported OpenVINO IR to int8 (NNCF), calibrated on given inputs;
* :mod:`.tracing`: the one dynamic-shape trace every target starts from.
"""
from __future__ import annotations

from .exporter import export
from .forward import (TOOL_RUNTIMES, ExportedForward, add_runtime_arguments, export_fixed_size,
                      runtime_forward)
from .quantize import quantize_int8
from .runtime import PRECISIONS, RUNTIMES, ExportedModel, load_exported
from .sources import WHAT, Exportable, load_source
from .targets import OPSETS, TARGETS
from .tracing import (DEFAULT_MAX_BATCH, DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, ExportError, SizeRange,
                    size_oblivious, size_range, trace)


__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_SIDE", "DEFAULT_MIN_SIDE", "ExportError", "Exportable",
           "ExportedForward", "ExportedModel", "OPSETS", "PRECISIONS", "RUNTIMES", "SizeRange",
           "TARGETS", "TOOL_RUNTIMES", "WHAT", "add_runtime_arguments", "export", "export_fixed_size",
           "load_exported", "load_source", "quantize_int8", "runtime_forward", "size_oblivious", "size_range", "trace"]
