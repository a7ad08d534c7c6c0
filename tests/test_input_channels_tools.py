"""Grey, RGBA and multi-channel inputs (.npy, .tif) for models of 1, 2, 4 and 6 input channels:
how :mod:`swinv2_backbone.features.pixels` reads them, and the feature and classify tools run on
them with an RGB checkpoint (its patch embedding adapted), one bad file costing only itself."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from capabilities import needs_dynamic_export
from kit import TINY, run_tool, save_backbone
from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint import load_pretrained
from swinv2_backbone.deploy import ExportError, load_exported
from swinv2_backbone.features import FeatureExtractor, ImageReadError, load_features
from swinv2_backbone.features.pixels import pixels_size, read_pixels
from swinv2_backbone.models import SwinClassifier

RNG = np.random.default_rng(0)


def _pixels(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


# ------------------------------------------------------------------------------------- reading
def test_png_grey_rgba_and_grey_alpha_keep_their_channels(tmp_path: Path):
    grey, rgba, la = _pixels(20, 24), _pixels(20, 24, 4), _pixels(20, 24, 2)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert torch.equal(read_pixels(tmp_path / "grey.png", 1), torch.from_numpy(grey)[None])
    assert torch.equal(read_pixels(tmp_path / "rgba.png", 4), torch.from_numpy(rgba).permute(2, 0, 1))
    assert torch.equal(read_pixels(tmp_path / "la.png", 2), torch.from_numpy(la).permute(2, 0, 1))
    # an RGB model reads them as before: grey expanded, alpha dropped
    assert torch.equal(read_pixels(tmp_path / "grey.png"), torch.from_numpy(grey)[None].expand(3, -1, -1))
    assert torch.equal(read_pixels(tmp_path / "rgba.png"), torch.from_numpy(rgba[..., :3]).permute(2, 0, 1))
    with pytest.raises(ImageReadError, match=r"rgba.png: the image has 4 channel\(s\) \(RGBA\), "
                                             r"the model in_channels=1"):
        read_pixels(tmp_path / "rgba.png", 1)
    assert read_pixels(tmp_path / "grey.png", 1, size=(10, 12)).shape == (1, 10, 12)


def test_npy_layout_rule(tmp_path: Path):
    hwc, chw, flat = _pixels(9, 11, 6), _pixels(4, 9, 11), _pixels(9, 11)
    for name, array in (("hwc", hwc), ("chw", chw), ("flat", flat), ("both", _pixels(4, 9, 4)),
                        ("wrong", _pixels(5, 9, 7))):
        np.save(tmp_path / f"{name}.npy", array)
    assert torch.equal(read_pixels(tmp_path / "hwc.npy", 6), torch.from_numpy(hwc).permute(2, 0, 1))
    assert torch.equal(read_pixels(tmp_path / "chw.npy", 4), torch.from_numpy(chw))
    assert torch.equal(read_pixels(tmp_path / "flat.npy", 1), torch.from_numpy(flat)[None])
    assert pixels_size(tmp_path / "hwc.npy", 6) == (9, 11) == pixels_size(tmp_path / "chw.npy", 4)
    with pytest.raises(ImageReadError, match="ambiguous"):
        read_pixels(tmp_path / "both.npy", 4)
    with pytest.raises(ImageReadError, match=r"has 5 channels first .* or 7 last .*in_channels=4"):
        pixels_size(tmp_path / "wrong.npy", 4)
    with pytest.raises(ImageReadError, match=r"the image has 1 channel\(s\).*in_channels=2"):
        read_pixels(tmp_path / "flat.npy", 2)


def test_npy_value_types(tmp_path: Path):
    floats = RNG.random((2, 8, 8)).astype(np.float32)
    np.save(tmp_path / "f.npy", floats)
    assert torch.equal(read_pixels(tmp_path / "f.npy", 2), torch.from_numpy(floats))
    np.save(tmp_path / "u16.npy", np.full((8, 8, 2), 65535, dtype=np.uint16))
    assert torch.equal(read_pixels(tmp_path / "u16.npy", 2), torch.ones(2, 8, 8))
    np.save(tmp_path / "big.npy", floats * 2)
    with pytest.raises(ImageReadError, match=r"must be finite and in \[0, 1\]"):
        read_pixels(tmp_path / "big.npy", 2)
    np.save(tmp_path / "i64.npy", np.zeros((2, 8, 8), dtype=np.int64))
    with pytest.raises(ImageReadError, match="int64 have no defined range"):
        read_pixels(tmp_path / "i64.npy", 2)
    resized = read_pixels(tmp_path / "f.npy", 2, size=(4, 4))
    assert resized.dtype == torch.float32 and resized.shape == (2, 4, 4)


def test_multichannel_tiff(tmp_path: Path):
    six, planar = _pixels(10, 12, 6), _pixels(4, 10, 12)
    tifffile.imwrite(tmp_path / "six.tif", six, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "planar.tiff", planar, photometric="minisblack", planarconfig="separate")
    assert torch.equal(read_pixels(tmp_path / "six.tif", 6), torch.from_numpy(six).permute(2, 0, 1))
    assert torch.equal(read_pixels(tmp_path / "planar.tiff", 4), torch.from_numpy(planar))
    assert pixels_size(tmp_path / "six.tif", 6) == (10, 12)
    with pytest.raises(ImageReadError, match=r"six.tif: the image has 6 channel\(s\).*in_channels=4"):
        read_pixels(tmp_path / "six.tif", 4)


# ------------------------------------------------------------------------------------- the tools
@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rgb.safetensors"
    save_backbone(path, TINY)
    return path


def _inputs(directory: Path, channels: int) -> None:
    """A ``channels``-channel .npy (H, W, C) and .tif, an image of that many channels where PNG has
    one, and an RGB PNG (a mismatch unless ``channels`` is 3)."""
    directory.mkdir()
    np.save(directory / "a.npy", _pixels(32, 40, channels))
    if channels == 1:
        tifffile.imwrite(directory / "b.tif", _pixels(32, 40), photometric="minisblack")
    else:
        tifffile.imwrite(directory / "b.tif", _pixels(channels, 32, 40), photometric="minisblack",
                         planarconfig="separate")
    modes = {1: "L", 2: "LA", 4: "RGBA"}
    if channels in modes:
        array = _pixels(32, 40, channels)
        Image.fromarray(array[..., 0] if channels == 1 else array, mode=modes[channels]).save(
            directory / "c.png")
    Image.fromarray(_pixels(32, 40, 3)).save(directory / "rgb.png")


@pytest.mark.parametrize("channels", [1, 2, 4, 6])
def test_extract_features_tool_reads_every_input_kind(channels, rgb_checkpoint, tmp_path, capsys):
    _inputs(tmp_path / "in", channels)
    stats = ["--mean", *[0.5] * channels, "--std", *[0.25] * channels]
    status, out, err = run_tool(capsys, "extract_features", tmp_path / "in", "--out", tmp_path / "out",
                                "--checkpoint", rgb_checkpoint, "--in-channels", channels,
                                "--no-progress", "--prefetch", 0, *stats)
    good = ["a", "b"] + (["c"] if channels != 6 else [])
    assert status == 1, err  # the RGB image is the one bad file
    assert f"rgb.png: the image has 3 channel(s) (RGB), the model in_channels={channels}" in err
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.safetensors")) == good
    assert f"wrote features of {len(good)} image(s)" in out
    # the features written are the extractor's of the same pixels
    extractor = FeatureExtractor({"in_channels": channels}, checkpoint=rgb_checkpoint,
                                 mean=[0.5] * channels, std=[0.25] * channels)
    pixels = read_pixels(tmp_path / "in" / "a.npy", channels)
    want = extractor(pixels[None])
    got, _ = load_features(tmp_path / "out" / "a.safetensors")
    for name, value in want.items():
        torch.testing.assert_close(got[name], value[0])


def test_extract_features_tool_needs_the_normalisation_of_other_channels(rgb_checkpoint, tmp_path,
                                                                         capsys):
    _inputs(tmp_path / "in", 4)
    status, _, err = run_tool(capsys, "extract_features", tmp_path / "in", "--out", tmp_path / "out",
                              "--checkpoint", rgb_checkpoint, "--in-channels", 4)
    assert status == 2 and "in_channels=4: give mean and std with 4 values each" in err
    status, _, err = run_tool(capsys, "extract_features", tmp_path / "in", "--out", tmp_path / "out",
                              "--checkpoint", rgb_checkpoint, "--in-channels", 4,
                              "--mean", 0.5, 0.5, 0.5, "--std", 0.2, 0.2, 0.2, 0.2)
    assert status == 2 and "mean must be 4 finite numbers" in err


def test_grey_features_of_the_tool_equal_the_rgb_model_on_the_replicated_image(rgb_checkpoint,
                                                                               tmp_path):
    """A grey PNG through the adapted 1-channel extractor equals the RGB extractor on the same
    image expanded to RGB (equal mean and std in every channel, so the normalised RGB input is the
    grey one replicated)."""
    Image.fromarray(_pixels(32, 40)).save(tmp_path / "grey.png")
    grey = FeatureExtractor({"in_channels": 1}, checkpoint=rgb_checkpoint, mean=[0.45], std=[0.22])
    rgb = FeatureExtractor(None, checkpoint=rgb_checkpoint, mean=[0.45] * 3, std=[0.22] * 3)
    ours = grey.extract_files([tmp_path / "grey.png"])[0].features
    theirs = rgb.extract_files([tmp_path / "grey.png"])[0].features  # read as RGB: replicated
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-4)


def test_classify_tool_on_grey_and_multichannel_inputs(tmp_path, capsys):
    torch.manual_seed(0)
    rgb = SwinClassifier(num_classes=4, **TINY)
    torch.save(rgb.state_dict(), tmp_path / "classifier.pth")
    (tmp_path / "in").mkdir()
    Image.fromarray(_pixels(32, 32)).save(tmp_path / "in" / "grey.png")
    np.save(tmp_path / "in" / "grey.npy", _pixels(32, 32))
    Image.fromarray(_pixels(32, 32, 4)).save(tmp_path / "in" / "rgba.png")
    status, out, err = run_tool(capsys, "classify", tmp_path / "in", "--checkpoint",
                                tmp_path / "classifier.pth", "--in-channels", 1, "--topk", 2,
                                "--mean", 0.45, "--std", 0.22)
    assert status == 1 and "rgba.png: the image has 4 channel(s) (RGBA), the model in_channels=1" in err
    assert "grey.png" in out and "grey.npy" in out and out.count("  1. class") == 2
    status, _, err = run_tool(capsys, "classify", tmp_path / "in" / "grey.png", "--checkpoint",
                              tmp_path / "classifier.pth", "--in-channels", 6)
    assert status == 2 and "in_channels=6: give mean and std" in err


def test_rgb_extractor_is_unchanged_for_rgb_inputs(rgb_checkpoint, tmp_path):
    """The 3-channel path reads and normalises as before: ImageNet by default, a grey image
    expanded."""
    Image.fromarray(_pixels(32, 40)).save(tmp_path / "grey.png")
    extractor = FeatureExtractor(None, checkpoint=rgb_checkpoint)
    model = Swinv2Backbone(**TINY).eval()
    load_pretrained(model, rgb_checkpoint)
    x = read_pixels(tmp_path / "grey.png").float()[None] / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model((x - mean) / std)
    got = extractor.extract_files([tmp_path / "grey.png"])[0].features
    for a, b in zip(got.values(), want):
        assert torch.equal(a, b[0])


# ------------------------------------------------------------------------- converter and export
def test_converter_adapts_rgb_weights_to_other_channels(rgb_checkpoint, tmp_path, capsys):
    status, out, err = run_tool(capsys, "convert_checkpoint", rgb_checkpoint,
                                tmp_path / "four.safetensors", "--in-channels", 4)
    assert status == 0, err
    assert "adapted from 3 to in_channels=4" in out and "in_channels=4, window_size=4" in out
    direct = Swinv2Backbone(**TINY, in_channels=4)
    load_pretrained(direct, rgb_checkpoint)
    converted = Swinv2Backbone(**TINY, in_channels=4)
    load_pretrained(converted, tmp_path / "four.safetensors")
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in converted.state_dict().items())
    status, out, err = run_tool(capsys, "convert_checkpoint", rgb_checkpoint, tmp_path / "hf",
                                "--to", "hf", "--in-channels", 1)
    assert status == 0, err
    import transformers

    hf = transformers.Swinv2Model.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.num_channels == 1
    status, _, err = run_tool(capsys, "convert_checkpoint", tmp_path / "four.safetensors",
                              tmp_path / "two.safetensors", "--in-channels", 2)
    assert status == 2 and "takes 4 input channels, the model in_channels=2" in err


@needs_dynamic_export
@pytest.mark.slow
def test_export_serves_the_models_input_channels(rgb_checkpoint, tmp_path, capsys):
    """A 4-channel backbone (an RGB checkpoint adapted by the converter) exports with 4-channel
    inputs, equals the eager model, and refuses 3 channels naming 4."""
    assert run_tool(capsys, "convert_checkpoint", rgb_checkpoint, tmp_path / "four.safetensors",
                    "--in-channels", 4)[0] == 0
    status, out, err = run_tool(capsys, "export", tmp_path / "four.safetensors", "--to", "onnx",
                                "--output", tmp_path / "four.onnx", "--max-side", 256)
    assert status == 0, err
    assert "x 4 x (32..256)" in out
    model = Swinv2Backbone(**TINY, in_channels=4).eval()
    load_pretrained(model, tmp_path / "four.safetensors")
    exported = load_exported(tmp_path / "four.onnx", "onnxruntime")
    x = torch.randn(1, 4, 64, 96)
    with torch.no_grad():
        for a, b in zip(exported(x), model(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ExportError, match="expected 4 input channels, got 3"):
        exported(torch.zeros(1, 3, 64, 64))
