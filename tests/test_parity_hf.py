"""Numerical parity of Swinv2Backbone with Hugging Face ``Swinv2Backbone`` on the same random weights."""
import pytest
import torch

import transformers  # a test dependency, installed by tools/setup_env.sh

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint.hf import hf_to_native

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def hf_backbone(window: int, pretrained_windows, seed: int = 0, image_size=256):
    torch.manual_seed(seed)
    cfg = transformers.Swinv2Config(
        image_size=image_size, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
        window_size=window, pretrained_window_sizes=list(pretrained_windows), out_features=STAGES)
    model = transformers.Swinv2Backbone(cfg).eval()
    with torch.no_grad():  # non-trivial weights: a mapping error cannot hide behind defaults
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("hf_window, ours_window, pretrained", [
    (8, 8, (0, 0, 0, 0)),
    # the layout of the *window12to16* checkpoints: HF clamps its single window to the 8x8 last map
    (16, (16, 16, 16, 8), (12, 12, 12, 6)),
])
def test_raw_stage_outputs_match_hf_feature_maps(hf_window, ours_window, pretrained):
    hf = hf_backbone(hf_window, pretrained)
    state, unmapped = hf_to_native(hf.state_dict())
    assert unmapped == {}
    ours = Swinv2Backbone(arch="tiny", window_size=ours_window, pretrained_window_sizes=pretrained,
                          out_norm=False).eval()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected = hf(x).feature_maps
        got = ours(x)
    assert len(got) == 4
    for i, (e, g) in enumerate(zip(expected, got)):
        assert g.shape == e.shape
        diff = (g - e).abs().max().item()
        assert diff <= 1e-4, f"stage{i + 1}: max abs diff {diff}"
        assert e.abs().max() > 1.0  # the comparison is not between two near-zero maps


@pytest.mark.parametrize("hw, rules_differ", [((192, 128), True), ((160, 96), True),
                                               ((128, 192), False)])  # height is the min side
def test_hf_rule_matches_hf_at_non_square_small_maps(hw, rules_differ):
    """HF sizes its windows from the height alone: at stage maps like 6x4 it uses a 6x6 window where
    the official rule (min side) uses 4x4. ``small_map='hf'`` reproduces it; 'official' does not."""
    hf = hf_backbone(8, (0, 0, 0, 0), image_size=list(hw))
    state, _ = hf_to_native(hf.state_dict())
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        expected = hf(x).feature_maps
    diffs = {}
    for rule in ("hf", "official"):
        ours = Swinv2Backbone(arch="tiny", window_size=8, out_norm=False, small_map=rule).eval()
        ours.load_state_dict(state, strict=True)
        with torch.no_grad():
            diffs[rule] = [(g - e).abs().max().item() for g, e in zip(ours(x), expected)]
    assert max(diffs["hf"]) <= 1e-4, diffs["hf"]
    assert (max(diffs["official"]) > 1e-2) == rules_differ


def test_output_norms_apply_layernorm_to_the_raw_stage_outputs():
    raw = Swinv2Backbone(arch="tiny", out_norm=False).eval()
    normed = Swinv2Backbone(arch="tiny").eval()
    normed.load_state_dict(raw.state_dict(), strict=False)
    with torch.no_grad():
        for i in range(4):
            getattr(normed, f"norm{i}").weight.uniform_(0.5, 1.5)
        x = torch.randn(1, 3, 128, 96)
        for i, (r, n) in enumerate(zip(raw(x), normed(x))):
            ln = getattr(normed, f"norm{i}")
            expected = ln(r.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            torch.testing.assert_close(n, expected, rtol=0, atol=1e-6)
