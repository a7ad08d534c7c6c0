"""The oneDNN path for Linear layers (forward and backward) gives the reference's results. Which path a dtype takes depends on the CPU (bf16 needs AVX-512 BF16 or AMX): each test
asserts the path this CPU's capability check selects, and CI runs this file again with oneDNN capped
at AVX2 (``ONEDNN_MAX_CPU_ISA``) so that both paths are exercised whatever the machine."""
import dataclasses

import pytest
import torch
from torch import nn

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models import fast, kernels
from swinv2_backbone.models.fast import onednn
from kit import SMALL


def linear(x, layer, activation="none"):
    return onednn.linear(x, layer.weight, layer.bias, activation)


def reference(x, layer, activation="none"):
    out = kernels.linear(x, layer)
    return nn.functional.gelu(out) if activation == "gelu" else out


pytestmark = pytest.mark.isa


def test_onednn_is_available_on_this_cpu():
    # CI runs on x86-64 with oneDNN in the torch wheel (AVX2 at least): the fp32 fast path must really
    # be exercised; bf16 exactly where oneDNN says the CPU supports it.
    assert onednn.onednn_available(torch.float32)
    assert "oneDNN" in fast.describe()
    assert onednn.onednn_available(torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with fast.fast_paths(False):
        assert fast.describe() == "reference kernels (F.linear)"


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_onednn_linear_matches_f_linear(activation, dtype, tol):
    torch.manual_seed(0)
    layer = nn.Linear(48, 72).to(dtype)
    x = torch.randn(5, 7, 48, dtype=dtype)
    with torch.no_grad():
        assert onednn.onednn_usable(x, layer.weight) == onednn.onednn_available(dtype)
        got = linear(x, layer, activation)
        ref = reference(x, layer, activation)
    assert got.shape == ref.shape == (5, 7, 72) and got.dtype == dtype
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_weights_of_any_strides_go_through_onednn_as_they_are(layout, dtype, tol, monkeypatch):
    # the backward passes weight.t() views: oneDNN must read them right, with no copy made first
    # (where oneDNN lacks the dtype, F.linear takes them)
    torch.manual_seed(0)
    base = torch.randn(48, 72, dtype=dtype) if layout == "transposed" else torch.randn(72, 60,
                                                                                       dtype=dtype)
    weight = base.t() if layout == "transposed" else base[:, 5:53]
    assert weight.shape == (72, 48) and not weight.is_contiguous()
    seen = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(onednn.torch.ops.mkldnn, "_linear_pointwise",
                        lambda x, w, *rest: seen.append(w.stride()) or real(x, w, *rest),
                        raising=False)
    x = torch.randn(5, 7, 48, dtype=dtype)
    got = onednn.linear_forward(x, weight, None)
    assert seen == ([weight.stride()] if onednn.onednn_available(dtype) else [])
    torch.testing.assert_close(got.float(), nn.functional.linear(x.float(), weight.float()),
                               rtol=tol, atol=tol)


def test_weight_updates_are_seen_at_once_whatever_the_update_path():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.no_grad():
        before = linear(x, layer)
        layer.weight.add_(1.0)  # in place: bumps the version counter
        after = linear(x, layer)
        torch.testing.assert_close(after, nn.functional.linear(x, layer.weight, layer.bias))
        layer.weight.data.mul_(-1.0)  # through .data: no version bump (EMA swaps, mean teachers)
        flipped = linear(x, layer)
        torch.testing.assert_close(flipped, nn.functional.linear(x, layer.weight, layer.bias))
    assert not torch.allclose(before, after) and not torch.allclose(after, flipped)


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_gradients_through_onednn_match_f_linear(activation, with_bias, dtype, tol):
    torch.manual_seed(0)
    layer = nn.Linear(48, 72, bias=with_bias).to(dtype)
    x = torch.randn(5, 7, 48, dtype=dtype, requires_grad=True)
    grad = torch.randn(5, 7, 72, dtype=dtype)
    results = []
    for op in (linear, reference):
        out = op(x, layer, activation)
        assert ("_OnednnLinearBackward" in repr(out.grad_fn.next_functions) or
                out.grad_fn.name() == "_OnednnLinearBackward") == (
                    op is linear and onednn.onednn_available(dtype))
        results.append([out, *torch.autograd.grad(out, [x, *layer.parameters()], grad)])
    for got, ref in zip(*results):
        assert got.shape == ref.shape and got.dtype == ref.dtype == dtype
        assert ((got.float() - ref.float()).norm() / ref.float().norm()).item() < tol


def test_only_the_gradients_asked_for():
    layer = nn.Linear(8, 4)
    layer.weight.requires_grad_(False)
    x = torch.randn(3, 8)
    out = linear(x, layer)
    assert out.grad_fn.name() == "_OnednnLinearBackward"
    out.sum().backward()
    assert layer.weight.grad is None and x.grad is None
    torch.testing.assert_close(layer.bias.grad, torch.full((4,), 3.0))


def test_autocast_takes_f_linear():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn.onednn_usable(x, layer.weight)
        out = linear(x, layer)
        assert out.dtype == torch.bfloat16 and out.grad_fn.name() != "_OnednnLinearBackward"


def test_the_switch_refuses_what_is_not_a_flag_or_kernels():
    with pytest.raises(TypeError, match="True or False"):
        fast.set_fast_paths("off")
    with pytest.raises(TypeError, match="expected a Kernels"):
        fast.use("reference")
    assert fast.active() is fast.FAST


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.15)])
def test_backbone_outputs_agree_with_onednn_alone(dtype, tol):
    torch.manual_seed(0)
    model = Swinv2Backbone(**SMALL).eval().to(dtype)
    x = torch.randn(2, 3, 72, 56, dtype=dtype)
    with torch.no_grad():
        with fast.fast_paths(False):
            ref = model(x)
        fast.use(dataclasses.replace(kernels.REFERENCE, linear=onednn.linear_layer))
        try:
            got = model(x)
        finally:
            fast.set_fast_paths(True)
    for a, b in zip(got, ref):
        assert ((a.float() - b.float()).norm() / b.float().norm()).item() < tol


def test_training_gradients_agree_with_onednn_alone():
    torch.manual_seed(0)
    model = Swinv2Backbone(**SMALL)
    x = torch.randn(2, 3, 40, 32)
    # A random projection of the outputs: a loss like o.square().mean() of LayerNorm'd outputs is
    # nearly constant, and its gradient rounding noise.
    projections = [torch.randn(o.shape) for o in model(x)]
    grads = []
    for ops in (dataclasses.replace(kernels.REFERENCE, linear=onednn.linear_layer), kernels.REFERENCE):
        fast.use(ops)
        try:
            model.zero_grad()
            sum((o * p).sum() for o, p in zip(model(x), projections)).backward()
        finally:
            fast.set_fast_paths(True)
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert ((a - b).norm() / b.norm()).item() < 1e-4
