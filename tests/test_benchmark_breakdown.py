"""The benchmark's time breakdown (:mod:`swinv2_backbone.benchmark.breakdown`): operators land in
their categories, and a profiled step's parts add up to its wall time."""
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.benchmark import breakdown as breakdown_module
from swinv2_backbone.benchmark.breakdown import (BOOKKEEPING, CATEGORIES, OTHER, OUTSIDE, breakdown,
                                                 categorize, format_breakdown)
from swinv2_backbone.benchmark import measure
from swinv2_backbone.benchmark.measure import GemmRecorder, gemm_floor


def test_categorize_sums_operators_per_category():
    got = categorize({"aten::addmm": 2.0, "aten::addmm_": 1.0, "mkldnn::_linear_pointwise": 2.0,
                      "aten::bmm": 1.5, "aten::copy_": 0.5, "aten::index_select": 0.25,
                      "aten::add_": 0.125,
                      "autograd::engine::evaluate_function: MmBackward0": 0.0625})
    assert got["Linear GEMMs"] == 5.0
    assert got["attention GEMMs"] == 1.5
    assert got["copies and gathers"] == 0.75
    assert got[OTHER] == 0.125
    assert got[BOOKKEEPING] == 0.0625
    assert got["softmax"] == got["norms"] == got["GELU"] == 0.0
    assert list(got) == [name for name, _ in CATEGORIES] + [OTHER, BOOKKEEPING]


def test_breakdown_of_a_step_adds_up_to_its_wall_time(monkeypatch):
    a, w = torch.randn(512, 512), torch.randn(512, 512)
    step_ms = []

    def step() -> None:
        start = time.perf_counter()
        y = F.linear(a, w)
        for _ in range(3):
            y = F.linear(y, w) / 512
        y.t().contiguous()  # a copy
        step_ms.append((time.perf_counter() - start) * 1e3)

    step()
    parts = breakdown(step)
    assert parts["Linear GEMMs"] > parts["copies and gathers"] > 0
    assert parts[OUTSIDE] >= 0
    # the wall time the parts add up to holds the whole step
    assert sum(parts.values()) >= step_ms[-1]
    assert parts["attention GEMMs"] == parts["softmax"] == 0
    lines = format_breakdown(parts)
    # one "  name: ms (share %)" line per part, largest first (which part is largest depends on
    # the machine's load: a CI run once saw the divisions outweigh the GEMMs)
    shown = [line.strip().rsplit(": ", 1) for line in lines]
    assert sorted(name for name, _ in shown) == sorted(parts)
    assert all(line.startswith("  ") and line.endswith(" %)") for line in lines)
    shown_ms = [float(rest.split(" ms ")[0]) for _, rest in shown]
    assert shown_ms == sorted(shown_ms, reverse=True)
    assert shown_ms[0] == pytest.approx(max(parts.values()), abs=0.05)
    # on a clock that says the step took 10 s (far above its operators' time), the parts are
    # the operators' times plus the rest: exactly 10 s
    ticks = iter([100.0, 110.0])
    monkeypatch.setattr(breakdown_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    faked = breakdown(step)
    assert 0 < sum(ms for name, ms in faked.items() if name != OUTSIDE) < 10_000
    assert sum(faked.values()) == pytest.approx(10_000, rel=1e-12)


def _work(rec: GemmRecorder) -> int:
    return sum(2 * m * k * n for m, k, n in rec.shapes)


def test_the_floor_records_every_gemm_of_a_training_step():
    """A training step's Linear-type GEMMs (the floor's work) are each Linear's forward, input- and
    weight-gradient products, whichever op runs them (the MLP accumulates its weight gradients with
    ``addmm_``): 3x the forward's work, less the input gradient of the position-bias MLP's first
    layer (its input, the fixed coordinate table, needs none)."""
    torch.manual_seed(0)
    model = Swinv2Backbone(arch=None, embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                           window_size=4).train()
    x = torch.randn(2, 3, 64, 64)
    model(x)  # the first call also runs oneDNN's one-off capability self-test
    with GemmRecorder() as forward:
        model(x)
    with GemmRecorder() as step:
        sum(o.sum() for o in model(x)).backward()
    assert any(k == 2 for _, k, _ in forward.shapes)  # the position-bias MLP's first layer
    coords = sum(2 * m * k * n for m, k, n in forward.shapes if k == 2)
    assert _work(step) == 3 * _work(forward) - coords


def test_the_floor_times_each_shape_once_and_counts_every_occurrence(monkeypatch):
    """Shapes timed for one row are reused by the next (the rows of a case share their GEMMs);
    each occurrence of a shape adds its time, and a new shape is timed with the run's settings."""
    timed = []
    monkeypatch.setattr(measure, "_fastest_gemm", lambda shape, dtype, device, warmup, repeats:
                        timed.append((shape, warmup, repeats)) or 1e-3 * shape[0])
    a, b, w = torch.randn(3, 4), torch.randn(5, 4), torch.randn(6, 4)

    def step(*inputs):
        return lambda: [F.linear(x, w) for x in inputs]

    timings = {}
    first = gemm_floor(step(a, a, b), torch.float32, torch.device("cpu"), 0, 1, timings)
    assert timed == [((3, 4, 6), 1, 1), ((5, 4, 6), 1, 1)]  # one warm-up call at least
    assert first.seconds == pytest.approx(2 * 3e-3 + 5e-3) and first.flop == 2 * (2 * 3 + 5) * 4 * 6
    second = gemm_floor(step(b, torch.randn(7, 4)), torch.float32, torch.device("cpu"), 2, 5, timings)
    assert timed[2:] == [((7, 4, 6), 2, 5)] and second.seconds == pytest.approx(5e-3 + 7e-3)
