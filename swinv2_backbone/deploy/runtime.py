"""Running an exported file: onnxruntime, OpenVINO or torch, behind one call that checks the input
against the sizes the file records and returns torch tensors."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..benchmark.measure import cpu_flags
from .targets import INPUT_NAME, METADATA_KEY, TARGETS, onnx_metadata, read_metadata, require
from .tracing import ExportError, SizeRange

#: The runtimes, and the targets each runs.
RUNTIMES = {"onnxruntime": ("onnx",), "openvino": ("onnx", "openvino"), "torch": ("torch-export",)}
#: OpenVINO's inference precisions: ``f32``, or ``bf16`` where the CPU has it natively (OpenVINO's
#: own default there).
PRECISIONS = ("f32", "bf16")

Images = Union[torch.Tensor, np.ndarray]


class ExportedModel:
    """An exported file loaded in a runtime: ``model(images)`` returns the outputs as float32 torch
    tensors, after checking ``images`` against the sizes the file serves.

    Args:
        path: The file.
        runtime: The runtime that runs it.
        sizes: The inputs it serves.
        outputs: Its outputs' names.
        run: ``(float32 NCHW array) -> list of arrays``.
    """

    def __init__(self, path: Path, runtime: str, sizes: SizeRange, outputs: List[str],
                 run: Callable[[np.ndarray], List[np.ndarray]]) -> None:
        self.path = path
        self.runtime = runtime
        self.sizes = sizes
        self.outputs = outputs
        self._run = run

    def __call__(self, images: Images) -> Tuple[torch.Tensor, ...]:
        array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        self.sizes.check(tuple(array.shape))
        if not np.issubdtype(array.dtype, np.floating):
            raise ExportError(f"expected floating-point images, got {array.dtype}")
        results = self._run(np.ascontiguousarray(array, dtype=np.float32))
        return tuple(torch.from_numpy(np.asarray(r, dtype=np.float32)) for r in results)


def target_of(path: Path) -> str:
    """The export target a file's suffix names.

    Raises:
        ExportError: The suffix names none.
    """
    for target, suffix in TARGETS.items():
        if path.suffix == suffix:
            return target
    raise ExportError(f"{str(path)!r} is not an exported file: expected one of "
                      f"{', '.join('*' + s for s in TARGETS.values())}")


def default_runtime(target: str) -> str:
    """The runtime :func:`load_exported` picks for a target: OpenVINO for ONNX and IR (the fastest
    on CPU), torch for a ``torch.export`` archive."""
    return "torch" if target == "torch-export" else "openvino"


def _onnxruntime(path: Path, threads: Optional[int]) -> Tuple[Any, Callable]:
    ort = require("onnxruntime", "running ONNX with onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx_metadata(path), lambda x: session.run(None, {INPUT_NAME: x})


def openvino_native_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX512-BF16 or AMX): it lists
    ``BF16`` among its optimization capabilities only then."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def int8_dot_products(cpuinfo: str = "/proc/cpuinfo") -> Optional[bool]:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8), read
    from ``cpuinfo``; ``None`` where that cannot be read (not Linux)."""
    try:
        flags = cpu_flags(Path(cpuinfo).read_text())
    except OSError:
        return None
    return not flags.isdisjoint(("avx512_vnni", "avx_vnni", "amx_int8"))


def _outputs(compiled: Any, x: np.ndarray) -> List[np.ndarray]:
    result = compiled(x)
    return [result[out] for out in compiled.outputs]


def _openvino(path: Path, threads: Optional[int], precision: str) -> Tuple[Any, Callable]:
    ov = require("openvino", "running OpenVINO")
    core = ov.Core()
    if precision == "bf16" and not openvino_native_bf16(core):
        raise ExportError("OpenVINO bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); this "
                          "one has none, where bf16 would be emulated and slower: use precision f32")
    model = core.read_model(str(path))
    if path.suffix == ".xml":
        text = model.get_rt_info(METADATA_KEY).astype(str) if model.has_rt_info(METADATA_KEY) else None
    else:
        text = onnx_metadata(path)
    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if not (text and read_metadata(text)["sizes"].fixed):
        compiled = core.compile_model(model, "CPU", config)
        return text, lambda x: _outputs(compiled, x)
    # A file for one size still has a dynamic batch, which keeps OpenVINO from fusing as it does
    # for static shapes: compile it for each batch it meets (SwinV2-T at 512², AVX2-only EPYC,
    # 2026-12-07: 0.391 s against 0.417 s with the batch left dynamic; docs/speed.md).
    by_batch: Dict[int, Any] = {}

    def run(x: np.ndarray) -> List[np.ndarray]:
        if x.shape[0] not in by_batch:
            static = model.clone()
            static.reshape(list(x.shape))
            by_batch[x.shape[0]] = core.compile_model(static, "CPU", config)
        return _outputs(by_batch[x.shape[0]], x)

    return text, run


def _torch(path: Path) -> Tuple[Any, Callable]:
    extra = {f"{METADATA_KEY}.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    module = program.module()

    def run(x: np.ndarray) -> List[np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    return extra[f"{METADATA_KEY}.json"] or None, run


def load_exported(path: Union[str, os.PathLike], runtime: Optional[str] = None,
                  threads: Optional[int] = None, precision: str = "f32") -> ExportedModel:
    """An exported file (:func:`swinv2_backbone.deploy.export`) ready to run.

    Args:
        path: ``.onnx``, ``.xml`` (OpenVINO IR) or ``.pt2`` (``torch.export``).
        runtime: ``'onnxruntime'``, ``'openvino'`` or ``'torch'``; ``None``: :func:`default_runtime`.
        threads: Intra-op threads (``None``: the runtime's default).
        precision: OpenVINO's inference precision, ``'f32'`` or ``'bf16'`` (only where the CPU
            computes bf16 natively).

    Raises:
        ExportError: A missing file, a runtime that cannot run this file, a missing package (the
            message names its install command), bf16 on a CPU without native bf16, or a file
            without this project's metadata.

    Warns:
        UserWarning: An int8 file made for CPUs with int8 dot products (``cpu='vnni'``) on a CPU
            without them.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no exported file at {str(path)!r}")
    target = target_of(path)
    runtime = runtime or default_runtime(target)
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if target not in RUNTIMES[runtime]:
        raise ExportError(f"{runtime} cannot run a {target} file; it runs "
                          f"{' and '.join(RUNTIMES[runtime])}")
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "f32" and runtime != "openvino":
        raise ExportError(f"precision {precision!r} is an OpenVINO setting; {runtime} runs f32")
    if runtime == "onnxruntime":
        text, run = _onnxruntime(path, threads)
    elif runtime == "openvino":
        text, run = _openvino(path, threads, precision)
    else:
        text, run = _torch(path)
    if not text:
        raise ExportError(f"{str(path)!r} has no {METADATA_KEY} metadata: export it with "
                          "tools/export.py (or swinv2_backbone.deploy.export)")
    info = read_metadata(text)
    if info.get("int8_cpu") == "vnni" and int8_dot_products() is False:
        warnings.warn(f"{path} was quantized for CPUs with int8 dot products (quantize_int8(cpu="
                      "'vnni')); this one has none (no avx512_vnni, avx_vnni or amx_int8), where its "
                      "int8 sums saturate and the outputs drift far from f32: quantize it with "
                      "cpu='any' (tools/export.py --int8-cpu any) for this CPU", stacklevel=2)
    return ExportedModel(path, runtime, info["sizes"], info["outputs"], run)

