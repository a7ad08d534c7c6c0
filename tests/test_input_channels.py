"""RGB checkpoints of every format into models with other input channels (1, 2, 4, 6): the patch
embedding adapted by the rule of :mod:`swinv2_backbone.checkpoint.channels`, logged, everything
else loaded as for 3 channels; other channel counts refused."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import torch

from swinv2_backbone import SwinBackbone, Swinv2Backbone
from swinv2_backbone.checkpoint import CheckpointError, load_pretrained
from swinv2_backbone.checkpoint.channels import PATCH_WEIGHT, adapt_input_conv
from swinv2_backbone.models import SwinClassifier
from swinv2_backbone.testing import peers, peers_v1

CHANNELS = (1, 2, 4, 6)
MINI, W8 = peers.MINI, peers.W8
V1_MINI = peers_v1.V1_MINI


def _hf_dir(directory: Path) -> str:
    model = peers.hf_model("Swinv2Model", MINI, W8, seed=81)
    model.save_pretrained(directory / "hf")
    return str(directory / "hf")


def _v1_hf_dir(directory: Path) -> str:
    model = peers_v1.hf_v1_model("SwinModel", V1_MINI, 7, seed=86)
    model.save_pretrained(directory / "hf_v1")
    return str(directory / "hf_v1")


def _v2(out_norm: bool) -> Callable[[int], Swinv2Backbone]:
    return lambda channels: Swinv2Backbone(**peers.ours(MINI, W8, out_norm, in_channels=channels))


def _v1(rule: str, out_norm: bool) -> Callable[[int], SwinBackbone]:
    return lambda channels: peers_v1.ours_v1(V1_MINI, 7, rule, out_norm, in_channels=channels)


def _native(directory: Path) -> str:
    torch.manual_seed(88)
    state = Swinv2Backbone(**peers.ours(MINI, W8, out_norm=True)).state_dict()
    return peers.save_torch({"state_dict": {f"backbone.{k}": v for k, v in state.items()}},
                            str(directory), "detector.pth")


#: Source -> (our backbone with the given input channels, writer of an RGB checkpoint of the source
#: into a folder, returning its path).
SOURCES: Dict[str, Any] = {
    "official": (_v2(False), lambda d: peers.save_torch(
        peers.official_checkpoint(peers.timm_model(MINI, W8, seed=82)), str(d), "official.pth")),
    "hf": (_v2(False), _hf_dir),
    "timm": (_v2(False), lambda d: peers.save_safetensors(
        peers.timm_model(MINI, W8, seed=83, num_classes=0).state_dict(), str(d), "timm.safetensors")),
    "torchvision": (_v2(False), lambda d: peers.save_torch(
        peers.torchvision_model(MINI, 8, seed=84).state_dict(), str(d), "tv.pth")),
    "mmpretrain": (_v2(True), lambda d: peers.save_torch(
        peers.mmpretrain_checkpoint(peers.mmpretrain_backbone(MINI, W8, seed=85)), str(d), "mmp.pth")),
    "native": (_v2(True), _native),
    "hf V1": (_v1("hf", False), _v1_hf_dir),
    "mmdet V1": (_v1("mmdet", True), lambda d: peers.save_torch(peers_v1.mmdet_checkpoint(
        peers_v1.mmdet_swin(V1_MINI, 7, seed=87), seed=87), str(d), "mmdet.pth")),
}


@pytest.fixture(scope="module")
def rgb_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Every source's RGB checkpoint, written once."""
    directory = tmp_path_factory.mktemp("rgb")
    return {name: writer(directory) for name, (_, writer) in SOURCES.items()}


def test_rule_on_a_known_weight():
    weight = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    grey = adapt_input_conv(weight, 1)
    assert torch.equal(grey, weight[:, 0:1] + weight[:, 1:2] + weight[:, 2:3])
    four = adapt_input_conv(weight, 4)
    assert torch.equal(four, torch.cat([weight, weight[:, :1]], 1) * 0.75)
    assert torch.equal(adapt_input_conv(weight, 6), torch.cat([weight, weight], 1) * 0.5)
    assert torch.equal(adapt_input_conv(weight, 3), weight)
    assert adapt_input_conv(weight.half(), 2).dtype == torch.float16


@pytest.mark.parametrize("source", list(SOURCES))
def test_rgb_checkpoint_loads_into_other_channels(source, rgb_checkpoints, caplog):
    build, _ = SOURCES[source]
    rgb = build(3)
    load_pretrained(rgb, rgb_checkpoints[source])
    expected = rgb.state_dict()
    for channels in CHANNELS:
        model = build(channels)
        with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
            caplog.clear()
            load_pretrained(model, rgb_checkpoints[source])
        got = model.state_dict()
        weight = expected[PATCH_WEIGHT]
        rule = (weight.sum(1, keepdim=True) if channels == 1
                else weight[:, [c % 3 for c in range(channels)]] * (3 / channels))
        assert torch.equal(got[PATCH_WEIGHT], rule), (source, channels)
        assert got[PATCH_WEIGHT].shape[1] == channels
        assert all(torch.equal(got[k], v) for k, v in expected.items() if k != PATCH_WEIGHT)
        summary = "\n".join(r.getMessage() for r in caplog.records)
        assert f"adapted from 3 to in_channels={channels}" in summary, summary
        assert ("summed over the R, G, B" if channels == 1 else f"scaled by 3/{channels}") in summary


def test_rgb_loads_unchanged_and_quietly(rgb_checkpoints, caplog):
    model = Swinv2Backbone(**peers.ours(MINI, W8, out_norm=False))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(model, rgb_checkpoints["timm"])
    assert "adapted" not in caplog.text


@pytest.mark.parametrize("source, dtype, tolerance", [
    # the adapted weight is stored in the checkpoint's float32, one rounding per weight
    ("mmdet V1", torch.float64, 1e-6),
    # SwinV2 runs in float32 at most (its cosine attention's norms are float32): the sums' order
    # differs in the last bits of the patch embedding, which the stages carry on
    ("official", torch.float32, 1e-4),
])
def test_grey_features_equal_rgb_features_of_the_replicated_image(source, dtype, tolerance,
                                                                  rgb_checkpoints):
    """The sum rule: a grey image through the 1-channel model equals that image replicated to RGB
    through the 3-channel model (the convolution is linear in its weight); and 6 channels, RGB
    twice at half weight, give the same for the image in all six."""
    build, _ = SOURCES[source]

    def loaded(channels: int) -> torch.nn.Module:
        model = build(channels)
        load_pretrained(model, rgb_checkpoints[source])
        return model.to(dtype).eval()

    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5), dtype=dtype)
    with torch.no_grad():
        theirs = loaded(3)(x.expand(-1, 3, -1, -1))
        grey = loaded(1)(x)
        six = loaded(6)(x.expand(-1, 6, -1, -1))
    for a, b, c in zip(grey, six, theirs):
        torch.testing.assert_close(a, c, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(b, c, rtol=tolerance, atol=tolerance)


def test_other_channel_counts_are_refused(tmp_path):
    two = _v2(True)(2)
    path = tmp_path / "two.pth"
    torch.save(two.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"takes 2 input channels, the model in_channels=4"):
        load_pretrained(_v2(True)(4), path)
    load_pretrained(_v2(True)(2), path)  # its own count loads as it is


def test_classifier_with_other_channels_takes_rgb_head_and_weights(tmp_path):
    torch.manual_seed(0)
    rgb = SwinClassifier(num_classes=5, arch=None, embed_dims=16, depths=(1, 1), num_heads=(1, 2),
                         window_size=4, backbone_type="SwinBackbone")
    path = tmp_path / "classifier.pth"
    torch.save(rgb.state_dict(), path)
    grey = SwinClassifier(num_classes=5, arch=None, embed_dims=16, depths=(1, 1), num_heads=(1, 2),
                          window_size=4, backbone_type="SwinBackbone", in_channels=1)
    load_pretrained(grey, path)
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(grey.double().eval()(x),
                                   rgb.double().eval()(x.expand(-1, 3, -1, -1)), rtol=1e-6, atol=1e-6)
