"""Benchmark Swinv2Backbone and, with ``--compare``, the installed peer implementations (HF
transformers, timm, mmpretrain, torchvision) on the same input with the same weights.

For every case (input size x dtype x task) it reports the median time, images/s, achieved GFLOP/s,
the share of the machine's measured GEMM floor (every Linear-type matrix product of the run timed in
isolation with the fastest kernel available), peak memory and, with ``--compare``, each peer's time
ratio to ours and the largest output difference; in bf16/fp16 also each implementation's relative
error against its own fp32 output. Runs of the implementations alternate in one
process so that machine noise hits all of them alike.

    python tools/benchmark.py --arch tiny --sizes 512x512 800x1344 --dtypes fp32 bf16 --compare
    python tools/benchmark.py --task train --batch 2 --sizes 512x512 --compare --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# The profiler that measures CPU peak memory would log its start and stop at every run.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swinv2_backbone import ARCH_SETTINGS, Swinv2Backbone  # noqa: E402
from swinv2_backbone.checkpoint import convert_checkpoint  # noqa: E402
from swinv2_backbone.compat import event_start_ns  # noqa: E402
from swinv2_backbone.complexity import analyze, spec_from_config  # noqa: E402
from swinv2_backbone.models import linear_backend  # noqa: E402
from swinv2_backbone.testing import randomize_  # noqa: E402

PEERS = ("hf", "timm", "mmpretrain", "torchvision")
PEER_PACKAGES = {"hf": "transformers", "timm": "timm", "mmpretrain": "mmpretrain",
                 "torchvision": "torchvision"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Largest max-abs-difference / max-abs an implementation may show against its reference (the
#: same weights) and still count as computing the same function: fp32 rounding, or two low-precision
#: runs whose roundings differ (measured up to 5e-2 in bf16).
AGREE_TOL = {"fp32": 1e-4, "bf16": 0.1, "fp16": 0.1}
Forward = Callable[[torch.Tensor], Sequence[torch.Tensor]]


@dataclass
class Impl:
    """One implementation under test.

    Args:
        name: Label in the report.
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
    """Measurements of one implementation in one case."""

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
    peak_mem_mib: float  # tensor memory (allocator level) the step adds at its peak
    rss_peak_mib: Optional[float] = None  # CPU only: resident high-water mark the step adds
    floor_pct: Optional[float] = None
    ratio_to_ours: Optional[float] = None
    max_rel_diff: Optional[float] = None
    agrees: Optional[bool] = None  # max_rel_diff within AGREE_TOL of the case's dtype
    # low precision: ||out - out_fp32|| / ||out_fp32|| of the same weights in fp32, worst stage
    fp32_rel_err: Optional[float] = None
    first_step_s: Optional[float] = None  # first call of the timed path: compilation under compile
    times_s: List[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- peers
def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)


def build_peer(name: str, arch: str, hw: Tuple[int, int], window: int, seed: int = 0
               ) -> Tuple[Impl, dict]:
    """The peer ``name`` with seeded random, non-trivial weights (:func:`randomize_`: fresh
    initialisations zero timm's res-post-norm weights, which makes every block the identity, and
    agreement then proves little) and its state dict in the peer's own layout."""
    impl = _peer(name, arch, hw, window)
    randomize_(impl.module, seed)
    return impl, impl.module.state_dict()


def _peer(name: str, arch: str, hw: Tuple[int, int], window: int) -> Impl:
    preset = ARCH_SETTINGS[arch]
    embed, depths, heads = preset.embed_dims, preset.depths, preset.num_heads
    if name == "hf":
        from transformers import Swinv2Backbone as HFBackbone, Swinv2Config

        cfg = Swinv2Config(image_size=list(hw), embed_dim=embed, depths=list(depths),
                           num_heads=list(heads), window_size=window,
                           out_features=["stage1", "stage2", "stage3", "stage4"])
        model = HFBackbone(cfg)
        return Impl("hf", model, lambda x: model(x).feature_maps)
    if name == "timm":
        import timm

        model = timm.create_model("swinv2_tiny_window8_256", pretrained=False, features_only=True,
                                  img_size=hw, window_size=window, embed_dim=embed,
                                  depths=depths, num_heads=heads)
        return Impl("timm", model, lambda x: [_nhwc(t) for t in model(x)])
    if name == "mmpretrain":
        import types

        sys.modules.setdefault("mmpretrain.models.multimodal", types.ModuleType("multimodal"))
        from mmpretrain.models.backbones import SwinTransformerV2

        model = SwinTransformerV2(arch=dict(embed_dims=embed, depths=list(depths),
                                            num_heads=list(heads), extra_norm_every_n_blocks=0),
                                  img_size=hw, window_size=[window] * 4, out_indices=(0, 1, 2, 3),
                                  drop_path_rate=0.0)
        return Impl("mmpretrain", model, model)
    if name == "torchvision":
        import torchvision

        builders = {"tiny": torchvision.models.swin_v2_t, "small": torchvision.models.swin_v2_s,
                    "base": torchvision.models.swin_v2_b}
        if arch not in builders or window != 8:
            raise ValueError("torchvision only has swin_v2_t/s/b with window 8")
        model = builders[arch]()

        def forward(x: torch.Tensor) -> List[torch.Tensor]:
            outs = []
            for i, layer in enumerate(model.features):
                x = layer(x)
                if i % 2 == 1:
                    outs.append(_nhwc(x))
            return outs

        return Impl("torchvision", model, forward)
    raise ValueError(f"unknown peer {name!r}; choose from {PEERS}")


def ours_from(state: Optional[dict], source: Optional[str], arch: str, window: int,
              out_norm: bool, with_cp: bool = False) -> Swinv2Backbone:
    """Our backbone, with the peer's weights converted through the checkpoint adapters, and the
    peer's rule for small or padded stage maps (:func:`small_map_rule`)."""
    model = Swinv2Backbone(arch=arch, window_size=window, out_norm=out_norm, drop_path_rate=0.0,
                           with_cp=with_cp, small_map=small_map_rule(source))
    if state is not None:
        converted = convert_checkpoint(state, format=source).state_dict
        model.load_state_dict(converted, strict=out_norm)
    return model


def small_map_rule(source: Optional[str]) -> str:
    """Our ``small_map`` rule that reproduces ``source``: ``'hf'`` and ``'timm'`` have their own
    (window size, shift and roll order on maps that are small or not window multiples), the others
    pad to the window (``'pad'``). timm's rectangular window on a non-square map shorter than the
    window on one side is not reproduced: the report's ``max rel diff`` then shows it."""
    return source if source in ("hf", "timm") else "pad"


# ---------------------------------------------------------------------------------------- measuring
class _GemmRecorder(TorchDispatchMode):
    """Records the (M, K, N) of every Linear-type matrix product (mm/addmm/linear kernels)."""

    OPS = ("aten.mm", "aten.addmm", "mkldnn._linear_pointwise", "aten.linear")

    def __init__(self) -> None:
        super().__init__()
        self.shapes: List[Tuple[int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if any(name.endswith(op) for op in self.OPS):
            a, b = (args[1], args[2]) if "addmm" in name else (args[0], args[1])
            m, k = a.reshape(-1, a.shape[-1]).shape
            n = b.shape[0] if "linear" in name else b.shape[-1]
            self.shapes.append((m, k, n))
        return func(*args, **(kwargs or {}))


def gemm_floor_seconds(run: Callable[[], None], dtype: torch.dtype, device: torch.device) -> float:
    """Sum over the run's Linear GEMMs of each one's isolated time with the fastest kernel here."""
    rec = _GemmRecorder()
    with rec:
        run()
    total = 0.0
    counts: Dict[Tuple[int, int, int], int] = {}
    for s in rec.shapes:
        counts[s] = counts.get(s, 0) + 1
    for (m, k, n), count in counts.items():
        a = torch.randn(m, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype)
        candidates = [lambda: torch.nn.functional.linear(a, w)]
        if device.type == "cpu" and linear_backend.onednn_available(dtype):
            candidates.append(lambda: linear_backend.onednn_linear(a, w, None))
            packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
            candidates.append(lambda: linear_backend.onednn_linear(a, packed, None))
        total += count * min(_median_time(c, 2, 5, device) for c in candidates)
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _elapsed(fn: Callable[[], object], device: torch.device) -> Tuple[float, object]:
    """Wall time of ``fn()`` (device-synchronised) and its result."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _median_time(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_elapsed(fn, device)[0] for _ in range(repeats))


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
    caching, libraries' own buffers and page-fault granularity included. Moves by up to ~15 %
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
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "threads": str(torch.get_num_threads()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": _onednn_version(),
        "linear_backend": linear_backend.describe(),
        "allocator": "glibc malloc" if "LD_PRELOAD" not in env else env["LD_PRELOAD"],
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }
    info.update(env)
    return info


def _onednn_version() -> str:
    found = re.search(r"(?:MKL-DNN|oneDNN) v(\d+(?:\.\d+)*)", torch.__config__.show())
    return found.group(1) if found else "none"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------------------- cases
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


def fp32_outputs(impls: List[Impl], eager: Dict[str, Forward], x: torch.Tensor
                 ) -> Dict[str, List[torch.Tensor]]:
    """Each implementation's fp32 output on ``x`` (eager, eval mode, no autocast): the yardstick of
    its low-precision output. A model cast to the low dtype is measured against its reference's
    fp32 output (the same weights before the cast)."""
    outs = {}
    with torch.no_grad():
        for impl in impls:
            if impl.autocast:
                training = impl.module.training
                impl.module.eval()
                outs[impl.name] = [o.float() for o in eager[impl.name](x)]
                impl.module.train(training)
    for impl in impls:
        if not impl.autocast and impl.reference in outs:
            outs[impl.name] = outs[impl.reference]
    return outs


def run_case(impls: List[Impl], x: torch.Tensor, dtype_name: str, task: str, mode: str,
             warmup: int, repeats: int, floor: bool, flops: float) -> List[Result]:
    """Time all implementations on one case, alternating their runs. ``flops`` is the work of one
    step (the same for every implementation: they compute the same function)."""
    dtype = DTYPES[dtype_name]
    device = x.device
    steps = {}
    eager = {impl.name: impl.forward for impl in impls}
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
            first_forward[name], out = _elapsed(fwd, device)
            outs[name] = [o.float() for o in out]
            impl.module.train(task == "train")
    fp32_outs = fp32_outputs(impls, eager, x) if dtype != torch.float32 else {}
    first: Dict[str, float] = {}
    for i in range(max(warmup, 1 if mode == "compile" else 0)):
        for name, (_, _, step) in steps.items():
            elapsed = _elapsed(step, device)[0]
            if i == 0:
                first[name] = elapsed
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (_, _, step) in steps.items():
            times[name].append(_elapsed(step, device)[0])
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


def markdown(results: List[Result]) -> str:
    """Results as a markdown table."""
    head = ("| impl | input | batch | dtype | task | mode | median s | img/s | GFLOP/s | % GEMM floor"
            " | peak MiB | RSS MiB | time / ours | max rel diff | rel err vs fp32 |")
    rows = [head, "|" + "---|" * 15]
    for r in results:
        rows.append(
            f"| {r.impl} | {r.size[0]}x{r.size[1]} | {r.batch} | {r.dtype} | {r.task} | {r.mode} | "
            f"{r.median_s:.3f} | {r.images_per_s:.2f} | {r.gflops_per_s:.0f} | "
            f"{'' if r.floor_pct is None else f'{r.floor_pct:.0f}'} | {r.peak_mem_mib:.0f} | "
            f"{'' if r.rss_peak_mib is None else f'{r.rss_peak_mib:.0f}'} | "
            f"{r.ratio_to_ours:.2f} | {'' if r.max_rel_diff is None else f'{r.max_rel_diff:.1e}'} | "
            f"{'' if r.fp32_rel_err is None else f'{r.fp32_rel_err:.1e}'} |")
    return "\n".join(rows)


def scaling(results: List[Result]) -> str:
    """Our cost per pixel across the input sizes of one dtype/task: time and peak memory per
    megapixel, each relative to the cheapest size (the spread is max/min; linear cost gives 1.0)."""
    rows = ["| impl | dtype | input | ms / Mpx | MiB / Mpx | time/px vs best | mem/px vs best |",
            "|" + "---|" * 7]
    spreads = []
    for impl in dict.fromkeys(r.impl for r in results if r.impl.startswith("ours")):
        for dtype in dict.fromkeys(r.dtype for r in results):
            case = [r for r in results if r.impl == impl and r.dtype == dtype]
            if len(case) < 2:
                continue
            mpx = [r.batch * r.size[0] * r.size[1] / 1e6 for r in case]
            per_t = [r.median_s * 1e3 / m for r, m in zip(case, mpx)]
            per_m = [r.peak_mem_mib / m for r, m in zip(case, mpx)]
            for r, t, mem in zip(case, per_t, per_m):
                rows.append(f"| {impl} | {dtype} | {r.size[0]}x{r.size[1]} | {t:.0f} | {mem:.0f} | "
                            f"{t / min(per_t):.2f} | {mem / min(per_m):.2f} |")
            spreads.append(f"{impl} {dtype}: time/px spread {max(per_t) / min(per_t):.2f}x, "
                           f"memory/px spread {max(per_m) / min(per_m):.2f}x")
    return "\n".join(rows + [""] + spreads) if spreads else ""


def parse_size(text: str) -> Tuple[int, int]:
    """``'512'`` or ``'800x1344'`` -> (H, W)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive ints, got {text!r}")
    return parts[0], parts[1]


def main(argv: Optional[Sequence[str]] = None) -> List[Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="tiny", choices=sorted(ARCH_SETTINGS))
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(512, 512), (800, 1344)])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32"])
    parser.add_argument("--task", choices=["inference", "train"], default="inference")
    parser.add_argument("--mode", choices=["eager", "compile"], default="eager")
    parser.add_argument("--compare", nargs="*", choices=PEERS, default=None,
                        help="peers to run beside ours (no names: all of them)")
    parser.add_argument("--with-cp", action="store_true", help="activation checkpointing (ours)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-floor", action="store_true", help="skip the GEMM-floor measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch and --repeats must be >= 1, --warmup >= 0")
    device = torch.device(args.device)
    if args.compare is None:
        peers = []
    elif args.compare:
        peers = list(args.compare)
        missing = [p for p in peers if importlib.util.find_spec(PEER_PACKAGES[p]) is None]
        if missing:
            parser.error(f"--compare {' '.join(missing)}: not installed "
                         f"({', '.join(PEER_PACKAGES[p] for p in missing)})")
    else:
        peers = [p for p in PEERS if importlib.util.find_spec(PEER_PACKAGES[p]) is not None]
    env = environment()
    if args.mode == "compile":
        import torch._inductor.config as inductor_config

        # Freezing (weights as constants, prepacked for oneDNN) is inductor's CPU inference mode.
        inductor_config.freezing = args.task == "inference"
        env["inductor_freezing"] = str(inductor_config.freezing)
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    results: List[Result] = []
    for hw in args.sizes:
        torch.manual_seed(args.seed)
        x = torch.randn(args.batch, 3, *hw, device=device)
        for dtype_name in args.dtypes:
            impls: List[Impl] = []
            ours = randomize_(ours_from(None, None, args.arch, args.window, True, args.with_cp),
                              args.seed).to(device)
            impls.append(Impl("ours", ours, ours))
            if dtype_name != "fp32":
                low = copy.deepcopy(ours).to(DTYPES[dtype_name])
                impls.append(Impl(f"ours ({dtype_name} model)", low, low, autocast=False,
                                  reference="ours"))
            for peer in peers:
                impl, state = build_peer(peer, args.arch, hw, args.window, args.seed)
                mine = ours_from(state, peer, args.arch, args.window, peer == "mmpretrain",
                                 args.with_cp).to(device)
                impl.module.to(device)
                impl.reference = f"ours ({peer} weights)"
                impls += [Impl(impl.reference, mine, mine), impl]
            # analytic FLOPs (2 x MAC) of the forward; a training step counts 3x (backward ~ 2x)
            fwd = analyze(spec_from_config(arch=args.arch, window_size=args.window), hw).flops
            flops = fwd * args.batch * (3 if args.task == "train" else 1)
            case = run_case(impls, x, dtype_name, args.task, args.mode, args.warmup,
                            args.repeats, not args.no_floor, flops)
            results += case
            print(markdown(case), flush=True)
            for r in case:
                if r.agrees is False:
                    print(f"WARNING: {r.impl} disagrees with ours on the same weights at "
                          f"{r.size[0]}x{r.size[1]} {r.dtype}: max rel diff {r.max_rel_diff:.1e} > "
                          f"{AGREE_TOL[r.dtype]:g}", flush=True)
            if args.mode == "compile":
                print("first step (compilation): " + ", ".join(
                    f"{r.impl} {r.first_step_s:.0f} s" for r in case), flush=True)
    if len(args.sizes) > 1:
        print(scaling(results), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"environment": env,
                                         "results": [asdict(r) for r in results]}, indent=2))
    return results


if __name__ == "__main__":
    main()
