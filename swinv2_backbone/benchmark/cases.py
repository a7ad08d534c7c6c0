"""One benchmark case (input size x dtype x task x mode): every implementation timed alike, their
outputs compared with their references'. :func:`run_case` times all implementations in one process,
their runs alternating so that machine noise hits all of them alike; ``tools/benchmark.py
--isolate`` instead times each in a process of its own with the same :func:`measure` and compares
what the processes hand back with the same :func:`compare`."""
from __future__ import annotations

import contextlib
import os
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .breakdown import breakdown as time_breakdown
from .measure import Shape, elapsed, gemm_floor, peak_memory_mib, rss_peak_mib

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Largest max-abs-difference / max-abs an implementation may show against its reference (the
#: same weights) and still count as computing the same function: fp32 rounding, or two low-precision
#: runs whose roundings differ.
#: An int8-quantized exported copy is not held to these (its ``agrees`` stays ``None``): the
#: benchmark's weights and calibration are random, and so is their quantization error (0.1-0.5 of
#: the output range for SwinV2-T), which says nothing about real weights; its row shows the error.
AGREE_TOL = {"fp32": 1e-4, "bf16": 0.1, "fp16": 0.1}
Forward = Callable[[torch.Tensor], Sequence[torch.Tensor]]


@dataclass
class Impl:
    """One implementation under test.

    Args:
        name: Label in the report; ours are named ``ours...``.
        module: The model.
        forward: Input batch -> stage feature maps (NCHW).
        autocast: Run under autocast of the case's dtype (else the input is cast to it and the
            module must already be in that dtype).
        reference: Name of the implementation whose outputs this one must reproduce (same weights).
        runtime: The runtime and precision of an exported copy (``'onnxruntime f32'``,
            ``'openvino bf16'``...), which computes in its own precision from the fp32 input of
            every case (``forward`` calls it; ``autocast`` must be False); ``None``: eager torch.
    """

    name: str
    module: torch.nn.Module
    forward: Forward
    autocast: bool = True
    reference: Optional[str] = None
    runtime: Optional[str] = None


@dataclass
class Result:
    """Measurements of one implementation in one case.

    Args:
        impl: The implementation's name.
        size: Input (H, W).
        batch: Images per step.
        dtype: Key of :data:`DTYPES`.
        task: ``'inference'`` or ``'train'``.
        mode: ``'eager'`` or ``'compile'``.
        median_s: Median time of one step.
        images_per_s: ``batch / median_s``.
        gflop: Analytic work of one step.
        gflops_per_s: ``gflop / median_s``.
        peak_mem_mib: Tensor memory (allocator level) the step adds at its peak.
        pid: The process that timed it (``--isolate``: a process of its own).
        reference: Name of the implementation whose outputs this one must reproduce (same weights).
        rss_peak_mib: CPU only: resident high-water mark the step adds.
        floor_s: Ours only: the GEMM floor, the step's Linear-type GEMMs each timed in isolation
            with the fastest kernel here, summed.
        floor_gflop: Ours only: the work of those GEMMs (2 M K N each, summed).
        floor_gflops_per_s: Ours only: ``floor_gflop / floor_s``, the GEMMs' throughput at the floor.
        floor_pct: Ours only: ``floor_s`` as a share of the median time.
        breakdown_ms: Ours only, on request: one profiled step's milliseconds per category of
            operator (:func:`swinv2_backbone.benchmark.breakdown.breakdown`).
        ratio_to_ours: ``median_s`` over that of the fastest of ours in the case.
        max_rel_diff: Max abs difference / max abs against the reference's outputs.
        agrees: ``max_rel_diff`` within :data:`AGREE_TOL` of the case's dtype.
        runtime: An exported copy's runtime and precision (:attr:`Impl.runtime`); ``None``: eager.
        fp32_max_abs: An exported copy: max abs difference against its reference run eagerly in
            fp32 (the same weights), worst output.
        fp32_rel_err: Low precision: ``||out - out_fp32|| / ||out_fp32||`` against the same
            weights in fp32, worst stage.
        first_step_s: First call of the timed path: compilation under compile.
        times_s: Every timed step.
    """

    impl: str
    size: Tuple[int, int]
    batch: int
    dtype: str
    task: str
    mode: str
    median_s: float
    images_per_s: float
    gflop: float
    gflops_per_s: float
    peak_mem_mib: float
    pid: int
    reference: Optional[str] = None
    rss_peak_mib: Optional[float] = None
    floor_s: Optional[float] = None
    floor_gflop: Optional[float] = None
    floor_gflops_per_s: Optional[float] = None
    floor_pct: Optional[float] = None
    breakdown_ms: Optional[Dict[str, float]] = None
    ratio_to_ours: Optional[float] = None
    max_rel_diff: Optional[float] = None
    agrees: Optional[bool] = None
    runtime: Optional[str] = None
    fp32_max_abs: Optional[float] = None
    fp32_rel_err: Optional[float] = None
    first_step_s: Optional[float] = None
    times_s: List[float] = field(default_factory=list)


@dataclass
class Measured:
    """Implementations timed on one case, before their outputs are compared.

    Args:
        results: One per implementation, in run order; the comparisons (``ratio_to_ours``,
            ``max_rel_diff``, ``agrees``, ``fp32_rel_err``) not yet filled in.
        outputs: Each implementation's outputs of the case's first forward (eval mode, as fp32), by
            name.
        fp32_outputs: Low precision only: each autocast implementation's fp32 output (its
            yardstick), by name; a model cast to the low dtype has none of its own.
    """

    results: List[Result]
    outputs: Dict[str, List[torch.Tensor]]
    fp32_outputs: Dict[str, List[torch.Tensor]]


def make_step(impl: Impl, x: torch.Tensor, dtype: torch.dtype, task: str
              ) -> Tuple[Callable[[], Sequence[torch.Tensor]], Callable[[], None]]:
    """``(forward, step)``: the forward of the case and the full timed step (inference or train)."""
    device = x.device
    amp = impl.autocast and dtype != torch.float32
    inp = x if impl.autocast or impl.runtime else x.to(dtype)

    def forward() -> Sequence[torch.Tensor]:
        ctx = torch.autocast(device.type, dtype=dtype) if amp else contextlib.nullcontext()
        with ctx:
            return impl.forward(inp)

    if task == "inference":
        impl.module.eval()

        def step() -> None:
            with torch.no_grad():
                forward()
    else:
        impl.module.train()

        def step() -> None:
            outs = forward()
            sum(o.float().mean() for o in outs).backward()
            for p in impl.module.parameters():
                p.grad = None
    return forward, step



def fp32_outputs(impls: List[Impl], x: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
    """Each autocast implementation's fp32 output on ``x`` (eager, eval mode, no autocast): the
    yardstick of its low-precision output. A model cast to the low dtype gets none: :func:`compare`
    measures it against its reference's (the same weights before the cast)."""
    outs = {}
    with torch.no_grad():
        for impl in impls:
            if impl.autocast:
                training = impl.module.training
                impl.module.eval()
                outs[impl.name] = [o.float() for o in impl.forward(x)]
                impl.module.train(training)
    return outs


def measure(impls: List[Impl], x: torch.Tensor, dtype_name: str, task: str, mode: str,
            warmup: int, repeats: int, floor: bool, flops: float, breakdown: bool = False
            ) -> Measured:
    """Time ``impls`` on one case, alternating their runs (a single implementation: its runs one
    after another), and keep their outputs for :func:`compare`. ``impls`` run eagerly (under
    ``mode='compile'`` this compiles copies of their forwards); ``flops`` is the work of one step
    (the same for every implementation: they compute the same function). ``floor``: measure the
    GEMM floor of ours (not in fp16); ``breakdown``: where one step of ours spends its time."""
    dtype = DTYPES[dtype_name]
    device = x.device
    steps = {}
    for impl in impls:
        if mode == "compile":
            impl = Impl(impl.name, impl.module, torch.compile(impl.forward), impl.autocast,
                        impl.reference)
        steps[impl.name] = (impl, *make_step(impl, x, dtype, task))
    outs = {}
    first_forward: Dict[str, float] = {}  # compiles the inference graph under --mode compile
    with torch.no_grad():
        for name, (impl, fwd, _) in steps.items():  # compared in eval mode: no dropout/drop path
            impl.module.eval()
            first_forward[name], out = elapsed(fwd, device)
            outs[name] = [o.float() for o in out]
            impl.module.train(task == "train")
    fp32_outs = fp32_outputs(impls, x) if dtype != torch.float32 else {}
    first: Dict[str, float] = {}
    for i in range(max(warmup, 1 if mode == "compile" else 0)):
        for name, (_, _, step) in steps.items():
            seconds = elapsed(step, device)[0]
            if i == 0:
                first[name] = seconds
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (_, _, step) in steps.items():
            times[name].append(elapsed(step, device)[0])
    results = []
    gemm_timings: Dict[Shape, float] = {}  # one timing per shape for every row
    for name, (impl, _, step) in steps.items():
        median = statistics.median(times[name])
        res = Result(
            impl=name, size=tuple(x.shape[2:]), batch=x.shape[0], dtype=dtype_name, task=task,
            mode=mode, median_s=median, images_per_s=x.shape[0] / median, gflop=flops / 1e9,
            gflops_per_s=flops / median / 1e9, peak_mem_mib=peak_memory_mib(step, device),
            pid=os.getpid(), reference=impl.reference, runtime=impl.runtime,
            rss_peak_mib=rss_peak_mib(step) if device.type == "cpu" else None,
            times_s=times[name],
            first_step_s=first_forward[name] if task == "inference" else first.get(name))
        if name.startswith("ours") and floor and dtype != torch.float16:
            gemms = gemm_floor(step, dtype, device, warmup, repeats, gemm_timings)
            res.floor_s, res.floor_gflop = gemms.seconds, gemms.flop / 1e9
            res.floor_gflops_per_s = res.floor_gflop / gemms.seconds
            res.floor_pct = 100.0 * gemms.seconds / median
        if name.startswith("ours") and breakdown:
            res.breakdown_ms = time_breakdown(step)
        results.append(res)
    return Measured(results, outs, fp32_outs)


def compare(measured: Measured) -> List[Result]:
    """Fill in each result's comparisons: its outputs against its reference's (where the reference
    was measured), its low-precision output against its fp32 yardstick (its own, or for a model cast
    to the low dtype its reference's), an exported copy's output against its reference in fp32 (max
    abs), and its time against the fastest of ours run eagerly (where any was measured)."""
    outs, fp32 = measured.outputs, measured.fp32_outputs
    for r in measured.results:
        yardstick = fp32.get(r.impl, fp32.get(r.reference))
        if yardstick is not None:
            r.fp32_rel_err = max((a - b).norm().item() / b.norm().item()
                                 for a, b in zip(outs[r.impl], yardstick))
        fp32_reference = outs.get(r.reference) if r.dtype == "fp32" else yardstick
        if r.runtime is not None and fp32_reference is not None:
            r.fp32_max_abs = max((a - b).abs().max().item()
                                 for a, b in zip(outs[r.impl], fp32_reference))
        if r.reference in outs:
            r.max_rel_diff = max(((a - b).abs().max() / b.abs().max()).item()
                                 for a, b in zip(outs[r.impl], outs[r.reference]))
            if not (r.runtime or "").endswith("int8"):
                r.agrees = r.max_rel_diff <= AGREE_TOL[r.dtype]
    ours = [r.median_s for r in measured.results if r.impl.startswith("ours")]
    for r in measured.results:
        r.ratio_to_ours = r.median_s / min(ours) if ours else None
    return measured.results


def run_case(impls: List[Impl], x: torch.Tensor, dtype_name: str, task: str, mode: str,
             warmup: int, repeats: int, floor: bool, flops: float, breakdown: bool = False
             ) -> List[Result]:
    """Time all implementations on one case in this process, alternating their runs, and compare
    them (:func:`measure`, then :func:`compare`)."""
    return compare(measure(impls, x, dtype_name, task, mode, warmup, repeats, floor, flops,
                           breakdown))
