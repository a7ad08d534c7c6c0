"""Where a step's time goes: the profiler's self time of every operator, summed per category (the
Linear GEMMs, the attention GEMMs, copies, softmax, norms, GELU, other elementwise work), and the
rest of the wall time (Python, autograd bookkeeping, waiting)."""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import torch

#: (category, operator names): the first category naming an operator gets its self time.
CATEGORIES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("Linear GEMMs", ("mkldnn::_linear_pointwise", "aten::addmm", "aten::addmm_", "aten::mm",
                      "aten::linear")),
    ("attention GEMMs", ("aten::bmm", "aten::baddbmm")),
    ("copies and gathers", ("aten::copy_", "aten::index_select", "aten::cat", "aten::index",
                            "aten::gather", "aten::index_add_", "aten::index_copy_", "aten::fill_",
                            "aten::zero_", "aten::constant_pad_nd", "aten::roll", "aten::clone")),
    ("softmax", ("aten::_softmax", "aten::_softmax_backward_data")),
    ("norms", ("aten::native_layer_norm", "aten::native_layer_norm_backward",
               "aten::linalg_vector_norm")),
    ("GELU", ("aten::gelu", "aten::gelu_backward")),
)
OTHER = "other operators"
BOOKKEEPING = "autograd and Function bookkeeping"
OUTSIDE = "outside operators"


def categorize(self_ms: Dict[str, float]) -> Dict[str, float]:
    """Per-event self times (ms) summed per :data:`CATEGORIES` entry; the other ``aten::`` /
    ``mkldnn::`` operators (elementwise work, reductions) under :data:`OTHER`, every other event
    (the autograd engine's nodes, custom autograd Functions' own Python) under :data:`BOOKKEEPING`.
    Every category appears (0 where nothing ran)."""
    owner = {op: name for name, ops in CATEGORIES for op in ops}
    out = {name: 0.0 for name, _ in CATEGORIES}
    out[OTHER] = out[BOOKKEEPING] = 0.0
    for op, ms in self_ms.items():
        default = OTHER if op.startswith(("aten::", "mkldnn::")) else BOOKKEEPING
        out[owner.get(op, default)] += ms
    return out


def breakdown(step: Callable[[], None]) -> Dict[str, float]:
    """One profiled run of ``step``: milliseconds per category (:func:`categorize`), and under
    :data:`OUTSIDE` the wall time not inside any operator. The profiler adds a little to every
    operator, so the total runs a few percent above an unprofiled step."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall_ms = (time.perf_counter() - start) * 1e3
    self_ms: Dict[str, float] = {}
    for event in prof.key_averages():
        self_ms[event.key] = self_ms.get(event.key, 0.0) + event.self_cpu_time_total / 1e3
    out = categorize(self_ms)
    out[OUTSIDE] = max(0.0, wall_ms - sum(out.values()))
    return out


def format_breakdown(parts: Dict[str, float]) -> List[str]:
    """``category: ms (share)`` lines, largest first."""
    total = sum(parts.values())
    return [f"  {name}: {ms:.1f} ms ({100 * ms / total:.0f} %)"
            for name, ms in sorted(parts.items(), key=lambda kv: -kv[1])]
