"""SimMIM masked image modeling: the backbone's mask token, the reconstruction and loss against HF
``Swinv2ForMaskedImageModeling`` on the same random weights, the normalised target against the
official formula, the block mask generator, and a few training steps."""
import math

import pytest
import torch
import torch.nn.functional as F

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models.simmim import (SimMIM, local_statistics, normalize_targets, simmim_loss,
                                           simmim_mask)
from swinv2_backbone.testing import peers
from kit import SHALLOW

TOL = 1e-4


def small_simmim(seed: int = 0, **kw) -> SimMIM:
    torch.manual_seed(seed)
    return SimMIM(dict(SHALLOW), **kw)


# ------------------------------------------------------------------------------ mask token
def test_mask_token_exists_only_when_asked_for():
    assert Swinv2Backbone(**SHALLOW).mask_token is None
    assert "mask_token" not in dict(Swinv2Backbone(**SHALLOW).named_parameters())
    token = Swinv2Backbone(**SHALLOW, use_mask_token=True).mask_token
    assert token.shape == (1, 1, 16) and token.requires_grad
    # normal with std 0.02, truncated by torch's default absolute bounds +-2 (as the official
    # code): not at 2 std, so values past 0.04 occur; past 0.1 (5 std) practically never
    assert 0 < token.abs().max() <= 0.1


def test_mask_without_mask_token_is_an_error_saying_so():
    model = Swinv2Backbone(**SHALLOW)
    with pytest.raises(ValueError, match="use_mask_token=True"):
        model(torch.randn(1, 3, 32, 32), torch.zeros(1, 8, 8, dtype=torch.bool))


@pytest.mark.parametrize("hw", [(37, 50), (64, 32), (5, 3)])
def test_mask_token_replaces_masked_patch_embeddings_at_any_size(hw):
    """The stem output is the patch embedding after the token (no position embedding): masked
    patches are the token, visible ones unchanged."""
    torch.manual_seed(0)
    model = Swinv2Backbone(**SHALLOW, use_mask_token=True, out_features=("stem", "stage4")).eval()
    x = torch.randn(2, 3, *hw)
    grid = (math.ceil(hw[0] / 4), math.ceil(hw[1] / 4))
    mask = torch.rand(2, *grid) < 0.5
    mask[0, 0, 0], mask[1, 0, 0] = True, False
    with torch.no_grad():
        plain, _ = model(x)
        masked, deep = model(x, mask)
    token = model.mask_token.view(-1, 1)
    m = mask.unsqueeze(1).expand_as(masked)
    assert torch.equal(masked[~m], plain[~m])
    assert torch.equal(masked.permute(0, 2, 3, 1)[mask], token.view(1, -1).expand(int(mask.sum()), -1))
    assert deep.shape[-2:] == (math.ceil(hw[0] / 32), math.ceil(hw[1] / 32))
    assert torch.isfinite(deep).all()


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32])
def test_mask_dtypes_bool_and_zero_one_numbers_agree(dtype):
    torch.manual_seed(0)
    model = Swinv2Backbone(**SHALLOW, use_mask_token=True).eval()
    x = torch.randn(1, 3, 24, 40)
    mask = torch.rand(1, 6, 10) < 0.4
    with torch.no_grad():
        expected = model(x, mask)
        got = model(x, mask.to(dtype))
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


@pytest.mark.parametrize("mask, exc, match", [
    (torch.zeros(1, 6, 10, dtype=torch.bool), ValueError, r"patch grid .*\(2, 6, 10\)"),  # batch
    (torch.zeros(2, 6, 9, dtype=torch.bool), ValueError, r"ceil\(W/patch_size\)"),  # grid
    (torch.zeros(2, 60), ValueError, "shape of the patch grid"),  # HF's flat layout
    (torch.full((2, 6, 10), 2), ValueError, "0 .* or 1"),
    (torch.full((2, 6, 10), 0.5), ValueError, "0 .* or 1"),
    (torch.zeros(2, 6, 10, dtype=torch.complex64), TypeError, "bool"),
    ([[0, 1]], TypeError, "torch.Tensor"),
])
def test_bad_masks_are_errors_saying_what_is_expected(mask, exc, match):
    model = Swinv2Backbone(**SHALLOW, use_mask_token=True)
    with pytest.raises(exc, match=match):
        model(torch.randn(2, 3, 21, 40), mask)


def test_frozen_patch_embedding_freezes_the_mask_token():
    model = Swinv2Backbone(**SHALLOW, use_mask_token=True, frozen_stages=0)
    assert not model.mask_token.requires_grad


def test_mask_token_gets_gradients_only_through_masked_patches():
    model = Swinv2Backbone(**SHALLOW, use_mask_token=True)
    x = torch.randn(1, 3, 32, 32)
    sum(o.sum() for o in model(x, torch.zeros(1, 8, 8))).backward()
    assert model.mask_token.grad is None or not model.mask_token.grad.any()
    model.zero_grad()
    sum(o.sum() for o in model(x, torch.ones(1, 8, 8))).backward()
    assert model.mask_token.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ parity with HF
@pytest.mark.parametrize("variant, image_size, seed", [(peers.MINI, 128, 0), (peers.TINY, 192, 1)])
def test_reconstruction_and_loss_match_hf(variant, image_size, seed, tmp_path):
    hf = peers.hf_model("Swinv2ForMaskedImageModeling", variant, peers.W8, seed, image_size=image_size)
    hf.save_pretrained(tmp_path)
    # the whole HF model (encoder, mask token, decoder) through the checkpoint adapters
    ours = SimMIM(peers.ours(variant, peers.W8, out_norm=True, small_map="hf"), pretrained=str(tmp_path))
    ours.init_weights()
    ours.eval()

    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    mask = torch.stack([simmim_mask(image_size, generator=torch.Generator().manual_seed(seed + i))
                        for i in range(2)])
    with torch.no_grad():
        expected = hf(x, bool_masked_pos=mask.flatten(1))
        rec = ours(x, mask)
        loss = ours.loss(x, rec, mask)
    rec_diff = (rec - expected.reconstruction).abs().max().item()
    loss_diff = (loss - expected.loss).abs().item()
    print(f"{variant.name} {image_size}px: reconstruction max abs diff {rec_diff:.3g}, "
          f"loss diff {loss_diff:.3g} (loss {loss.item():.4f})")
    assert rec.shape == expected.reconstruction.shape == x.shape
    assert rec_diff <= TOL and loss_diff <= TOL
    assert expected.reconstruction.abs().max() > 1.0  # not two near-zero maps
    # the mask matters: the same images unmasked reconstruct differently
    with torch.no_grad():
        assert (ours(x, torch.zeros_like(mask)) - rec).abs().max() > 1e-2


# ------------------------------------------------------------------------------ loss
def official_norm_targets(x: torch.Tensor, k: int) -> torch.Tensor:
    """The official SwinV2 ``norm_targets``, written from its definition: mean and mean square by
    ``avg_pool2d`` without the padding, the neighbourhood size by pooling ones with the padding,
    unbiased variance clamped at 0, ``(x - mean) / sqrt(var + 1e-6)``."""
    mean = F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
    sq = F.avg_pool2d(x ** 2, k, 1, k // 2, count_include_pad=False)
    n = F.avg_pool2d(torch.ones_like(x), k, 1, k // 2, count_include_pad=True) * k ** 2
    var = torch.clamp((sq - mean ** 2) * (n / (n - 1)), min=0.0)
    return (x - mean) / (var + 1e-6) ** 0.5


@pytest.mark.parametrize("hw, window", [((64, 64), 47), ((50, 83), 47), ((9, 5), 3), ((96, 32), 7)])
def test_normalised_target_matches_the_official_formula(hw, window):
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0)) * 4 - 1
    torch.testing.assert_close(normalize_targets(x, window), official_norm_targets(x, window),
                               rtol=1e-5, atol=1e-5)


def test_local_statistics_invert_the_normalised_target():
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1)) * 5 + 3
    mean, std = local_statistics(x, 7)
    assert mean.shape == std.shape == x.shape and bool((std > 0).all())
    torch.testing.assert_close(normalize_targets(x, 7) * std + mean, x, rtol=1e-5, atol=1e-5)


def test_normalised_target_loss_is_l1_to_the_official_target():
    torch.manual_seed(0)
    # not zero-mean, unit-variance already: the normalised target differs from the images
    x, rec = torch.rand(2, 3, 64, 96) * 3 + 2, torch.randn(2, 3, 64, 96)
    mask = torch.stack([simmim_mask((64, 96)) for _ in range(2)])
    m = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].float()
    target = official_norm_targets(x, 47)
    expected = ((target - rec).abs() * m).sum() / (m.sum() + 1e-5) / 3
    got = simmim_loss(x, rec, mask, 4, norm_target_window=47)
    assert abs(got.item() - expected.item()) <= 1e-5
    assert abs(got.item() - simmim_loss(x, rec, mask, 4).item()) > 1e-2  # the target matters


def test_even_normalisation_window_is_an_error():
    with pytest.raises(ValueError, match="odd"):
        small_simmim(norm_target_window=48)


@pytest.mark.parametrize("hw", [(70, 45), (33, 100), (64, 96)])
def test_any_size_reconstructs_the_input_size_and_counts_only_real_pixels(hw):
    """The reconstruction is cropped to the input; the loss over an all-masked image is the mean
    absolute error over its real pixels (the padded ones are not counted)."""
    model = small_simmim().eval()
    x = torch.randn(1, 3, *hw)
    grid = (math.ceil(hw[0] / 4), math.ceil(hw[1] / 4))
    mask = torch.ones(1, *grid, dtype=torch.bool)
    with torch.no_grad():
        rec = model(x, mask)
        loss = model.loss(x, rec, mask)
    assert rec.shape == x.shape
    expected = (x - rec).abs().sum() / (x[0, 0].numel() + 1e-5) / 3
    assert abs(loss.item() - expected.item()) <= 1e-6


def test_visible_pixels_do_not_count():
    x, rec = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :4] = True
    rec[..., 16:, :] = 5.0  # errors only under visible patches
    assert simmim_loss(x, rec, mask, 4).item() == 0.0
    rec[..., :16, :] = 1.0
    assert abs(simmim_loss(x, rec, mask, 4).item() - 1.0) <= 1e-6


# ------------------------------------------------------------------------------ mask generator
@pytest.mark.parametrize("size, ratio, blocks", [(192, 0.6, 36), ((64, 160), 0.6, 10),
                                                 ((96, 32), 0.5, 3), (32, 0.6, 1), (64, 0.0, 4),
                                                 (64, 1.0, 4)])
def test_mask_generator_covers_ceil_ratio_of_aligned_blocks(size, ratio, blocks):
    h, w = (size, size) if isinstance(size, int) else size
    mask = simmim_mask(size, mask_ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (h // 4, w // 4) and mask.dtype == torch.bool
    per_block = mask.view(h // 32, 8, w // 32, 8)
    # every 8x8 patch block is all masked or all visible
    assert torch.equal(per_block.all(3).all(1), per_block.any(3).any(1))
    assert int(per_block.all(3).all(1).sum()) == math.ceil(blocks * ratio)


def test_mask_generator_block_and_patch_sizes():
    mask = simmim_mask((48, 32), mask_patch_size=16, model_patch_size=2, mask_ratio=0.5,
                       generator=torch.Generator().manual_seed(3))
    assert mask.shape == (24, 16) and int(mask.sum()) == 3 * 8 * 8  # ceil(6 * 0.5) blocks


def test_mask_generator_is_reproducible_with_a_seed_and_varies_without():
    a = simmim_mask(192, generator=torch.Generator().manual_seed(7))
    b = simmim_mask(192, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    torch.manual_seed(7)
    c = simmim_mask(192)
    torch.manual_seed(7)
    assert torch.equal(c, simmim_mask(192))
    assert not torch.equal(simmim_mask(192), simmim_mask(192))


@pytest.mark.parametrize("kw, match", [
    (dict(image_size=(192, 100)), "width 100 must be a positive multiple of mask_patch_size 32"),
    (dict(image_size=16), "multiple of mask_patch_size"),
    (dict(image_size=192, mask_patch_size=30), "multiple of model_patch_size"),
    (dict(image_size=192, mask_ratio=1.5), "mask_ratio"),
])
def test_mask_generator_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        simmim_mask(**kw)


# ------------------------------------------------------------------------------ training
def test_a_few_training_steps_decrease_the_loss():
    model = small_simmim(norm_target_window=None).train()
    gen = torch.Generator().manual_seed(0)
    # smooth images: reconstructable from their visible neighbourhood
    x = F.interpolate(torch.rand(4, 3, 8, 8, generator=gen), size=(64, 64), mode="bilinear",
                      align_corners=False)
    mask = torch.stack([simmim_mask(64, generator=gen) for _ in range(4)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = model.loss(x, model(x, mask), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert model.backbone.mask_token.grad.abs().sum() > 0
