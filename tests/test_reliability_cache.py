"""Reliability: the inference cache of attention masks never serves a stale mask.

The position bias comes from the ``cpb_mlp`` weights, so whatever changes those weights (or the
``pretrained_window_size`` attribute) must change the next inference output exactly as a freshly
built model with the same weights computes it. The updates below are the ones real training code
performs: in-place updates through ``.data`` (mmengine's EMA, mean-teacher momentum updates),
``load_state_dict(assign=True)`` and attribute changes after construction.
"""
from __future__ import annotations

from typing import Dict, Tuple

import pytest
import torch
from mmengine.model import ExponentialMovingAverage
from torch import nn

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models.attention import WindowAttentionV2
from kit import TINY

CFG = dict(TINY, depths=(2, 2, 2, 2))
#: Rounds of weight replacement: at the 2.5-6.5 % address-reuse rate seen here (glibc), a cache
#: keyed on storage addresses serves a stale mask within 1000 rounds with probability > 99.99 %.
ASSIGN_ROUNDS = 1000


pytestmark = pytest.mark.usefixtures("one_thread")


def build(seed: int, **kw) -> Swinv2Backbone:
    """A tiny model whose position-bias MLPs are far from their init (so stale masks show)."""
    torch.manual_seed(seed)
    model = Swinv2Backbone(**{**CFG, **kw})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WindowAttentionV2):
                for p in m.cpb_mlp.parameters():
                    p.normal_(0.0, 1.0)
    return model


def infer(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Inference as validation loops run it (eval, no grad: the cached path)."""
    model.eval()
    with torch.no_grad():
        return model(x)


def reference(state: Dict[str, torch.Tensor], x: torch.Tensor, **kw) -> Tuple[torch.Tensor, ...]:
    """Outputs of a freshly built model (empty caches) holding ``state``."""
    fresh = build(12345, **kw)
    fresh.load_state_dict(state)
    return infer(fresh, x)


def assert_same(outs: Tuple[torch.Tensor, ...], ref: Tuple[torch.Tensor, ...], label: str = "") -> None:
    """Bit-equal outputs; ``label`` prefixes the failure message."""
    assert len(outs) == len(ref)
    for i, (o, r) in enumerate(zip(outs, ref)):
        assert torch.equal(o, r), f"{label}output {i}: max diff {(o - r).abs().max().item():.3g}"


X = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))


def test_fresh_models_with_different_weights_differ():
    """Control: the cpb weights do change the outputs, so a stale mask would be visible."""
    a, b = infer(build(0), X), infer(build(1), X)
    assert not torch.equal(a[0], b[0])


def test_in_place_data_update_mean_teacher_style():
    """mmdet's mean-teacher hook updates the teacher with ``p.data.mul_().add_()``."""
    teacher, student = build(0), build(1)
    infer(teacher, X)  # warms the cache
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.data.mul_(0.5).add_(s.data, alpha=0.5)
    assert_same(infer(teacher, X), reference(teacher.state_dict(), X))


def test_mmengine_exponential_moving_average_module():
    """The averaged copy kept by mmengine's ``ExponentialMovingAverage`` (``lerp_`` on ``.data``)."""
    source = build(0)
    ema = ExponentialMovingAverage(source, momentum=0.5)
    infer(ema.module, X)  # warms the averaged model's cache
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    ema.update_parameters(source)  # first call copies
    ema.update_parameters(source)  # later calls lerp
    assert_same(infer(ema.module, X), reference(ema.module.state_dict(), X))


def test_mmengine_ema_hook_style_swap():
    """``EMAHook`` swaps EMA weights into the model with ``p.data.copy_`` before validation."""
    model, averaged = build(0), build(1)
    infer(model, X)  # an earlier validation
    for p, q in zip(model.parameters(), averaged.parameters()):
        tmp = q.data.clone()
        q.data.copy_(p.data)
        p.data.copy_(tmp)
    assert_same(infer(model, X), reference(model.state_dict(), X))


def test_load_state_dict_with_assign_replaces_weights():
    """``assign=True`` swaps in new tensors, and freed storage is often reused at the same address
    with a fresh version counter. Probed on one attention module (few allocations in between, so
    reuse is frequent); a correct cache passes every round, an address-keyed one fails some."""
    torch.manual_seed(0)
    attn = WindowAttentionV2(16, 2).eval()
    gen = torch.Generator().manual_seed(1)
    for r in range(ASSIGN_ROUNDS):
        state = {k: torch.randn(v.shape, generator=gen) for k, v in attn.state_dict().items()}
        attn.load_state_dict(state, assign=True)
        del state
        with torch.no_grad():
            got = attn.attention_mask(4, (8, 8), (0, 0), torch.float32)  # cached after round 0
            want = attn.position_bias(4).unsqueeze(0)  # computed from the current weights
        assert torch.equal(got, want), f"round {r}: stale mask"


@pytest.mark.parametrize("pretrained", [4, 8, 0])
def test_pretrained_window_size_changed_after_construction(pretrained):
    model = build(0, pretrained_window_sizes=6)
    infer(model, X)
    for m in model.modules():
        if isinstance(m, WindowAttentionV2):
            m.pretrained_window_size = pretrained
    ref = reference(model.state_dict(), X, pretrained_window_sizes=pretrained)
    assert_same(infer(model, X), ref)


def test_optimizer_step_between_validations():
    """The ordinary path: an optimizer step (in-place on the parameters) between two validations."""
    model = build(0)
    infer(model, X)
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    sum(o.square().mean() for o in model(X)).backward()
    optim.step()
    assert_same(infer(model, X), reference(model.state_dict(), X))
