"""Reliability in low precision: fp16 and bf16 models and autocast give finite outputs and gradients
up to 1536x1536 inputs (the logit-scale clamp and cosine attention bound every attention logit), and
200-iteration mixed-precision training runs never produce NaN/Inf.

No GPU is assumed: everything runs on CPU (fp16 included, through the CPU kernels), with one thread
(tiny models; more threads only spin on a shared machine).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models.attention import LOGIT_SCALE_MAX, WindowAttentionV2
from capabilities import needs_cpu_fp16
from kit import TINY

LOW = [pytest.param(torch.float16, id="fp16", marks=needs_cpu_fp16), pytest.param(torch.bfloat16, id="bf16")]
KERNELS = ["never", "always"]  # explicit matmul-softmax-matmul, fused SDPA
#: 1536 px square (no padding at any stage) and odd non-square (padding at every stage), plus small.
SIZES = [(1536, 1536), (1535, 1283), (61, 47)]
TRAIN_ITERS = 200


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.isa]


def tiny(**kw) -> Swinv2Backbone:
    """Embed 8, one block per stage: cheap enough for 1536x1536 on CPU."""
    torch.manual_seed(0)
    return Swinv2Backbone(**{**TINY, "window_size": 8, **kw})


def raw_images(hw: Tuple[int, int]) -> torch.Tensor:
    """Un-normalised 0..255 images: the largest input range a pipeline bug would feed."""
    return torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0)) * 255.0


def assert_finite_outputs_and_grads(outs: Tuple[torch.Tensor, ...], model: nn.Module,
                                    dtype: torch.dtype) -> None:
    """Every output has ``dtype`` and is finite; every parameter got a finite, not all-zero grad."""
    assert all(o.dtype == dtype and torch.isfinite(o).all() for o in outs)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_model_outputs_and_gradients_are_finite(dtype, hw, kernel):
    model = tiny(use_sdpa=kernel).to(dtype).train()
    outs = model(raw_images(hw).to(dtype))
    sum(o.float().mean() for o in outs).backward()
    assert_finite_outputs_and_grads(outs, model, dtype)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("dtype", LOW)
def test_autocast_outputs_and_gradients_are_finite(dtype, hw, kernel):
    model = tiny(use_sdpa=kernel).train()
    with torch.autocast("cpu", dtype=dtype):
        outs = model(raw_images(hw))
    sum(o.float().mean() for o in outs).backward()
    assert_finite_outputs_and_grads(outs, model, dtype)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("image", ["zeros", "constant", "checkerboard_255"])
@pytest.mark.parametrize("dtype", LOW)
def test_degenerate_images_stay_finite_in_low_precision(dtype, image):
    """Zero, flat and maximal-contrast images give (near-)zero or extreme q/k vectors."""
    x = torch.zeros(2, 3, 45, 37)
    if image == "constant":
        x += 0.5
    elif image == "checkerboard_255":
        x[..., ::2, 1::2] = 255.0
        x[..., 1::2, ::2] = 255.0
    for kernel in KERNELS:
        model = tiny(use_sdpa=kernel).to(dtype).train()
        outs = model(x.to(dtype))
        sum(o.float().mean() for o in outs).backward()
        assert_finite_outputs_and_grads(outs, model, dtype)


def _set_logit_scales(model: nn.Module, value: float) -> List[nn.Parameter]:
    """Set every attention's ``logit_scale`` to ``value``; return those parameters."""
    scales = [m.logit_scale for m in model.modules() if isinstance(m, WindowAttentionV2)]
    with torch.no_grad():
        for s in scales:
            s.fill_(value)
    return scales


def _loss(outs) -> torch.Tensor:
    """A loss with real gradient: the mean of a LayerNorm'd output has none (rounding noise only)."""
    gen = torch.Generator().manual_seed(1)
    return sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)


def test_logit_scale_is_clamped_at_log_100():
    """Above log(100) the temperature is capped: bit-equal outputs, no gradient to the scale."""
    x = torch.randn(1, 3, 64, 48)
    clamped = tiny().eval()
    _set_logit_scales(clamped, LOGIT_SCALE_MAX)
    huge = tiny().eval()
    scales = _set_logit_scales(huge, 30.0)  # exp(30) = 1e13 would overflow fp16 (and saturate fp32)
    with torch.no_grad():
        for a, b in zip(clamped(x), huge(x)):
            assert torch.equal(a, b)
    huge.train()
    _loss(huge(x)).backward()
    assert all(torch.count_nonzero(s.grad) == 0 for s in scales)  # no gradient beyond the clamp


def test_logit_scale_below_the_clamp_is_learned():
    """Control for the test above: at the initial log(10) the scale does receive gradient."""
    model = tiny().train()
    _loss(model(torch.randn(1, 3, 64, 48))).backward()
    scales = [m.logit_scale for m in model.modules() if isinstance(m, WindowAttentionV2)]
    assert all(s.detach().sub(math.log(10.0)).abs().max() < 1e-6 for s in scales)
    assert all(torch.count_nonzero(s.grad) > 0 for s in scales)


@pytest.mark.parametrize("dtype", LOW)
def test_huge_logit_scale_stays_finite_in_low_precision(dtype):
    model = tiny().to(dtype).train()
    _set_logit_scales(model, 30.0)
    outs = model(raw_images((96, 80)).to(dtype))
    sum(o.float().mean() for o in outs).backward()
    assert all(o.dtype == dtype and torch.isfinite(o).all() for o in outs)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def _attention_with_huge_query_key(kernel: str):
    """An attention, its fp32 output, and the same attention with q/k projections scaled by 1e3."""
    torch.manual_seed(0)
    attn = WindowAttentionV2(16, 2, use_sdpa=kernel).eval()
    windows = torch.randn(2, 4, 16, 16)
    mask = attn.attention_mask(4, (8, 8), (2, 2), torch.float32)
    with torch.no_grad():
        ref = attn(windows, mask)
        attn.qkv.weight[:32].mul_(1e3)  # q and k rows; v untouched
        attn.q_bias.mul_(1e3)
    return attn, windows, mask, ref


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_is_cosine_so_query_key_magnitude_cannot_blow_up(kernel):
    """Scaling the query/key projections by 1e3 leaves the attention unchanged: logits are cosines
    times a clamped temperature, whatever the feature magnitudes."""
    attn, windows, mask, ref = _attention_with_huge_query_key(kernel)
    with torch.no_grad():
        torch.testing.assert_close(attn(windows, mask), ref, rtol=1e-4, atol=1e-5)


@needs_cpu_fp16
@pytest.mark.parametrize("kernel", KERNELS)
def test_huge_query_key_stay_finite_in_fp16(kernel):
    attn, windows, mask, ref = _attention_with_huge_query_key(kernel)
    with torch.no_grad():
        half = attn.half()(windows.half(), mask.half())
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16-model", "bf16-autocast"])
def test_explicit_attention_keeps_logits_and_softmax_in_fp32(autocast):
    """At the largest temperature (100) a bf16 logit is off by up to 0.25. With weights and input
    exactly representable in bf16, so that only the attention's own rounding differs, the bf16
    output is 8e-3 off fp32 (logits in fp32); with bf16 logits it was 2.1e-2."""
    torch.manual_seed(0)
    attn = WindowAttentionV2(64, 2, use_sdpa="never").eval()
    with torch.no_grad():
        attn.logit_scale.fill_(LOGIT_SCALE_MAX)
        for p in attn.parameters():
            p.copy_(p.bfloat16().float())
        windows = torch.randn(1, 8, 64, 64).bfloat16().float()
        mask = attn.attention_mask(8, (16, 32), (4, 4), attn.mask_dtype(windows))
        ref = attn(windows, mask)
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = attn(windows, mask)
        else:
            low = attn.bfloat16()(windows.bfloat16(), mask)
    assert mask.dtype == torch.float32 and low.dtype == torch.bfloat16
    assert (low.float() - ref).norm() / ref.norm() < 1.2e-2


# ---------------------------------------------------------------------------------- training
def draw_shapes(n: int, size: int, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Synthetic segmentation batch: noise background (class 0), a red rectangle (1), a blue disk (2)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.rand(n, 3, size, size, generator=gen) * 0.3
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        x0, y0 = torch.randint(0, size - 24, (2,), generator=gen).tolist()
        w, h = torch.randint(8, 24, (2,), generator=gen).tolist()
        rect = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
        cx, cy = torch.randint(10, size - 10, (2,), generator=gen).tolist()
        radius = torch.randint(5, 12, (1,), generator=gen).item()
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 < radius ** 2
        labels[i][rect] = 1
        labels[i][disk] = 2
        images[i, 0][rect] += 0.7
        images[i, 2][disk] += 0.7
    return images, labels


class ToySegmenter(nn.Module):
    """Tiny SwinV2 backbone with one 1x1-conv classifier per stage, summed at stride 4.

    Args:
        num_classes: Output classes.
    """

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.backbone = Swinv2Backbone(arch=None, embed_dims=24, depths=(1, 1, 1, 1),
                                       num_heads=(1, 2, 4, 8), window_size=8, drop_path_rate=0.1)
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in self.backbone.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        size = feats[0].shape[-2:]
        logits = sum(F.interpolate(head(f), size=size, mode="bilinear", align_corners=False)
                     for head, f in zip(self.heads, feats))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class _NoScaler:
    """The GradScaler calls of :func:`train_toy` as no-ops, for bf16."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale_(self, optim: torch.optim.Optimizer) -> None:
        pass

    def step(self, optim: torch.optim.Optimizer) -> None:
        optim.step()

    def update(self) -> None:
        pass

    def is_enabled(self) -> bool:
        return False


def train_toy(dtype: torch.dtype) -> Tuple[List[float], int]:
    """``TRAIN_ITERS`` AdamW steps under CPU autocast (fp16 with a dynamic GradScaler) on 64 px shape
    images: maps of 16, 8, 4, 2 tokens, so stages 3-4 are padded to the window. Every step checks the
    loss, the (unscaled) gradients of non-skipped steps and the weights. Returns the losses and the
    number of steps the scaler skipped."""
    torch.manual_seed(0)
    model = ToySegmenter().train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    # fp16 needs loss scaling; bf16 has fp32's range (and torch 2.1 has no CPU GradScaler).
    scaler = torch.amp.GradScaler("cpu") if dtype == torch.float16 else _NoScaler()
    gen = torch.Generator().manual_seed(0)
    losses, skipped = [], 0
    for it in range(TRAIN_ITERS):
        images, labels = draw_shapes(4, 64, gen)
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(model(images).float(), labels)
        assert torch.isfinite(loss), f"iteration {it}: loss {loss.item()}"
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optim)
        grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters())
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(optim)
        scaler.update()
        if not grads_finite:
            # Only loss-scale overflow is allowed: the scaler skips the step and halves the scale.
            assert scaler.is_enabled() and scaler.get_scale() < scale, f"iteration {it}: NaN/Inf grad"
            skipped += 1
        assert all(torch.isfinite(p).all() for p in model.parameters()), f"iteration {it}: weights"
        losses.append(loss.item())
    return losses, skipped


@pytest.mark.slow
@pytest.mark.parametrize("dtype", LOW)
def test_mixed_precision_training_never_produces_nan_or_inf(dtype):
    losses, skipped = train_toy(dtype)
    assert len(losses) == TRAIN_ITERS
    # fp16: the scaler starts at 2**16 and halves per overflow; it must settle within a few steps.
    assert skipped <= 16
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, f"the run did not train: first-20 loss {first:.3f}, last-20 {last:.3f}"
