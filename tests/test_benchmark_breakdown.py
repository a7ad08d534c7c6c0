"""The benchmark's time breakdown (:mod:`swinv2_backbone.benchmark.breakdown`): operators land in
their categories, and a profiled step's parts add up to its wall time."""
import torch
import torch.nn.functional as F

from swinv2_backbone.benchmark.breakdown import (BOOKKEEPING, CATEGORIES, OTHER, OUTSIDE, breakdown,
                                                 categorize, format_breakdown)


def test_categorize_sums_operators_per_category():
    got = categorize({"aten::addmm": 3.0, "mkldnn::_linear_pointwise": 2.0, "aten::bmm": 1.5,
                      "aten::copy_": 0.5, "aten::index_select": 0.25, "aten::add_": 0.125,
                      "autograd::engine::evaluate_function: MmBackward0": 0.0625})
    assert got["Linear GEMMs"] == 5.0
    assert got["attention GEMMs"] == 1.5
    assert got["copies and gathers"] == 0.75
    assert got[OTHER] == 0.125
    assert got[BOOKKEEPING] == 0.0625
    assert got["softmax"] == got["norms"] == got["GELU"] == 0.0
    assert list(got) == [name for name, _ in CATEGORIES] + [OTHER, BOOKKEEPING]


def test_breakdown_of_a_step_adds_up_to_its_wall_time():
    a, w = torch.randn(512, 512), torch.randn(512, 512)

    def step() -> None:
        y = F.linear(a, w)
        for _ in range(3):
            y = F.linear(y, w) / 512
        y.t().contiguous()  # a copy

    step()
    parts = breakdown(step)
    assert parts["Linear GEMMs"] > parts["copies and gathers"] > 0
    assert parts[OUTSIDE] >= 0
    assert parts["attention GEMMs"] == parts["softmax"] == 0
    lines = format_breakdown(parts)
    assert lines[0].startswith("  Linear GEMMs: ") and lines[0].endswith("%)")
    assert len(lines) == len(parts)
