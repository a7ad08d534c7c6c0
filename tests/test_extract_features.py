"""Feature extraction: the Python API (swinv2_backbone.features) and tools/extract_features.py on
generated images and a native checkpoint of a small random model."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from capabilities import needs_cpu_fp16
from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint.build import build_backbone
from swinv2_backbone.features import (IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, ImageReadError,
                                      batches_by_size, find_images, image_size, load_features,
                                      parse_device, parse_dtype, pca_rgb, read_image, save_features,
                                      target_size, upsample_to_image)
from kit import SMALL, run_script, run_tool, save_backbone

#: name -> (rows, columns): two of one size, two others, one needing padding at every stage.
SIZES = {"a": (40, 56), "b": (40, 56), "c": (33, 70), "d": (64, 48)}


def small_model(seed: int = 0, **kw) -> Swinv2Backbone:
    torch.manual_seed(seed)
    return Swinv2Backbone(**{**SMALL, **kw}).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Random RGB PNGs of several sizes and a native checkpoint of a seeded small model."""
    root = tmp_path_factory.mktemp("features")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{name}.png")
    (images / "notes.txt").write_text("not an image")
    checkpoint = root / "native.pth"
    state = save_backbone(checkpoint, SMALL, seed=3)
    bare = root / "bare.pth"  # a plain state dict: windows unknown
    torch.save(state, bare)
    return {"root": root, "images": images, "checkpoint": checkpoint, "bare": bare}


@pytest.fixture(scope="module")
def extractor(data) -> FeatureExtractor:
    """All four stages of the checkpoint, fp32, CPU (shared: building and warming up costs time)."""
    return FeatureExtractor(checkpoint=data["checkpoint"])


def reference(x_uint8: torch.Tensor, seed: int = 3) -> Tuple[torch.Tensor, ...]:
    """The seeded model applied to ImageNet-normalised pixels by hand."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return small_model(seed=seed)((x_uint8.float() / 255 - mean) / std)


def pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)


# ------------------------------------------------------------------------------------ the API
def test_call_returns_named_maps_of_ceil_size_equal_to_the_model(data, extractor):
    x = torch.stack([pixels(data["images"] / "c.png")] * 2)
    feats = extractor(x)
    assert list(feats) == ["stage1", "stage2", "stage3", "stage4"]
    assert extractor.strides == {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}
    assert extractor.channels == {"stage1": 16, "stage2": 32, "stage3": 64, "stage4": 128}
    for (name, f), ref in zip(feats.items(), reference(x)):
        s = extractor.strides[name]
        assert f.shape == (2, extractor.channels[name], math.ceil(33 / s), math.ceil(70 / s))
        torch.testing.assert_close(f, ref, rtol=1e-5, atol=1e-5)
    # Floats in [0, 1] are the same input as uint8 in 0-255.
    for a, b in zip(extractor(x.float() / 255).values(), feats.values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_selected_stages_build_only_what_is_needed(data):
    extractor = FeatureExtractor(checkpoint=data["checkpoint"], out_features=("stem", "stage2"))
    assert len(extractor.model.layers) == 2
    x = pixels(data["images"] / "a.png")[None]
    feats = extractor(x)
    assert list(feats) == ["stem", "stage2"]
    torch.testing.assert_close(feats["stage2"], reference(x)[1], rtol=1e-5, atol=1e-5)
    assert feats["stem"].shape == (1, 16, 10, 14)


def test_given_model_and_subset_of_its_outputs():
    model = small_model(seed=1)
    extractor = FeatureExtractor(model, out_features=["stage3", "stage1"])
    assert extractor.model is model and not model.training
    assert extractor.out_features == ("stage1", "stage3")  # model order
    x = torch.rand(1, 3, 32, 32)
    feats = extractor(x)
    assert list(feats) == ["stage1", "stage3"] and feats["stage3"].shape == (1, 64, 2, 2)
    with pytest.raises(ValueError, match=r"\['stem'\] are not outputs of the given model: it returns "
                                         r"\['stage1', 'stage2', 'stage3', 'stage4'\]"):
        FeatureExtractor(small_model(), out_features=("stem",))


def test_config_dict_gives_random_weights_and_overrides_checkpoint_windows(data):
    extractor = FeatureExtractor(dict(type="Swinv2Backbone", **SMALL), out_features=("stage4",))
    assert list(extractor(torch.rand(1, 3, 64, 64))) == ["stage4"]
    # Config entries override what the checkpoint says; the position bias keeps the checkpoint's
    # coordinate normalisation (its training window 4) unless the config sets it.
    wide = FeatureExtractor({"window_size": 8}, checkpoint=data["checkpoint"])
    assert wide.model.window_size == (8, 8, 8, 8)
    assert {b.attn.pretrained_window_size for s in wide.model.layers for b in s.blocks} == {4}
    ref = small_model(seed=3)
    torch.testing.assert_close(wide.model.patch_embed.proj.weight, ref.patch_embed.proj.weight)
    own = FeatureExtractor({"window_size": 8, "pretrained_window_sizes": 6}, checkpoint=data["checkpoint"])
    assert {b.attn.pretrained_window_size for s in own.model.layers for b in s.blocks} == {6}
    # A file without windows: the config says them, and the features equal the model's.
    bare = FeatureExtractor({"window_size": 4}, checkpoint=data["bare"], out_features=("stage4",))
    x = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    torch.testing.assert_close(bare(x)["stage4"], reference(x)[3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype, tol", [("bf16", 0.1), pytest.param("fp16", 0.05, marks=needs_cpu_fp16)])
def test_low_precision_on_cpu_is_close_to_fp32(data, dtype: str, tol: float):
    x = pixels(data["images"] / "d.png")[None]
    low = FeatureExtractor(checkpoint=data["checkpoint"], dtype=dtype, out_features=("stage1", "stage4"))
    feats = low(x)
    ref = reference(x)
    for name, r in zip(("stage1", "stage4"), (ref[0], ref[3])):
        assert feats[name].dtype == parse_dtype(dtype)
        err = (feats[name].float() - r).abs().max().item()
        assert err < tol * max(1.0, r.abs().max().item()), (name, err)


def test_custom_normalisation_is_applied():
    model = small_model()
    plain = FeatureExtractor(model, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x)["stage2"], model(x)[1])
    assert plain.mean == (0.0, 0.0, 0.0)


def test_files_batched_equal_one_by_one_in_input_order(data, extractor):
    files = [data["images"] / f"{n}.png" for n in ("c", "a", "d", "b")]
    batched = extractor.extract_files(files, batch_size=4)
    single = extractor.extract_files(files, batch_size=1)
    assert [r.path for r in batched] == [r.path for r in single] == files
    for b, s in zip(batched, single):
        h, w = SIZES[b.path.stem]
        assert b.original_size == b.input_size == (h, w)
        assert b.padded_size == (math.ceil(h / 32) * 32, math.ceil(w / 32) * 32)
        for name, f in b.features.items():
            stride = extractor.strides[name]
            assert f.shape == (extractor.channels[name], math.ceil(h / stride), math.ceil(w / stride))
            assert f.device.type == "cpu"
            torch.testing.assert_close(f, s.features[name], rtol=1e-5, atol=1e-5)
    direct = reference(torch.stack([pixels(files[1]), pixels(files[3])]))
    torch.testing.assert_close(batched[1].features["stage4"], direct[3][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[3].features["stage1"], direct[0][1], rtol=1e-5, atol=1e-5)
    # Processing order: same-size images share a batch (a and b at positions 1 and 3).
    order = [r.index for r in extractor.iter_files(files, batch_size=4)]
    assert order == [0, 1, 3, 2]


def test_resizing_options(data):
    extractor = FeatureExtractor(checkpoint=data["checkpoint"], out_features=("stage2",))
    c = data["images"] / "c.png"
    (fixed,) = extractor.extract_files([c], size=(48, 80))
    assert fixed.original_size == (33, 70) and fixed.input_size == (48, 80)
    assert fixed.features["stage2"].shape == (32, 6, 10)
    (short,) = extractor.extract_files([c], short_side=66)
    assert short.input_size == (66, 140)
    assert short.features["stage2"].shape == (32, 9, 18)
    with pytest.raises(ValueError, match="either size or short_side"):
        extractor.extract_files([c], size=(8, 8), short_side=8)


def test_target_size_and_batching_helpers():
    assert target_size((30, 50)) == (30, 50)
    assert target_size((30, 50), short_side=60) == (60, 100)
    assert target_size((51, 20), short_side=10) == (26, 10)
    assert target_size((7, 7), short_side=3) == (3, 3)
    assert target_size((7, 9), size=(4, 5)) == (4, 5)
    assert batches_by_size([(1, 1), (2, 2), (1, 1), (1, 1), (2, 2)], 2) == [[0, 2], [3], [1, 4]]
    for bad in [dict(size=(0, 5)), dict(size=(5,)), dict(short_side=0), dict(short_side=2.5)]:
        with pytest.raises(ValueError, match="positive int"):
            target_size((10, 10), **bad)


def test_find_images_folders_globs_files_and_errors(data, tmp_path: Path):
    folder = data["images"]
    pngs = [folder / f"{n}.png" for n in sorted(SIZES)]
    assert find_images([folder]) == pngs  # notes.txt is not taken
    assert find_images([str(folder / "[cd].png"), folder / "a.png"]) == pngs[2:] + pngs[:1]
    assert find_images([folder / "a.png", folder]) == pngs  # a file reached twice is listed once
    assert find_images([str(folder.parent / "**" / "b.png")]) == [folder / "b.png"]
    with pytest.raises(ImageReadError, match=r"no images found for pattern '.*\*\.jpg'"):
        find_images([str(folder / "*.jpg")])
    with pytest.raises(ImageReadError, match="no such file or folder: '.*missing.png'"):
        find_images([folder / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no images found in folder"):
        find_images([tmp_path / "empty"])


def test_unreadable_and_truncated_images(data, tmp_path: Path):
    fake = tmp_path / "fake.png"
    fake.write_text("hello")
    with pytest.raises(ImageReadError, match=r"cannot read image '.*fake.png'"):
        image_size(fake)
    extractor = FeatureExtractor(small_model())
    with pytest.raises(ImageReadError, match=r"cannot read image '.*fake.png'"):
        extractor.extract_files([data["images"] / "a.png", fake])
    cut = tmp_path / "cut.png"
    cut.write_bytes((data["images"] / "d.png").read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"cannot read image '.*cut.png'"):
        read_image(cut)


def test_image_modes_and_exif_orientation(tmp_path: Path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((5, 7), 200, np.uint8)).save(grey)
    assert read_image(grey).shape == (3, 5, 7) and read_image(grey).eq(200).all()
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((4, 6, 4), 9, np.uint8)).save(rgba)
    assert read_image(rgba).shape == (3, 4, 6)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(rotated, exif=exif)
    assert image_size(rotated) == (30, 10)
    assert read_image(rotated).shape == (3, 30, 10)
    assert read_image(rotated, size=(12, 8)).shape == (3, 12, 8)


def test_bad_arguments_are_refused(data, monkeypatch: pytest.MonkeyPatch):
    model = small_model()
    cases = [
        (lambda: FeatureExtractor(model, dtype="int8"), ValueError, "unsupported dtype 'int8'"),
        (lambda: FeatureExtractor(model, dtype=torch.float64), ValueError, "choose from 'fp32'"),
        (lambda: FeatureExtractor(model, device="tpu"), ValueError, "invalid device 'tpu'"),
        (lambda: FeatureExtractor(model, mean=(0.5, 0.5)), ValueError, "mean must be 3 finite"),
        (lambda: FeatureExtractor(model, std=(1, 0, 1)), ValueError, "std must be positive"),
        (lambda: FeatureExtractor(), ValueError, "give a model, a model config"),
        (lambda: FeatureExtractor("tiny"), TypeError, "got str"),
        (lambda: FeatureExtractor(dict(type="ResNet")), ValueError,
         r"must be one of \['SwinBackbone', 'Swinv2Backbone'\], got 'ResNet'"),
        (lambda: FeatureExtractor(dict(SMALL), out_features=("stage9",)), ValueError,
         r"unknown out_features \['stage9'\]"),
        (lambda: FeatureExtractor(dict(SMALL, out_indices=(0,)), out_features=("stage1",)), ValueError,
         "given twice"),
        (lambda: FeatureExtractor(dict(pretrained="x.pth"), checkpoint=data["checkpoint"]), ValueError,
         "checkpoint is given twice"),
        (lambda: FeatureExtractor(model)(torch.rand(3, 32, 32)), ValueError, r"\(N, 3, H, W\)"),
        (lambda: FeatureExtractor(model)(torch.ones(1, 3, 8, 8, dtype=torch.int32)), TypeError,
         "uint8 .* or floating point"),
        (lambda: FeatureExtractor(model).extract_files([], batch_size=1), ValueError, "no image files"),
        (lambda: FeatureExtractor(model).extract_files([data["images"] / "a.png"], batch_size=0),
         ValueError, "batch_size must be a positive int"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        parse_device("cuda")


def test_wrong_checkpoint_for_the_requested_arch(data):
    with pytest.raises(ValueError, match="does not fit the model"):
        build_backbone(dict(SMALL, embed_dims=8), checkpoint=data["checkpoint"])


def test_build_backbone_is_still_importable_from_features():
    """It moved to checkpoint/build.py; callers of the former single module keep working."""
    import swinv2_backbone.features as features

    assert features.build_backbone is build_backbone


def test_hugging_face_directory_gives_the_features_of_the_hf_model(tmp_path: Path):
    """A checkpoint in another format: an HF Swinv2Backbone saved with save_pretrained."""
    import transformers  # a test dependency (tools/setup_env.sh installs it): fail, never skip
    config = transformers.Swinv2Config(image_size=64, embed_dim=16, depths=[2, 2, 2, 2],
                                       num_heads=[1, 2, 2, 4], window_size=4,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    torch.manual_seed(0)
    hf = transformers.Swinv2Backbone(config).eval()
    with torch.no_grad():
        for p in hf.parameters():  # move LayerNorms and biases off their 1/0 initialisation
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    extractor = FeatureExtractor({"out_norm": False}, checkpoint=tmp_path / "hf")
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        theirs = hf((x / 255.0 - mean) / std).feature_maps
    ours = extractor(x)
    assert list(ours) == ["stage1", "stage2", "stage3", "stage4"]
    for a, b in zip(ours.values(), theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ pictures
def test_pca_recovers_planted_components_independent_of_sign():
    torch.manual_seed(0)
    h, w, c = 6, 8, 10
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    # Three skewed (so the sign rule has a unique extreme), centred, orthogonal patterns with
    # variances in the ratio 81 : 16 : 1.
    raw = torch.stack([xx ** 2, yy ** 3, xx * yy ** 2]).flatten(1)
    raw = raw - raw.mean(dim=1, keepdim=True)
    q, _ = torch.linalg.qr(raw.T)  # orthonormal columns spanning the centred patterns
    patterns = q.T * torch.tensor([[9.0], [4.0], [1.0]], dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(c, 3, dtype=torch.float64))  # orthonormal directions
    feature = (basis @ patterns).reshape(c, h, w).float() + 5.0  # plus an offset PCA removes
    picture = pca_rgb(feature)
    assert picture.dtype == torch.uint8 and picture.shape == (3, h, w)
    for k in range(3):
        p = patterns[k].reshape(h, w)
        if p.flatten()[p.abs().flatten().argmax()] < 0:
            p = -p
        expected = ((p - p.min()) / (p.max() - p.min()) * 255).round()
        assert (picture[k].double() - expected).abs().max() <= 1, k
    assert torch.equal(pca_rgb(-feature), picture)


def test_pca_degenerate_maps():
    assert pca_rgb(torch.full((4, 3, 3), 2.0)).eq(0).all()  # constant: no variance
    two = pca_rgb(torch.randn(2, 4, 4))  # two channels: third component missing
    assert two[2].eq(0).all() and two[0].max() == 255 and two[0].min() == 0
    assert pca_rgb(torch.randn(8, 1, 1)).eq(0).all()  # one position
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        pca_rgb(torch.randn(1, 8, 4, 4))


def test_upsample_to_image_expands_cells_and_crops():
    cells = torch.arange(2 * 3, dtype=torch.uint8).view(1, 2, 3).expand(3, 2, 3)
    full = upsample_to_image(cells, stride=4, input_size=(7, 10))
    assert full.shape == (3, 7, 10)
    assert full[0, 3, 3] == 0 and full[0, 4, 3] == 3 and full[0, 6, 9] == 5 and full[0, 0, 8] == 2
    resized = upsample_to_image(cells, stride=4, input_size=(7, 10), output_size=(14, 20))
    assert resized.shape == (3, 14, 20) and resized[0, 13, 19] == 5
    with pytest.raises(ValueError, match="does not have stride 8"):
        upsample_to_image(cells, stride=8, input_size=(7, 10))


def test_save_and_load_round_trip(data, tmp_path: Path):
    extractor = FeatureExtractor(checkpoint=data["checkpoint"], dtype="bf16", out_features=("stage3",))
    (result,) = extractor.extract_files([data["images"] / "c.png"])
    save_features(result, extractor, tmp_path / "c.safetensors")
    tensors, meta = load_features(tmp_path / "c.safetensors")
    assert torch.equal(tensors["stage3"], result.features["stage3"])
    assert tensors["stage3"].dtype == torch.bfloat16
    assert meta == {"stages": ["stage3"], "strides": {"stage3": 16}, "channels": {"stage3": 64},
                    "input_size": [33, 70], "original_size": [33, 70], "padded_size": [48, 80],
                    "source": str(data["images"] / "c.png"), "checkpoint": str(data["checkpoint"]),
                    "dtype": "bf16", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


# ------------------------------------------------------------------------------------ the CLI
def run_main(capsys: pytest.CaptureFixture, *args: str) -> Tuple[int, str, str]:
    """The tool's ``main`` in-process without its progress bar (:func:`kit.run_tool`)."""
    return run_tool(capsys, "extract_features", *args, "--no-progress")


@pytest.mark.slow
def test_cli_writes_features_metadata_and_pca_pictures(data, tmp_path: Path):
    out = tmp_path / "out"
    images = data["images"]
    result = run_script("extract_features", images / "a.png", images / "[bc].png", images, "--out",
                        out, "--checkpoint", data["checkpoint"], "--stages", "stage1", "stage3",
                        "--batch-size", "2", "--pca")
    assert result.returncode == 0, result.stderr
    assert "wrote features of 4 image(s) (stage1, stage3)" in result.stdout
    assert "4/4" in result.stderr  # the progress bar ran to the end
    expected: List[str] = []
    for name in sorted(SIZES):
        expected += [f"{name}.safetensors", f"{name}_stage1_pca.png", f"{name}_stage3_pca.png"]
    assert sorted(p.name for p in out.iterdir()) == expected
    api = FeatureExtractor(checkpoint=data["checkpoint"], out_features=("stage1", "stage3"))
    for name, (h, w) in SIZES.items():
        tensors, meta = load_features(out / f"{name}.safetensors")
        assert list(tensors) == ["stage1", "stage3"]
        assert tensors["stage1"].shape == (16, math.ceil(h / 4), math.ceil(w / 4))
        assert tensors["stage3"].shape == (64, math.ceil(h / 16), math.ceil(w / 16))
        assert meta["strides"] == {"stage1": 4, "stage3": 16} and meta["dtype"] == "fp32"
        assert meta["input_size"] == [h, w] and meta["padded_size"] == [math.ceil(h / 16) * 16,
                                                                        math.ceil(w / 16) * 16]
        assert meta["checkpoint"] == str(data["checkpoint"])
        ref = api(pixels(images / f"{name}.png")[None])
        torch.testing.assert_close(tensors["stage3"], ref["stage3"][0], rtol=1e-5, atol=1e-5)
        for stage in ("stage1", "stage3"):
            with Image.open(out / f"{name}_{stage}_pca.png") as png:
                assert png.mode == "RGB" and png.size == (w, h)
                picture = torch.from_numpy(np.array(png)).permute(2, 0, 1)
            stride = meta["strides"][stage]
            torch.testing.assert_close(picture, upsample_to_image(pca_rgb(tensors[stage]), stride, (h, w)))


def test_cli_resized_pca_pictures_keep_the_original_size(data, tmp_path: Path, capsys):
    status, out, err = run_main(capsys, str(data["images"] / "c.png"), "--out", str(tmp_path),
                                "--checkpoint", str(data["checkpoint"]), "--stages", "stage2",
                                "--short-side", "48", "--pca", "--dtype", "bf16")
    assert status == 0, err
    tensors, meta = load_features(tmp_path / "c.safetensors")
    assert meta["input_size"] == [48, 102] and meta["original_size"] == [33, 70]
    assert tensors["stage2"].shape == (32, 6, 13) and tensors["stage2"].dtype == torch.bfloat16
    with Image.open(tmp_path / "c_stage2_pca.png") as png:
        assert png.size == (70, 33)


def test_cli_random_weights_without_checkpoint(data, tmp_path: Path, capsys):
    status, out, err = run_main(capsys, str(data["images"] / "d.png"), "--out", str(tmp_path / "x"),
                                "--stages", "stage4", "--window-size", "4")
    assert status == 0, err
    tensors, meta = load_features(tmp_path / "x" / "d.safetensors")
    assert tensors["stage4"].shape == (768, 2, 2)  # tiny preset
    assert meta["checkpoint"] is None


@pytest.mark.parametrize("case, args, message", [
    ("empty_glob", ["{images}/*.jpg"], "no images found for pattern"),
    ("missing", ["{images}/zzz.png"], "no such file or folder"),
    ("unknown_stage", ["{images}/a.png", "--stages", "stage7"], "unknown out_features ['stage7']"),
    ("stem_clash", ["{images}/a.png", "{root}/other/a.png"], "would both write a.safetensors"),
    ("cuda", ["{images}/a.png", "--device", "cuda"], "CUDA is not available"),
    ("bad_checkpoint", ["{images}/a.png", "--checkpoint", "{root}/bad.png"], "bad.png"),
])
def test_cli_errors(data, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, case: str,
                    args: List[str], message: str):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (data["root"] / "bad.png").write_text("no image")
    (data["root"] / "other").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data["root"] / "other" / "a.png")
    filled = [a.format(images=data["images"], root=data["root"]) for a in args]
    if "--checkpoint" not in filled:
        filled += ["--checkpoint", str(data["checkpoint"])]
    status, out, err = run_main(capsys, *filled, "--out", str(tmp_path / "o"))
    assert status == 2
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.safetensors"))


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "argument --batch-size: must be an int >= 1, got '0'"),
    (["--size", "8", "8", "--short-side", "8"], "not allowed with argument"),
    (["--dtype", "fp64"], "invalid choice: 'fp64'"),
])
def test_cli_usage_errors(data, tmp_path: Path, capsys, args: List[str], message: str):
    status, _, err = run_main(capsys, str(data["images"] / "a.png"), "--out", str(tmp_path), *args)
    assert status == 2 and message in err
