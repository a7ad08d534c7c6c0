"""Rendering benchmark results: the markdown table of a case, the per-pixel scaling table of ours,
the per-image time across batches, the disagreement warnings and failed implementations, the
compilation times and the JSON file."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Dict, List, Optional

from .breakdown import format_breakdown
from .cases import AGREE_TOL, Result
from .isolate import Failure


def _opt(value: Optional[float], fmt: str) -> str:
    """``value`` formatted, or an empty cell."""
    return "" if value is None else format(value, fmt)


def markdown(results: List[Result], runs: str) -> str:
    """Results as a markdown table, followed by how the implementations shared processes
    (``runs``: :data:`.isolate.ALTERNATING` or :data:`.isolate.ISOLATED`). A case with exported
    copies (runtime rows) has one more column: their max abs difference against eager fp32."""
    runtimes = any(r.runtime is not None for r in results)
    head = ("| impl | input | batch | dtype | task | mode | median s | s / image | img/s | GFLOP/s"
            " | % GEMM floor | floor GFLOP/s | peak MiB | RSS MiB | time / ours | max rel diff"
            " | rel err vs fp32 |" + (" max abs vs eager fp32 |" if runtimes else ""))
    rows = [head, "|" + "---|" * (18 if runtimes else 17)]
    for r in results:
        rows.append(
            f"| {r.impl} | {r.size[0]}x{r.size[1]} | {r.batch} | {r.dtype} | {r.task} | {r.mode} | "
            f"{r.median_s:.3f} | {r.median_s / r.batch:.3f} | {r.images_per_s:.2f} | "
            f"{r.gflops_per_s:.0f} | {_opt(r.floor_pct, '.0f')} | {_opt(r.floor_gflops_per_s, '.0f')} | "
            f"{r.peak_mem_mib:.0f} | {_opt(r.rss_peak_mib, '.0f')} | {_opt(r.ratio_to_ours, '.2f')} | "
            f"{_opt(r.max_rel_diff, '.1e')} | {_opt(r.fp32_rel_err, '.1e')} |"
            + (f" {_opt(r.fp32_max_abs, '.1e')} |" if runtimes else ""))
    return "\n".join(rows + [f"runs={runs}"])


def scaling(results: List[Result]) -> str:
    """Our cost per pixel across the input sizes of one dtype/task/batch: time and peak memory per
    megapixel, each relative to the cheapest size (the spread is max/min; linear cost gives 1.0)."""
    rows = ["| impl | dtype | batch | input | ms / Mpx | MiB / Mpx | time/px vs best | mem/px vs best |",
            "|" + "---|" * 8]
    spreads = []
    for impl in dict.fromkeys(r.impl for r in results if r.impl.startswith("ours")):
        for dtype, batch in dict.fromkeys((r.dtype, r.batch) for r in results):
            case = [r for r in results if r.impl == impl and r.dtype == dtype and r.batch == batch]
            if len(case) < 2:
                continue
            mpx = [r.batch * r.size[0] * r.size[1] / 1e6 for r in case]
            per_t = [r.median_s * 1e3 / m for r, m in zip(case, mpx)]
            per_m = [r.peak_mem_mib / m for r, m in zip(case, mpx)]
            for r, t, mem in zip(case, per_t, per_m):
                rows.append(f"| {impl} | {dtype} | {batch} | {r.size[0]}x{r.size[1]} | {t:.0f} | "
                            f"{mem:.0f} | {t / min(per_t):.2f} | {mem / min(per_m):.2f} |")
            spreads.append(f"{impl} {dtype} batch {batch}: time/px spread "
                           f"{max(per_t) / min(per_t):.2f}x, memory/px spread "
                           f"{max(per_m) / min(per_m):.2f}x")
    return "\n".join(rows + [""] + spreads) if spreads else ""


def batch_scaling(results: List[Result]) -> List[str]:
    """For ours (its own weights) at each input size and dtype run at several batches: the
    per-image time at the largest batch against the smallest (batch 1 by default) and their
    ratio (below 1: batching pays)."""
    lines = []
    ours = [r for r in results if r.impl == "ours"]
    for size, dtype in dict.fromkeys((r.size, r.dtype) for r in ours):
        case = sorted((r for r in ours if r.size == size and r.dtype == dtype), key=lambda r: r.batch)
        small, large = case[0], case[-1]
        if small.batch == large.batch:
            continue
        t_small, t_large = small.median_s / small.batch, large.median_s / large.batch
        lines.append(f"per-image time, ours, {size[0]}x{size[1]} {dtype}: batch {small.batch} "
                     f"{t_small:.3f} s, batch {large.batch} {t_large:.3f} s "
                     f"({t_large / t_small:.2f}x)")
    return lines


def checkpoint_cost(results: List[Result], plain: str) -> List[str]:
    """For each case where ours ran both with checkpointing (``ours``) and without (``plain``):
    the two times and their ratio (the cost of ``with_cp``)."""
    lines = []
    for r in (r for r in results if r.impl == "ours"):
        for p in (p for p in results if p.impl == plain and (p.size, p.batch, p.dtype, p.task)
                  == (r.size, r.batch, r.dtype, r.task)):
            lines.append(f"with_cp, ours, {r.size[0]}x{r.size[1]} batch {r.batch} {r.dtype} "
                         f"{r.task}: {r.median_s:.3f} s, without checkpointing {p.median_s:.3f} s "
                         f"({r.median_s / p.median_s:.2f}x)")
    return lines


def disagreements(results: List[Result]) -> List[str]:
    """One warning per implementation whose outputs differ from its reference's beyond
    :data:`AGREE_TOL`."""
    return [f"WARNING: {r.impl} disagrees with ours on the same weights at "
            f"{r.size[0]}x{r.size[1]} {r.dtype}: max rel diff {r.max_rel_diff:.1e} > "
            f"{AGREE_TOL[r.dtype]:g}" for r in results if r.agrees is False]


def failures(failed: List[Failure]) -> List[str]:
    """One message per implementation that failed, with why."""
    return [f"FAILED: {f.impl} at {f.size[0]}x{f.size[1]}, batch {f.batch}, {f.dtype} {f.task}: "
            f"{f.error}" for f in failed]


def breakdowns(results: List[Result]) -> List[str]:
    """For every result with a time breakdown: a heading line, then one line per category."""
    lines: List[str] = []
    for r in results:
        if r.breakdown_ms is not None:
            lines.append(f"where the time goes, {r.impl} (one profiled step, "
                         f"{sum(r.breakdown_ms.values()) / 1e3:.3f} s):")
            lines += format_breakdown(r.breakdown_ms)
    return lines


def first_steps(results: List[Result]) -> str:
    """The first step of each implementation: its compilation under ``--mode compile``."""
    return "first step (compilation): " + ", ".join(f"{r.impl} {r.first_step_s:.0f} s" for r in results)


def to_json(env: Dict[str, str], results: List[Result], failed: List[Failure]) -> str:
    """The environment (``runs`` among it), every result and every failed implementation as
    indented JSON."""
    return json.dumps({"environment": env, "results": [asdict(r) for r in results],
                       "failures": [asdict(f) for f in failed]}, indent=2)
