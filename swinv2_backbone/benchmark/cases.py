"""One benchmark case (input size x dtype x task x mode): every implementation timed alike, their
runs alternating in one process so that machine noise hits all of them alike, and their outputs
compared with their references'."""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .measure import elapsed, gemm_floor_seconds, peak_memory_mib, rss_peak_mib

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Largest max-abs-difference / max-abs an implementation may show against its reference (the
#: same weights) and still count as computing the same function: fp32 rounding, or two low-precision
#: runs whose roundings differ.
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
    """

    name: str
    module: torch.nn.Module
    forward: Forward
    autocast: bool = True
    reference: Optional[str] = None


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
        rss_peak_mib: CPU only: resident high-water mark the step adds.
        floor_pct: Ours only: the GEMM floor as a share of the median time.
        ratio_to_ours: ``median_s`` over that of the fastest of ours in the case.
        max_rel_diff: Max abs difference / max abs against the reference's outputs.
        agrees: ``max_rel_diff`` within :data:`AGREE_TOL` of the case's dtype.
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
    rss_peak_mib: Optional[float] = None
    floor_pct: Optional[float] = None
    ratio_to_ours: Optional[float] = None
    max_rel_diff: Optional[float] = None
    agrees: Optional[bool] = None
    fp32_rel_err: Optional[float] = None
    first_step_s: Optional[float] = None
    times_s: List[float] = field(default_factory=list)


def make_step(impl: Impl, x: torch.Tensor, dtype: torch.dtype, task: str
              ) -> Tuple[Callable[[], Sequence[torch.Tensor]], Callable[[], None]]:
    """``(forward, step)``: the forward of the case and the full timed step (inference or train)."""
    device = x.device
    amp = impl.autocast and dtype != torch.float32
    inp = x if impl.autocast else x.to(dtype)

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
    """Each implementation's fp32 output on ``x`` (eager, eval mode, no autocast): the yardstick of
    its low-precision output. A model cast to the low dtype is measured against its reference's
    fp32 output (the same weights before the cast)."""
    outs = {}
    with torch.no_grad():
        for impl in impls:
            if impl.autocast:
                training = impl.module.training
                impl.module.eval()
                outs[impl.name] = [o.float() for o in impl.forward(x)]
                impl.module.train(training)
    for impl in impls:
        if not impl.autocast and impl.reference in outs:
            outs[impl.name] = outs[impl.reference]
    return outs


def run_case(impls: List[Impl], x: torch.Tensor, dtype_name: str, task: str, mode: str,
             warmup: int, repeats: int, floor: bool, flops: float) -> List[Result]:
    """Time all implementations on one case, alternating their runs. ``impls`` run eagerly (under
    ``mode='compile'`` this compiles copies of their forwards); ``flops`` is the work of one step
    (the same for every implementation: they compute the same function)."""
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
    for name, (impl, _, step) in steps.items():
        median = statistics.median(times[name])
        res = Result(
            impl=name, size=tuple(x.shape[2:]), batch=x.shape[0], dtype=dtype_name, task=task,
            mode=mode, median_s=median, images_per_s=x.shape[0] / median, gflop=flops / 1e9,
            gflops_per_s=flops / median / 1e9, peak_mem_mib=peak_memory_mib(step, device),
            rss_peak_mib=rss_peak_mib(step) if device.type == "cpu" else None,
            times_s=times[name],
            first_step_s=first_forward[name] if task == "inference" else first.get(name))
        if name.startswith("ours") and floor and dtype != torch.float16:
            res.floor_pct = 100.0 * gemm_floor_seconds(step, dtype, device) / median
        if name in fp32_outs:
            res.fp32_rel_err = max((a - b).norm().item() / b.norm().item()
                                   for a, b in zip(outs[name], fp32_outs[name]))
        if impl.reference is not None:
            res.max_rel_diff = max(((a - b).abs().max() / b.abs().max()).item()
                                   for a, b in zip(outs[name], outs[impl.reference]))
            res.agrees = res.max_rel_diff <= AGREE_TOL[dtype_name]
        results.append(res)
    best_ours = min(r.median_s for r in results if r.impl.startswith("ours"))
    for r in results:
        r.ratio_to_ours = r.median_s / best_ours
    return results
