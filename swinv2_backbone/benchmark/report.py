"""Rendering benchmark results: the markdown table of a case, the per-pixel scaling table of ours,
the disagreement warnings, the compilation times and the JSON file."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Dict, List, Optional

from .cases import AGREE_TOL, Result


def _opt(value: Optional[float], fmt: str) -> str:
    """``value`` formatted, or an empty cell."""
    return "" if value is None else format(value, fmt)


def markdown(results: List[Result]) -> str:
    """Results as a markdown table."""
    head = ("| impl | input | batch | dtype | task | mode | median s | img/s | GFLOP/s | % GEMM floor"
            " | peak MiB | RSS MiB | time / ours | max rel diff | rel err vs fp32 |")
    rows = [head, "|" + "---|" * 15]
    for r in results:
        rows.append(
            f"| {r.impl} | {r.size[0]}x{r.size[1]} | {r.batch} | {r.dtype} | {r.task} | {r.mode} | "
            f"{r.median_s:.3f} | {r.images_per_s:.2f} | {r.gflops_per_s:.0f} | "
            f"{_opt(r.floor_pct, '.0f')} | {r.peak_mem_mib:.0f} | {_opt(r.rss_peak_mib, '.0f')} | "
            f"{r.ratio_to_ours:.2f} | {_opt(r.max_rel_diff, '.1e')} | {_opt(r.fp32_rel_err, '.1e')} |")
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


def disagreements(results: List[Result]) -> List[str]:
    """One warning per implementation whose outputs differ from its reference's beyond
    :data:`AGREE_TOL`."""
    return [f"WARNING: {r.impl} disagrees with ours on the same weights at "
            f"{r.size[0]}x{r.size[1]} {r.dtype}: max rel diff {r.max_rel_diff:.1e} > "
            f"{AGREE_TOL[r.dtype]:g}" for r in results if r.agrees is False]


def first_steps(results: List[Result]) -> str:
    """The first step of each implementation: its compilation under ``--mode compile``."""
    return "first step (compilation): " + ", ".join(f"{r.impl} {r.first_step_s:.0f} s" for r in results)


def to_json(env: Dict[str, str], results: List[Result]) -> str:
    """The environment and every result as indented JSON."""
    return json.dumps({"environment": env, "results": [asdict(r) for r in results]}, indent=2)
