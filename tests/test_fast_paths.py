"""Every fast path (:mod:`swinv2_backbone.models.fast`) against the reference kernels
(:mod:`swinv2_backbone.models.kernels`): outputs and gradients, each strategy alone and all together
(whole-backbone cases for SwinV2 and Swin V1, which share the strategies), and each taken exactly
where it applies. oneDNN's own tests are in ``test_fast_onednn.py``."""
import dataclasses

import pytest
import torch

from swinv2_backbone import SwinBackbone, Swinv2Backbone
from swinv2_backbone.models import blocks, fast, kernels
from swinv2_backbone.models.fast import chunked, mlp, scores, windows
from swinv2_backbone.models.ops import pad_to_multiple, window_partition
from kit import SMALL


@pytest.fixture
def alone():
    """``alone(op=fn)``: the reference kernels with one fast operation (so that comparisons are not
    blurred by another strategy's GEMM rounding); the default is restored afterwards."""
    def use(**ops):
        fast.use(dataclasses.replace(kernels.REFERENCE, **ops))
    yield use
    fast.set_fast_paths(True)


#: The backbones whose blocks run the strategies (V1 with its pre-norm, V2 with its post-norm).
BACKBONES = pytest.mark.parametrize("cls", [Swinv2Backbone, SwinBackbone], ids=["v2", "v1"])


def random_model(cls: type = Swinv2Backbone, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cls(**{**SMALL, "drop_path_rate": 0.1, **kw})  # the default stochastic depth
    for p in model.parameters():  # break the symmetry of the default init
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 difference (0 for two zero tensors: e.g. the gradient of a temperature whose
    windows see a single token)."""
    diff, norm = (a.float() - b.float()).norm().item(), b.float().norm().item()
    return diff / norm if norm else diff


def test_the_switch():
    assert fast.active() is fast.FAST  # the default
    with fast.fast_paths(False):
        assert fast.active() is kernels.REFERENCE
        with fast.fast_paths(True):
            assert fast.active() is fast.FAST
        assert fast.active() is kernels.REFERENCE
    assert fast.active() is fast.FAST


@pytest.mark.parametrize("batch, h, w, window, shift", [
    (1, 8, 8, 4, (0, 0)), (1, 8, 8, 4, (2, 2)), (2, 7, 10, 4, (2, 2)), (2, 5, 3, 4, (2, 0)),
    (3, 9, 9, 3, (1, 1)), (1, 2, 2, 4, (0, 0)),
])
def test_gather_index_equals_pad_roll_partition_and_inverts_it(batch, h, w, window, shift):
    x = torch.randn(batch, h, w, 5)
    forward, inverse, padding = windows.window_gather_index(batch, h, w, window, shift, x.device)
    want = window_partition(torch.roll(pad_to_multiple(x, window), (-shift[0], -shift[1]), (1, 2)),
                            window).reshape(-1, 5)
    got = x.reshape(-1, 5).index_select(0, forward)
    if padding is not None:
        got[padding] = 0
    assert torch.equal(got, want)
    assert (padding is None) == (h % window == 0 and w % window == 0)
    assert torch.equal(got.index_select(0, inverse), x.reshape(-1, 5))


@pytest.mark.parametrize("roll_first", [False, True])
@pytest.mark.parametrize("h, w, window, shift", [(8, 8, 4, (2, 2)), (7, 10, 4, (2, 2)),
                                                 (5, 3, 4, (2, 0)), (10, 5, 4, (2, 0)),
                                                 (9, 9, 3, (1, 1)), (9, 9, 3, (0, 0))])
def test_window_gathers_equal_the_reference_with_gradients(h, w, window, shift, roll_first):
    x = torch.randn(2, h, w, 5, requires_grad=True)
    got = windows.to_windows(x, window, shift, roll_first)
    want = kernels.to_windows(x, window, shift, roll_first)
    assert torch.equal(got, want)
    up = torch.randn_like(got)
    assert torch.equal(torch.autograd.grad(got, x, up)[0], torch.autograd.grad(want, x, up)[0])
    # and back: merge, roll back, crop; padding rows get no gradient
    wins = torch.randn_like(want).requires_grad_()
    back = windows.from_windows(wins, window, h, w, shift, roll_first)
    ref = kernels.from_windows(wins, window, h, w, shift, roll_first)
    assert torch.equal(back, ref)
    assert torch.equal(kernels.from_windows(want, window, h, w, shift, roll_first), x)  # an inverse
    up = torch.randn_like(back)
    assert torch.equal(torch.autograd.grad(back, wins, up)[0], torch.autograd.grad(ref, wins, up)[0])


def test_roll_first_differs_exactly_where_the_map_is_padded():
    x = torch.randn(1, 7, 10, 3)
    assert not torch.equal(kernels.to_windows(x, 4, (2, 2), True), kernels.to_windows(x, 4, (2, 2)))
    x = torch.randn(1, 8, 8, 3)
    assert torch.equal(kernels.to_windows(x, 4, (2, 2), True), kernels.to_windows(x, 4, (2, 2)))


@pytest.mark.parametrize("batch", [1, 3])  # one image: the mask is added inside the GEMM
def test_scores_equal_the_reference_with_gradients(batch):
    q = torch.randn(batch, 4, 2, 16, 8, requires_grad=True)
    k = torch.randn(batch, 4, 2, 16, 8, requires_grad=True)
    mask = torch.randn(4, 2, 16, 16)
    got, want = scores.scores(q, k, mask), kernels.scores(q, k, mask)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    up = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k), up), torch.autograd.grad(want, (q, k), up)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk_tokens", [16, 48, 4096])  # 1 window, 3 (chunks cross images), all
@pytest.mark.parametrize("size, rule", [((64, 64), "pad"), ((52, 76), "pad"), ((52, 76), "official"),
                                        ((20, 36), "pad"), ((52, 76), "timm")])
@BACKBONES
def test_chunked_inference_equals_the_reference(monkeypatch, alone, chunk_tokens, size, rule, cls):
    monkeypatch.setattr(chunked, "CHUNK_TOKENS", chunk_tokens)
    model = random_model(cls, small_map=rule).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        with fast.fast_paths(False):
            ref = model(x)
        alone(block=chunked.block_inference)
        got = model(x)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_path_only_where_no_gradient_and_no_dropout():
    block = blocks.SwinV2Block(16, 2, 4, shifted=True, drop_path=0.1).eval()
    x = torch.randn(1, 8, 8, 16)
    with torch.no_grad():
        assert chunked.chunkable(block.parts(x))
    assert not chunked.chunkable(block.parts(x))  # parameters need gradients
    assert not chunked.chunkable(block.parts(x.requires_grad_()))
    block.requires_grad_(False)  # a frozen block (frozen_stages) inside a training step
    assert chunked.chunkable(block.parts(x.detach()))
    assert not chunked.chunkable(block.parts(x))  # but the input needs a gradient
    block.train()  # drop path active: drawn as the block draws it
    with torch.no_grad():
        assert chunked.chunkable(block.parts(x))
    dropping = blocks.SwinV2Block(16, 2, 4, shifted=True, drop=0.1).train()
    with torch.no_grad():
        assert not chunked.chunkable(dropping.parts(x))  # per-element draws: not reproduced
        assert chunked.chunkable(dropping.eval().parts(x))


def test_a_declining_fast_kernel_gives_the_reference_result(monkeypatch):
    """Where the chunked block declines (a gradient is needed) it runs the reference kernel: the
    same numbers, and the chunk loop is never entered."""
    block = blocks.SwinV2Block(16, 2, 4, shifted=True).eval()
    x = torch.randn(1, 8, 8, 16)
    monkeypatch.setattr(chunked, "_attention_half", None)  # would raise if the loop ran
    torch.testing.assert_close(chunked.block_inference(x, block.parts(x)),
                               kernels.block(x, block.parts(x)), rtol=0, atol=0)


def test_fast_checkpoint_takes_the_inference_path_first():
    """The first pass of a checkpointed block runs the chunked inference path; the recomputation in
    the backward pass runs the block with autograd (the chunked path declines there), as does every
    pass of the trailing blocks ``with_cp`` leaves un-checkpointed (:func:`blocks.recompute_plan`:
    at 32 x 32 the maps hold 64, 32, 16 and 8 units of tokens x channels, so stages 3 and 4 fit in
    the 64 of a stage-1 block)."""
    calls = []
    original = chunked.block_inference

    def spy(x, parts):
        calls.append(chunked.chunkable(parts))
        return original(x, parts)

    fast.use(dataclasses.replace(fast.FAST, block=spy))
    model = random_model(with_cp=True, depths=(2, 2, 2, 2)).train()
    try:
        outs = model(torch.randn(1, 3, 32, 32))
        assert calls == [True] * 4 + [False] * 4  # checkpointed first passes: chunked
        sum(o.sum() for o in outs).backward()
        assert calls[8:] == [False] * 4  # the four checkpointed blocks recomputed with autograd
    finally:
        fast.set_fast_paths(True)


@BACKBONES
def test_with_cp_keeps_the_peak_of_checkpointing_every_block(cls, monkeypatch):
    """Leaving the trailing blocks un-checkpointed (:func:`blocks.recompute_plan`) does not raise
    the step's peak tensor memory above checkpointing every block, which stays well below no
    checkpointing; the trailing blocks are then not recomputed."""
    from swinv2_backbone.benchmark.measure import peak_memory_mib
    from swinv2_backbone.models import backbone

    model = random_model(cls, with_cp=True, embed_dims=32, depths=(2, 2, 6, 2),
                         num_heads=(1, 2, 4, 8), window_size=8).train()
    x = torch.randn(2, 3, 256, 256)

    def step():
        sum(o.mean() for o in model(x)).backward()
        model.zero_grad(set_to_none=True)

    def peak(plan=None):
        if plan is not None:
            monkeypatch.setattr(backbone, "recompute_plan", plan)
        step()  # warm: caches built once
        return peak_memory_mib(step, torch.device("cpu"))

    planned = peak()
    assert model._recompute_plan(model.patch_embed(x))[2:] == [[True] * 3 + [False] * 3, [False] * 2]
    every = peak(lambda sizes, recorded: list(recorded))
    model.with_cp = False
    none = peak()
    assert planned <= every * 1.02, (planned, every)
    assert every < 0.6 * none, (every, none)


@pytest.mark.isa
@pytest.mark.parametrize("chunk", [16, 2048])  # 70 tokens: five chunks (the last one short), or one
@pytest.mark.parametrize("autocast", [False, True])
def test_training_mlp_recomputes_gelu_with_the_reference_outputs_and_gradients(autocast, chunk,
                                                                                monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_TOKENS", chunk)
    torch.manual_seed(0)
    module = blocks.Mlp(16, 64)
    x = torch.randn(2, 5, 7, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = mlp.mlp(x, module.fc1, module.fc2, 0.0)
        want = kernels.mlp(x, module.fc1, module.fc2, 0.0)
    assert got.grad_fn.name().endswith("_GeluMlpBackward")  # the memory-saving path was taken
    assert got.dtype == want.dtype == (torch.bfloat16 if autocast else torch.float32)
    torch.testing.assert_close(got, want)  # a chunk's GEMM may round differently: 1 ulp
    grad = torch.randn_like(got)
    inputs = [x, *module.parameters()]
    for a, b in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(want, inputs, grad)):
        assert a.dtype == b.dtype == torch.float32
        if autocast:  # weight and bias gradients summed in fp32 over chunks (autograd: one bf16 GEMM)
            assert rel(a, b) < 1e-2
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_training_mlp_computes_only_the_gradients_asked_for():
    module = blocks.Mlp(16, 64)
    module.fc1.requires_grad_(False)
    x = torch.randn(40, 16)
    out = mlp.mlp(x, module.fc1, module.fc2, 0.0)
    assert out.grad_fn.name().endswith("_GeluMlpBackward")
    out.square().sum().backward()
    assert module.fc1.weight.grad is None and module.fc1.bias.grad is None and x.grad is None
    want = torch.nn.functional.gelu(module.fc1(x)).t() @ (2 * out.detach())
    torch.testing.assert_close(module.fc2.weight.grad, want.t(), rtol=1e-5, atol=1e-5)


def test_training_mlp_keeps_the_plain_path_with_dropout():
    module = blocks.Mlp(16, 64, drop=0.5).train()
    out = module(torch.randn(3, 16, requires_grad=True))
    assert not out.grad_fn.name().endswith("_GeluMlpBackward")
    module.eval()
    assert module(torch.randn(3, 16, requires_grad=True)).grad_fn.name().endswith("_GeluMlpBackward")
    with fast.fast_paths(False):
        assert not module(torch.randn(3, 16, requires_grad=True)).grad_fn.name().endswith(
            "_GeluMlpBackward")


@pytest.mark.parametrize("rows, row_tokens, want", [
    (65536, 1, 2048),  # a large map: at most CHUNK_TOKENS tokens
    (12288, 1, 1536),  # split into CHUNK_SPLIT chunks
    (4096, 1, 1024),  # not below MIN_CHUNK_TOKENS
    (100, 1, 1024),  # a map smaller than the minimum: one chunk
    (256, 64, 32),  # 64-token windows: 32 windows = 2048 tokens
    (192, 64, 24),  # 12288 tokens in 8 chunks of 24 windows
    (2, 64, 16),  # at least the minimum's worth of whole windows
    (3, 4096, 1),  # windows larger than a chunk: one at a time
])
def test_chunk_rows(rows, row_tokens, want):
    assert chunked.chunk_rows(rows, row_tokens) == want


@pytest.mark.parametrize("size, rule", [((52, 76), "pad"), ((40, 32), "timm")])
@BACKBONES
def test_all_fast_paths_together_equal_the_reference(size, rule, cls):
    """Outputs (inference: chunked) and training gradients of the whole backbone."""
    model = random_model(cls, small_map=rule, drop_path_rate=0.0)
    x = torch.randn(2, 3, *size)
    # A random projection of the outputs: a loss like o.square().mean() of LayerNorm'd outputs is
    # nearly constant, and its gradient rounding noise.
    projections = [torch.randn(o.shape) for o in model(x)]
    results = []
    for enabled in (True, False):
        with fast.fast_paths(enabled):
            with torch.no_grad():
                outs = model.eval()(x)
            model.train().zero_grad()
            sum((o * p).sum() for o, p in zip(model(x), projections)).backward()
        results.append((outs, [p.grad.clone() for p in model.parameters()]))
    (outs, grads), (ref_outs, ref_grads) = results
    for a, b in zip(outs, ref_outs):
        assert rel(a, b) < 1e-5
    for a, b in zip(grads, ref_grads):
        assert rel(a, b) < 1e-4


def test_inference_peak_memory_grows_linearly_with_the_pixels():
    """Chunk temporaries scale with the map, so a large input costs no more per pixel than a
    smaller one, and a small input at most one minimum chunk's temporaries more."""
    from swinv2_backbone.benchmark.measure import peak_memory_mib

    model = Swinv2Backbone(arch="tiny").eval()
    peak = {}
    for side in (256, 512, 1024):
        x = torch.randn(1, 3, side, side)

        def run():
            with torch.no_grad():
                model(x)

        run()  # fills the mask caches
        peak[side] = peak_memory_mib(run, x.device)
    per_mpx = {side: mib / (side * side / 1e6) for side, mib in peak.items()}
    assert per_mpx[1024] / per_mpx[512] < 1.1, per_mpx
    # stage-1 chunk temporaries: about 5 KiB per token
    floor_mib = chunked.MIN_CHUNK_TOKENS * 5 / 1024
    assert peak[256] - per_mpx[1024] * 256 * 256 / 1e6 < floor_mib, (peak, floor_mib)
