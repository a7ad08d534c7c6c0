"""The oneDNN path for Linear layers (forward and backward) and its public fallback give the same
results. Which path a dtype takes depends on the CPU (bf16 needs AVX-512 BF16 or AMX): each test
asserts the path this CPU's capability check selects, and CI runs this file again with oneDNN capped
at AVX2 (``ONEDNN_MAX_CPU_ISA``) so that both paths are exercised whatever the machine."""
import pytest
import torch
from torch import nn

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models import linear_backend
from swinv2_backbone.models.linear_backend import linear, set_backend, use_onednn

SMALL = dict(arch=None, embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    set_backend("auto")


pytestmark = pytest.mark.isa


def test_onednn_is_available_on_this_cpu():
    # CI runs on x86-64 with oneDNN in the torch wheel (AVX2 at least): the fp32 fast path must really
    # be exercised; bf16 exactly where oneDNN says the CPU supports it.
    assert linear_backend.onednn_available(torch.float32)
    assert "oneDNN" in linear_backend.describe()
    assert linear_backend.onednn_available(torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_onednn_linear_matches_f_linear(activation, dtype, tol):
    torch.manual_seed(0)
    layer = nn.Linear(48, 72).to(dtype)
    x = torch.randn(5, 7, 48, dtype=dtype)
    with torch.no_grad():
        assert use_onednn(x, layer) == linear_backend.onednn_available(dtype)
        fast = linear(x, layer, activation)
        set_backend("torch")
        assert not use_onednn(x, layer)
        ref = linear(x, layer, activation)
    assert fast.shape == ref.shape == (5, 7, 72) and fast.dtype == dtype
    torch.testing.assert_close(fast.float(), ref.float(), rtol=tol, atol=tol)


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
    for backend in ("auto", "torch"):
        set_backend(backend)
        out = linear(x, layer, activation)
        assert ("_OnednnLinearBackward" in repr(out.grad_fn.next_functions) or
                out.grad_fn.name() == "_OnednnLinearBackward") == (
                    backend == "auto" and linear_backend.onednn_available(dtype))
        results.append([out, *torch.autograd.grad(out, [x, *layer.parameters()], grad)])
    for fast, ref in zip(*results):
        assert fast.shape == ref.shape and fast.dtype == ref.dtype == dtype
        assert ((fast.float() - ref.float()).norm() / ref.float().norm()).item() < tol


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
        assert not use_onednn(x, layer)
        assert linear(x, layer).dtype == torch.bfloat16


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match=r"one of \('auto', 'torch'\)"):
        set_backend("mkl")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.15)])
def test_backbone_outputs_agree_between_backends(dtype, tol):
    torch.manual_seed(0)
    model = Swinv2Backbone(**SMALL).eval().to(dtype)
    x = torch.randn(2, 3, 72, 56, dtype=dtype)
    with torch.no_grad():
        fast = model(x)
        set_backend("torch")
        ref = model(x)
    for a, b in zip(fast, ref):
        assert ((a.float() - b.float()).norm() / b.float().norm()).item() < tol


def test_training_gradients_agree_between_backends():
    torch.manual_seed(0)
    model = Swinv2Backbone(**SMALL, drop_path_rate=0.0)
    x = torch.randn(2, 3, 40, 32)
    # A random projection of the outputs: a loss like o.square().mean() of LayerNorm'd outputs is
    # nearly constant, and its gradient rounding noise.
    projections = [torch.randn(o.shape) for o in model(x)]
    grads = []
    for backend in ("auto", "torch"):
        set_backend(backend)
        model.zero_grad()
        sum((o * p).sum() for o, p in zip(model(x), projections)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert ((a - b).norm() / b.norm()).item() < 1e-4
