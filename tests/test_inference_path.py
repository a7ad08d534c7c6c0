"""The chunked, gather-based inference path of the blocks gives the training path's outputs, and is
taken exactly when nothing needs a gradient and no stochastic layer is active; the training MLP
that recomputes its GELU gives the plain MLP's outputs and gradients."""
import pytest
import torch

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models import layers
from swinv2_backbone.models.linear_backend import set_backend
from swinv2_backbone.models.ops import (from_windows, pad_to_multiple, to_windows, window_gather_index,
                                        window_partition)

SMALL = dict(arch=None, embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)


@pytest.fixture(autouse=True)
def _same_gemm_backend():
    # Both paths through F.linear, so the comparison is not blurred by GEMM rounding differences.
    set_backend("torch")
    yield
    set_backend("auto")


@pytest.mark.parametrize("batch, h, w, window, shift", [
    (1, 8, 8, 4, (0, 0)), (1, 8, 8, 4, (2, 2)), (2, 7, 10, 4, (2, 2)), (2, 5, 3, 4, (2, 0)),
    (3, 9, 9, 3, (1, 1)), (1, 2, 2, 4, (0, 0)),
])
def test_gather_index_equals_pad_roll_partition_and_inverts_it(batch, h, w, window, shift):
    x = torch.randn(batch, h, w, 5)
    forward, inverse, padding = window_gather_index(batch, h, w, window, shift, x.device)
    want = window_partition(torch.roll(pad_to_multiple(x, window), (-shift[0], -shift[1]), (1, 2)),
                            window).reshape(-1, 5)
    got = x.reshape(-1, 5).index_select(0, forward)
    if padding is not None:
        got[padding] = 0
    assert torch.equal(got, want)
    assert (padding is None) == (h % window == 0 and w % window == 0)
    assert torch.equal(got.index_select(0, inverse), x.reshape(-1, 5))


@pytest.mark.parametrize("batch, h, w, window, shift", [
    (1, 8, 8, 4, (2, 2)), (2, 7, 10, 4, (2, 2)), (2, 10, 5, 4, (2, 0)), (3, 9, 9, 3, (1, 1)),
])
def test_roll_first_gathers_equal_roll_then_pad_and_invert_it(batch, h, w, window, shift):
    # timm's order: roll the h x w map, then pad (differs from pad-then-roll unless no padding)
    x = torch.randn(batch, h, w, 5)
    want = window_partition(pad_to_multiple(torch.roll(x, (-shift[0], -shift[1]), (1, 2)), window),
                            window)
    got = to_windows(x, window, shift, roll_first=True)
    assert torch.equal(got, want)
    padded = bool(h % window or w % window)
    assert padded == (not torch.equal(got, to_windows(x, window, shift)))
    assert torch.equal(from_windows(got, h, w, shift, roll_first=True), x)


@pytest.mark.parametrize("h, w, window, shift", [(8, 8, 4, (2, 2)), (7, 10, 4, (2, 2)),
                                                 (5, 3, 4, (2, 0)), (9, 9, 3, (0, 0))])
def test_window_gathers_match_roll_and_partition_with_gradients(h, w, window, shift):
    x = torch.randn(2, h, w, 5, requires_grad=True)
    hp, wp = h + (-h) % window, w + (-w) % window
    want = window_partition(torch.roll(pad_to_multiple(x, window), (-shift[0], -shift[1]), (1, 2)),
                            window)
    got = to_windows(x, window, shift)
    assert torch.equal(got, want)
    up = torch.randn_like(got)
    (gx,) = torch.autograd.grad(got, x, up)
    (wx,) = torch.autograd.grad(want, x, up)
    assert torch.equal(gx, wx)
    # and back: reverse, roll back, crop; padding rows get no gradient
    windows = torch.randn_like(want).requires_grad_()
    back = from_windows(windows, h, w, shift)
    ref = windows.view(2, hp // window, wp // window, window, window, 5)
    ref = torch.roll(ref.permute(0, 1, 3, 2, 4, 5).reshape(2, hp, wp, 5), shift, (1, 2))[:, :h, :w]
    assert torch.equal(back, ref)
    up = torch.randn_like(back)
    assert torch.equal(torch.autograd.grad(back, windows, up)[0],
                       torch.autograd.grad(ref, windows, up)[0])


@pytest.mark.parametrize("chunk_tokens", [16, 48, 4096])  # 1 window, 3 (chunks cross images), all
@pytest.mark.parametrize("size, rule", [((64, 64), "pad"), ((52, 76), "pad"), ((52, 76), "official"),
                                        ((20, 36), "pad")])
def test_chunked_inference_equals_the_training_path(monkeypatch, chunk_tokens, size, rule):
    monkeypatch.setattr(layers, "CHUNK_TOKENS", chunk_tokens)
    torch.manual_seed(0)
    model = Swinv2Backbone(**SMALL, small_map=rule).eval()
    for p in model.parameters():  # break the symmetry of the default init
        p.data.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        fast = model(x)
    ref = model(x.clone().requires_grad_())  # a gradient is needed: the unchunked path
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5)


def test_chunked_path_only_where_no_gradient_and_no_stochastic_layer():
    block = layers.SwinV2Block(16, 2, 4, shifted=True, drop_path=0.1).eval()
    x = torch.randn(1, 8, 8, 16)
    with torch.no_grad():
        assert block._chunkable(x)
    assert not block._chunkable(x)  # parameters need gradients
    assert not block._chunkable(x.requires_grad_())
    block.requires_grad_(False)  # a frozen block (frozen_stages) inside a training step
    assert block._chunkable(x.detach())
    assert not block._chunkable(x)  # but the input needs a gradient
    block.train()  # dropout / drop path active
    with torch.no_grad():
        assert not block._chunkable(x)


def _reference_mlp(mlp: layers.Mlp, x: torch.Tensor) -> torch.Tensor:
    return mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))


@pytest.mark.isa
@pytest.mark.parametrize("chunk", [16, 2048])  # 70 tokens: five chunks (the last one short), or one
@pytest.mark.parametrize("autocast", [False, True])
def test_training_mlp_recomputes_gelu_with_the_same_outputs_and_gradients(autocast, chunk, monkeypatch):
    monkeypatch.setattr(layers, "CHUNK_TOKENS", chunk)
    torch.manual_seed(0)
    mlp = layers.Mlp(16, 64)
    x = torch.randn(2, 5, 7, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got, want = mlp(x), _reference_mlp(mlp, x)
    assert got.grad_fn.name().endswith("_GeluMlpBackward")  # the memory-saving path was taken
    assert got.dtype == want.dtype == (torch.bfloat16 if autocast else torch.float32)
    torch.testing.assert_close(got, want)  # a chunk's GEMM may round differently: 1 ulp
    grad = torch.randn_like(got)
    inputs = [x, *mlp.parameters()]
    for a, b in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(want, inputs, grad)):
        assert a.dtype == b.dtype == torch.float32
        if autocast:  # weight and bias gradients summed in fp32 over chunks (autograd: one bf16 GEMM)
            assert ((a - b).norm() / b.norm()).item() < 1e-2
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_training_mlp_computes_only_the_gradients_asked_for():
    mlp = layers.Mlp(16, 64)
    mlp.fc1.requires_grad_(False)
    x = torch.randn(40, 16)
    out = mlp(x)
    assert out.grad_fn.name().endswith("_GeluMlpBackward")
    out.square().sum().backward()
    assert mlp.fc1.weight.grad is None and mlp.fc1.bias.grad is None and x.grad is None
    want = torch.nn.functional.gelu(mlp.fc1(x)).t() @ (2 * out.detach())
    torch.testing.assert_close(mlp.fc2.weight.grad, want.t(), rtol=1e-5, atol=1e-5)


def test_training_mlp_keeps_the_plain_path_with_dropout():
    mlp = layers.Mlp(16, 64, drop=0.5).train()
    out = mlp(torch.randn(3, 16, requires_grad=True))
    assert not out.grad_fn.name().endswith("_GeluMlpBackward")
    mlp.eval()
    assert mlp(torch.randn(3, 16, requires_grad=True)).grad_fn.name().endswith("_GeluMlpBackward")


@pytest.mark.parametrize("rows, row_tokens, want", [
    (16384, 1, 2048),  # a large map: at most CHUNK_TOKENS tokens
    (4096, 1, 512),  # split into CHUNK_SPLIT chunks
    (1024, 1, 256),  # not below MIN_CHUNK_TOKENS
    (100, 1, 256),  # a map smaller than the minimum: one chunk
    (256, 64, 32),  # 64-token windows: 32 windows = 2048 tokens
    (64, 64, 8),  # 4096 tokens in 8 chunks of 8 windows
    (2, 64, 4),  # at least the minimum's worth of whole windows
    (3, 1024, 1),  # windows larger than a chunk: one at a time
])
def test_chunk_rows(rows, row_tokens, want):
    assert layers.chunk_rows(rows, row_tokens) == want


def test_inference_peak_memory_grows_linearly_with_the_pixels():
    """Chunk temporaries scale with the map (down to a minimum), so small inputs cost no more per
    pixel than large ones (a fixed 4096-token chunk gave 275 vs 183 MiB per Mpx at 256^2 vs 512^2)."""
    from swinv2_backbone.benchmark.measure import peak_memory_mib

    model = Swinv2Backbone(arch="tiny").eval()
    per_mpx = []
    for side in (256, 512):
        x = torch.randn(1, 3, side, side)

        def run():
            with torch.no_grad():
                model(x)

        run()  # fills the mask caches
        per_mpx.append(peak_memory_mib(run, x.device) / (side * side / 1e6))
    assert max(per_mpx) / min(per_mpx) < 1.3, per_mpx
