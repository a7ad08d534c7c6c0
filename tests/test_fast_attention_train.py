"""The chunked training attention (:mod:`swinv2_backbone.models.fast.attention_train`) against autograd
through the reference attention: gradcheck in float64, the whole backbone (V2 and V1) in fp32, zero-norm
rows, a clamped temperature, shared and per-window masks with chunks crossing images, where it
declines (attention dropout, autocast, bf16, no gradient), and what it saves for the backward pass."""
import dataclasses
import math

import pytest
import torch

from swinv2_backbone import SwinBackbone, Swinv2Backbone
from swinv2_backbone.models import fast, kernels
from swinv2_backbone.models.attention import LOGIT_SCALE_MAX, WindowAttentionV1, WindowAttentionV2
from swinv2_backbone.models.fast import attention_train
from kit import SMALL
ONLY_THIS = dataclasses.replace(kernels.REFERENCE, name="reference + attention_train",
                                attention=attention_train.window_attention)


@pytest.fixture
def calls(monkeypatch):
    """Counts the attention calls the chunked function took (not declined)."""
    taken = []
    original = attention_train._ChunkedAttention.apply

    def apply(*args):
        taken.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(attention_train._ChunkedAttention, "apply", apply)
    yield taken
    fast.set_fast_paths(True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    diff, norm = (a - b).norm().item(), b.norm().item()
    return diff / norm if norm else diff


def reference(module, qkv, mask):
    """The module's own attention (explicit path) on a ``(B, nW, N, 3C)`` qkv output."""
    b, nw, n, width = qkv.shape
    h, d = module.num_heads, width // 3 // module.num_heads
    q, k, v = qkv.view(b * nw, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = kernels.logits_qk(q, k, module.attention_args(qkv[..., :width // 3]), q.dtype)
    attn = kernels.scores(q.view(b, nw, h, n, d), k.view(b, nw, h, n, d), mask).softmax(-1)
    out = torch.matmul(attn.view(b * nw, h, n, n), v)
    return out.view(b, nw, h, n, d).transpose(2, 3).reshape(b, nw, n, width // 3)


@pytest.mark.parametrize("cosine", [True, False])
@pytest.mark.parametrize("rows, step", [(1, 4), (3, 2), (3, 6)])  # shared / per-window mask;
def test_gradcheck_float64(cosine, rows, step):                   # chunks crossing images or not
    gen = torch.Generator().manual_seed(0)
    wins, n, heads, d = 6, 4, 2, 2  # two images of three windows
    qkv = torch.randn(wins, n, 3 * heads * d, generator=gen, dtype=torch.float64)
    mask = torch.randn(rows, heads, n, n, generator=gen, dtype=torch.float64)
    scale = (torch.rand(heads, 1, 1, generator=gen, dtype=torch.float64) * 5 + 1
             if cosine else 0.7)
    inputs = [qkv.requires_grad_(), mask.requires_grad_()]
    if cosine:
        inputs.append(scale.requires_grad_())

    def fn(*args):
        return attention_train._ChunkedAttention.apply(
            args[0], args[1], args[2] if cosine else scale, heads, cosine, step)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cosine", [True, False])
@pytest.mark.parametrize("rows", [1, 4])
def test_equals_the_reference_attention(cosine, rows):
    """The function against the module's own attention on the same qkv output (forward and every
    gradient), the mask given per window or shared, chunks of 3 windows crossing the images (fp32:
    the reference normalises in fp32)."""
    torch.manual_seed(0)
    module = WindowAttentionV2(12, 2) if cosine else WindowAttentionV1(12, 2, 2)
    with torch.no_grad():
        if cosine:
            module.logit_scale.copy_(torch.tensor([1.0, 3.0]).view(2, 1, 1))
    qkv = torch.randn(2, 4, 4, 36, requires_grad=True)
    mask = torch.randn(rows, 2, 4, 4, requires_grad=True)
    params = [qkv, mask] + ([module.logit_scale] if cosine else [])
    got = attention_train._ChunkedAttention.apply(qkv.view(8, 4, 36), mask, module.query_scale(),
                                                  2, cosine, 3)
    want = reference(module, qkv, mask)
    torch.testing.assert_close(got.view(want.shape), want, rtol=1e-6, atol=1e-6)
    up = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, params, up.view(got.shape)),
                    torch.autograd.grad(want, params, up)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_zero_norm_rows_and_a_clamped_temperature():
    """All-zero q and k rows (the norm clamped at 1e-12, no gradient through it) and a temperature
    above log 100 (no gradient, as torch.clamp gives) match autograd through the reference."""
    torch.manual_seed(0)
    module = WindowAttentionV2(12, 2)
    with torch.no_grad():
        module.logit_scale.copy_(torch.tensor([LOGIT_SCALE_MAX + 0.5, math.log(20.0)]).view(2, 1, 1))
    qkv = torch.randn(2, 4, 4, 36)
    qkv[0, 1, 2, :24] = 0  # q and k of one token
    qkv[1, 3, :, 12:24] = 0  # every k of one window
    qkv.requires_grad_()
    mask = torch.randn(1, 2, 4, 4, requires_grad=True)
    got = attention_train.chunked_attention(qkv, mask, module.attention_args(qkv))
    want = reference(module, qkv, mask)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    up = torch.randn_like(want)
    params = [qkv, mask, module.logit_scale]
    grads = torch.autograd.grad(got, params, up)
    for a, b in zip(grads, torch.autograd.grad(want, params, up)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert grads[2][0].item() == 0 and grads[2][1].item() != 0  # the clamped head gets none
    # a zero q row's own gradient is scale / 1e-12 times the upstream: finite, as in the reference
    assert torch.isfinite(grads[0]).all()


@pytest.mark.parametrize("chunk_scores", [16, 3 * 16 * 16 * 5, 1 << 20])  # 1 window; 5 per
@pytest.mark.parametrize("version, size, rule", [                        # chunk (crossing images); all
    ("v2", (52, 76), "pad"), ("v2", (40, 32), "timm"), ("v1", (52, 76), "pad"),
])
def test_backbone_equals_the_reference(monkeypatch, calls, chunk_scores, version, size, rule):
    """Outputs and every parameter's gradient of a whole training step (shifted and unshifted
    windows, padded maps, per-window shift masks and shared masks) against the reference."""
    monkeypatch.setattr(attention_train, "CHUNK_SCORES", chunk_scores)
    torch.manual_seed(0)
    model = (Swinv2Backbone if version == "v2" else SwinBackbone)(**SMALL, small_map=rule).train()
    for p in model.parameters():  # break the symmetry of the default init
        p.data.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        projections = [torch.randn(o.shape) for o in model(x)]
    results = []
    for kern in (ONLY_THIS, kernels.REFERENCE):
        fast.use(kern)
        model.zero_grad()
        outs = model(x)
        sum((o * p).sum() for o, p in zip(outs, projections)).backward()
        results.append(([o.detach() for o in outs], [p.grad.clone() for p in model.parameters()]))
    assert len(calls) == sum(SMALL["depths"])  # every block's attention took it
    (outs, grads), (ref_outs, ref_grads) = results
    for a, b in zip(outs, ref_outs):
        assert rel(a, b) < 1e-6
    names = [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, grads, ref_grads):
        assert rel(a, b) < 1e-4, name
    assert any("cpb_mlp" in n or "bias_table" in n for n in names)  # the mask's parameters


def test_declines_where_the_reference_must_run(calls):
    """Attention dropout in training, autocast, bf16, no gradient: the reference runs (and gives
    the reference's result); dropout in eval mode is inactive, so the function runs."""
    module = WindowAttentionV2(12, 2, attn_drop=0.5).train()
    windows = torch.randn(1, 2, 4, 12, requires_grad=True)
    mask = torch.randn(1, 2, 4, 4)

    def taken(module, windows, mask) -> bool:
        """Whether the chunked function took the call; where it declines it returns the
        reference's result."""
        before = len(calls)
        with torch.random.fork_rng(), kernels.using(kernels.REFERENCE):
            torch.manual_seed(0)
            got = attention_train.window_attention(windows, mask, module.attention_args(windows))
            torch.manual_seed(0)
            want = kernels.attention(windows, mask, module.attention_args(windows))
        if len(calls) == before:
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        return len(calls) > before

    assert not taken(module, windows, mask)
    module.eval()
    assert taken(module, windows, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not taken(module, windows, mask)
    assert not taken(module.bfloat16(), windows.bfloat16(), mask.bfloat16())
    module.float()
    with torch.no_grad():
        assert not taken(module, windows, mask)
    # a mask of another broadcast shape than attention_mask builds
    assert not taken(module, windows, mask[None])
    assert len(calls) == 1
    # through the model: dropout active -> the reference path, same numbers as without the seam
    fast.use(ONLY_THIS)
    torch.manual_seed(1)
    x = torch.randn(1, 2, 4, 12, requires_grad=True)
    module.train()
    torch.manual_seed(2)
    got = module(x, mask)
    fast.use(kernels.REFERENCE)
    torch.manual_seed(2)
    want = module(x, mask)
    assert torch.equal(got, want) and len(calls) == 1


def test_saves_no_probabilities():
    """What a training step keeps for the backward pass: with the function, less than the
    reference by at least the N x N probabilities of every block."""
    torch.manual_seed(0)
    model = Swinv2Backbone(**SMALL).train()
    x = torch.randn(2, 3, 64, 64)
    saved = {}
    for kern in (ONLY_THIS, kernels.REFERENCE):
        fast.use(kern)
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = model(x)
        saved[kern.name] = sum(seen.values())
        del outs
    fast.set_fast_paths(True)
    # probabilities per image: stage s has (16 / 2**s)^2 tokens in windows of 16, heads (1, 2, 2, 4)
    probs = sum(2 * 2 * (256 >> 2 * s) * 16 * 4 * h for s, h in enumerate((1, 2, 2, 4)))
    assert saved[kernels.REFERENCE.name] - saved[ONLY_THIS.name] >= probs
