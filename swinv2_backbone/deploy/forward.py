"""The runtime a tool runs a model in, behind one call: :func:`runtime_forward` returns a callable
that takes a batch and returns what the eager model returns (a tuple of stage maps for a backbone,
one tensor for a classifier) — the model itself for ``'torch'``, else an exported copy of it
(exported on the fly into a temporary directory, or a given file) run in onnxruntime or OpenVINO.
:func:`export_fixed_size` exports any module at one input size (the peers' fixed-size exports the
benchmark runs beside ours)."""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .exporter import export
from .runtime import PRECISIONS, ExportedModel, load_exported
from .targets import require, write
from .tracing import DEFAULT_MAX_BATCH, DEFAULT_MAX_SIDE, ExportError, SizeRange

#: The runtimes the tools offer: ``torch`` is the eager model (or, given a ``.pt2`` file, that
#: ``torch.export`` program), the others run an exported ONNX / OpenVINO IR file.
TOOL_RUNTIMES = ("torch", "onnxruntime", "openvino")

Outputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]
Forward = Callable[[torch.Tensor], Outputs]
PathLike = Union[str, os.PathLike]
Size = Tuple[int, int]


def output_names(model: nn.Module) -> Optional[Tuple[str, ...]]:
    """The names of a backbone's outputs (its ``feature_info``), in its order; ``None`` for a model
    with one output tensor (a classifier)."""
    info = getattr(model, "feature_info", None)
    return None if info is None else tuple(f.name for f in info)


class ExportedForward:
    """An exported copy of a model, called like the model: a batch in, the model's outputs out.

    Args:
        exported: The loaded file.
        outputs: The model's output names, in its order, each one of the file's outputs; ``None``:
            the model returns one tensor, and the file must have exactly one output.
    """

    def __init__(self, exported: ExportedModel, outputs: Optional[Sequence[str]]) -> None:
        have = exported.outputs
        if outputs is None and len(have) != 1:
            raise ExportError(f"{exported.path} has {len(have)} outputs ({', '.join(have)}); the "
                              "model returns one tensor: give a file exported from it (a "
                              "classifier: tools/export.py --what model)")
        missing = [name for name in outputs or () if name not in have]
        if missing:
            raise ExportError(f"{exported.path} has the outputs {', '.join(have)}, not "
                              f"{', '.join(missing)}: export the model that computes them")
        self.exported = exported
        self.single = outputs is None
        self._index = [0] if outputs is None else [have.index(name) for name in outputs]

    @property
    def sizes(self) -> SizeRange:
        """The inputs the file serves."""
        return self.exported.sizes

    def __call__(self, images: torch.Tensor) -> Outputs:
        results = self.exported(images)
        picked = tuple(results[i] for i in self._index)
        return picked[0] if self.single else picked


@contextlib.contextmanager
def exported_copy(model: nn.Module, max_side: int = DEFAULT_MAX_SIDE,
                  max_batch: int = DEFAULT_MAX_BATCH, fixed_size: Optional[Size] = None
                  ) -> Iterator[Path]:
    """``model`` exported as one ONNX file in a temporary directory removed on exit: for every side
    from 32 (or its backbone's floor) to ``max_side``, or for ``fixed_size`` alone; batches up to
    ``max_batch``."""
    with tempfile.TemporaryDirectory(prefix="swinv2-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        if fixed_size is None:
            export(model, path, "onnx", outputs=output_names(model), max_side=max_side,
                   max_batch=max_batch)
        else:
            export(model, path, "onnx", outputs=output_names(model), max_batch=max_batch,
                   fixed_size=fixed_size)
        yield path


def _check_model(model: nn.Module, runtime: str) -> None:
    """Raise unless an exported copy of ``model`` computes what ``model`` computes: float32 on the
    CPU (the runtimes take float32 and run on the CPU)."""
    param = next(model.parameters(), None)
    if param is not None and (param.dtype != torch.float32 or param.device.type != "cpu"):
        raise ExportError(f"{runtime} runs an exported float32 copy on the CPU; the model is "
                          f"{str(param.dtype).replace('torch.', '')} on {param.device.type}: keep "
                          "the dtype fp32 and the device cpu (OpenVINO computes bf16 with "
                          "precision bf16)")


def runtime_forward(model: nn.Module, runtime: str = "torch", precision: str = "f32",
                    exported: Optional[PathLike] = None, threads: Optional[int] = None,
                    sizes: Iterable[Size] = (), batch: int = 1) -> Forward:
    """``model``'s forward in ``runtime``: ``forward(batch)`` returns what ``model(batch)`` returns
    (as float32 on the CPU for an exported copy). ``'torch'`` without ``exported`` is the model
    itself, untouched; callers keep their ``no_grad`` as for the model. An exported copy is checked
    against every input size first, so a run stops before its first output, not halfway.

    Args:
        model: A backbone or classifier in eval mode (float32 on the CPU for an exported copy).
        runtime: One of :data:`TOOL_RUNTIMES`.
        precision: ``'f32'``, or ``'bf16'`` with OpenVINO where the CPU computes it natively.
        exported: An exported file of ``model`` to run (``.onnx`` / ``.xml``; ``.pt2`` with
            ``'torch'``); ``None`` exports one on the fly, for batches up to ``batch`` (at least
            the default 64): at that one size when all of ``sizes`` are the same (static height and
            width, which OpenVINO runs ~1.3x faster), else serving 32 px (or the
            backbone's floor) up to the largest of ``sizes`` (at least the default 4096).
        threads: Intra-op threads of the runtime (``None``: its default).
        sizes: The ``(height, width)`` of the inputs to come.
        batch: The largest batch to come.

    Raises:
        ExportError: An unknown runtime or precision, a model not in float32 on the CPU, a file that
            does not have the model's outputs, that the runtime cannot run or that does not serve
            one of ``sizes``, a missing package (named with its install command).
    """
    if runtime not in TOOL_RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; choose one of {', '.join(TOOL_RUNTIMES)}")
    if precision != "f32" and runtime != "openvino":
        raise ExportError(f"precision {precision!r} is an OpenVINO setting; {runtime} runs f32")
    if runtime == "torch" and exported is None:
        return model
    _check_model(model, runtime)
    if runtime != "torch":  # before an export that could not run
        require(runtime, f"--runtime {runtime}")
    sizes = Counter(tuple(s) for s in sizes)
    if exported is not None:
        forward = ExportedForward(load_exported(exported, runtime, threads, precision),
                                  output_names(model))
    else:
        max_side = max([DEFAULT_MAX_SIDE, *(max(s) for s in sizes)])
        fixed = next(iter(sizes)) if len(sizes) == 1 else None
        with exported_copy(model, max_side, max(DEFAULT_MAX_BATCH, batch), fixed) as path:
            forward = ExportedForward(load_exported(path, runtime, threads, precision),
                                      output_names(model))
    channels = forward.sizes.channels
    for (height, width), count in sizes.items():
        forward.sizes.check((min(batch, count), channels, height, width))
    return forward


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """The tools' ``--runtime``, ``--precision`` and ``--exported`` options (for
    :func:`runtime_forward`)."""
    parser.add_argument("--runtime", choices=TOOL_RUNTIMES, default="torch",
                        help="torch (default): the eager model; onnxruntime / openvino: an exported "
                             "copy made on the fly (for the one input size if all inputs share "
                             "it, else for every size) unless --exported")
    parser.add_argument("--precision", choices=PRECISIONS, default="f32",
                        help="OpenVINO's inference precision (bf16 only where the CPU computes it "
                             "natively: AVX512-BF16 or AMX)")
    parser.add_argument("--exported", type=Path, default=None, metavar="FILE",
                        help="an exported file of the same model (tools/export.py: *.onnx or *.xml; "
                             "*.pt2 with --runtime torch) to run instead of exporting on the fly")


class _Stages(nn.Module):
    """A forward function as a module, for tracing: ``images -> tuple(forward(images))``."""

    def __init__(self, module: nn.Module, forward: Callable[[torch.Tensor], Sequence[torch.Tensor]]
                 ) -> None:
        super().__init__()
        self.module = module
        self._forward = forward

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self._forward(images))


def export_fixed_size(module: nn.Module, forward: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                      example: torch.Tensor, path: PathLike) -> Path:
    """``forward`` (a function of ``module`` returning its outputs) traced at the one shape of
    ``example`` and written as ONNX to ``path``: how a model that decides its windows and padding
    in Python (the peers) exports. The file records that one size (``SizeRange(fixed=True)``),
    which is all its graph runs.

    Raises:
        ExportError: The trace failed (the cause is chained), or the path is not ``*.onnx``.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"a fixed-size export is written as *.onnx, got {str(path)!r}")
    n, c, h, w = example.shape
    try:
        with torch.no_grad():
            program = torch.export.export(_Stages(module, forward).eval(), (example,), strict=False)
    except Exception as err:
        raise ExportError(f"tracing {type(module).__name__} at {tuple(example.shape)} failed: "
                          f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    names = [f"output{i}" for i in range(len(program.graph_signature.user_outputs))]
    write(program, "onnx", path, SizeRange(c, h, w, max(h, w), n, fixed=True), names)
    return path
