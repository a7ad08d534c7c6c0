"""Measuring one run: wall time, the GEMM floor (the run's Linear-type matrix products timed in
isolation with the fastest kernel here), peak tensor and resident memory, and the settings of the
machine that change the numbers."""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..compat import event_start_ns
from ..models import fast
from ..models.fast import onednn

Shape = Tuple[int, int, int]


class GemmRecorder(TorchDispatchMode):
    """Records the (M, K, N) of every Linear-type matrix product (mm/addmm/linear kernels) run
    under it, in order.

    Args: none.
    """

    OPS = ("aten.mm", "aten.addmm", "aten.addmm_", "mkldnn._linear_pointwise", "aten.linear")

    def __init__(self) -> None:
        super().__init__()
        self.shapes: List[Shape] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: Optional[dict] = None) -> Any:
        name = str(func.overloadpacket)
        if any(name.endswith(op) for op in self.OPS):
            a, b = (args[1], args[2]) if "addmm" in name else (args[0], args[1])
            m, k = a.reshape(-1, a.shape[-1]).shape
            n = b.shape[0] if "linear" in name else b.shape[-1]
            self.shapes.append((m, k, n))
        return func(*args, **(kwargs or {}))


class GemmFloor(NamedTuple):
    """The GEMM floor of a run.

    Args:
        seconds: Sum over the run's Linear GEMMs of each one's isolated time with the fastest
            kernel here.
        flop: Their work: ``2 * M * K * N`` summed over them.
    """

    seconds: float
    flop: float


def gemm_floor(run: Callable[[], None], dtype: torch.dtype, device: torch.device,
               warmup: int = 2, repeats: int = 5,
               timings: Optional[Dict[Shape, float]] = None) -> GemmFloor:
    """The run's Linear GEMMs recorded, then each distinct shape timed alone with the fastest
    kernel here (every occurrence counted).

    Args:
        run: One step.
        dtype: The GEMMs' dtype.
        device: Where they run.
        warmup: Untimed calls of each kernel first (at least one: oneDNN creates its primitive then).
        repeats: Timed calls of each kernel (the median counts).
        timings: Seconds per shape already timed (same ``dtype``, ``device`` and thread count),
            filled in here: the rows of one case share their shapes, so each is timed once.
    """
    rec = GemmRecorder()
    with rec:
        run()
    timings = {} if timings is None else timings
    total = 0.0
    for shape, count in Counter(rec.shapes).items():
        if shape not in timings:
            timings[shape] = _fastest_gemm(shape, dtype, device, max(warmup, 1), repeats)
        total += count * timings[shape]
    return GemmFloor(total, float(sum(2 * m * k * n for m, k, n in rec.shapes)))


def _fastest_gemm(shape: Shape, dtype: torch.dtype, device: torch.device, warmup: int,
                  repeats: int) -> float:
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype)
    candidates = [lambda: torch.nn.functional.linear(a, w)]
    if device.type == "cpu" and onednn.onednn_available(dtype):
        candidates.append(lambda: onednn.onednn_linear(a, w, None))
        packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
        candidates.append(lambda: onednn.onednn_linear(a, packed, None))
    return min(median_time(c, warmup, repeats, device) for c in candidates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def elapsed(fn: Callable[[], object], device: torch.device) -> Tuple[float, object]:
    """Wall time of ``fn()`` (device-synchronised) and its result."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def median_time(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(elapsed(fn, device)[0] for _ in range(repeats))


def peak_memory_mib(run: Callable[[], None], device: torch.device) -> float:
    """Peak tensor memory a run adds above what was allocated before it: the CUDA caching allocator's
    peak, or on CPU the running sum of the allocator's events as the profiler records them (every
    tensor allocation and free, in order). This is the CPU twin of ``max_memory_allocated``: it does
    not move with glibc's heap state, and it leaves out what the process holds for other reasons."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        run()
    events = sorted((event_start_ns(e), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak / 2 ** 20


def _rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def rss_peak_mib(run: Callable[[], None]) -> float:
    """The process's resident high-water mark during a run above its resident size before it
    (reset through /proc/self/clear_refs, after ``malloc_trim``): what the OS sees, allocator
    caching, libraries' own buffers and page-fault granularity included, so it moves noticeably
    between identical runs."""
    # Hand freed heap memory back first, or a run that reuses it would not raise the high-water mark.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kib("VmRSS")
    run()
    return (_rss_kib("VmHWM") - before) / 1024


def environment() -> Dict[str, str]:
    """The settings that change the numbers: threads, allocator, kernels, versions."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("OMP_", "MKL_", "KMP_", "DNNL_", "ONEDNN_", "MALLOC_", "LD_PRELOAD",
                            "PYTORCH_", "TORCH_"))}
    flags = isa_flags(_cpuinfo())
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "isa": " ".join(flags) or "unknown",
        "native_bf16": "yes" if native_bf16(flags) else "no (emulated: fp32 is faster)",
        "threads": str(torch.get_num_threads()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": _onednn_version(),
        "onednn_isa": onednn_isa(),
        "linear_backend": fast.describe(),
        "allocator": "glibc malloc" if "LD_PRELOAD" not in env else env["LD_PRELOAD"],
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }
    info.update(env)
    return info


def _onednn_version() -> str:
    found = re.search(r"(?:MKL-DNN|oneDNN) v(\d+(?:\.\d+)*)", torch.__config__.show())
    return found.group(1) if found else "none"


#: One oneDNN Linear in a fresh process: oneDNN prints its info lines (the ISA among them) when it
#: creates its first primitive, once per process, and reads its verbose setting before that.
_ONEDNN_PROBE = ("import torch; torch.ops.mkldnn._linear_pointwise("
                 "torch.randn(4, 8), torch.randn(16, 8), None, 'none', [], '')")


def parse_onednn_isa(verbose: str) -> Optional[str]:
    """The ISA named on the ``info,cpu,isa:`` line of oneDNN's verbose output (oneDNN 3.1:
    ``onednn_verbose,info,cpu,isa:...``, later 3.x ``onednn_verbose,v1,info,cpu,isa:...``, 2.x
    ``dnnl_verbose,...``), or None when no such line is there."""
    found = re.search(r"^(?:onednn|dnnl)_verbose,(?:v\d+,)?info,cpu,isa:(.+)$", verbose, re.MULTILINE)
    return found.group(1).strip() if found else None


def onednn_isa(timeout_s: float = 120.0) -> str:
    """The instruction set oneDNN dispatches to here (after any ``ONEDNN_MAX_CPU_ISA`` limit; the
    probe inherits this process's environment), or ``unknown (<why>)``. Runs :data:`_ONEDNN_PROBE`
    in a child Python with verbose output on: ``ONEDNN_VERBOSE`` and ``DNNL_VERBOSE`` both (oneDNN
    3.x reads either, 2.x the second)."""
    if not torch.backends.mkldnn.is_available():
        return "unknown (torch was built without oneDNN)"
    env = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    try:
        probe = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE], env=env, capture_output=True,
                               text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"unknown (the oneDNN probe ran over {timeout_s:g} s)"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        return f"unknown (the oneDNN probe failed with exit code {probe.returncode}: {last})"
    isa = parse_onednn_isa(probe.stdout + probe.stderr)
    return isa or "unknown (oneDNN's verbose output named no ISA)"


#: The CPU flags that decide which kernels run here, and whether bf16 arithmetic is native.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16")


def _cpuinfo() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text()
    return ""


def cpu_flags(cpuinfo: str) -> FrozenSet[str]:
    """Every flag of the first processor in a ``/proc/cpuinfo`` text (none without a flags line)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def isa_flags(cpuinfo: str) -> Tuple[str, ...]:
    """The :data:`ISA_FLAGS` of the first processor in a ``/proc/cpuinfo`` text, in that order."""
    present = cpu_flags(cpuinfo)
    return tuple(f for f in ISA_FLAGS if f in present)


def native_bf16(flags: Tuple[str, ...]) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX); without it oneDNN and ATen
    emulate bf16 through fp32, several times slower than fp32 itself."""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
