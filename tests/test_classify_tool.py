"""tools/classify.py on generated images and a saved HF classification directory (``id2label`` and a
``preprocessor_config.json`` that differs from the defaults): the printed top-k equals the HF model's
on HF's own preprocessing; an unreadable image is reported without stopping the others. The first
run is the script in a fresh interpreter; the rest call its ``main`` in this process (3 s less
each)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from swinv2_backbone.checkpoint import convert_checkpoint
from swinv2_backbone.features.classify import preprocessing_for
from swinv2_backbone.testing import peers
from kit import run_script, run_tool

TOOL = "classify"
LABELS = ["circle", "square", "triangle", "star", "moon"]
PREPROCESSOR = {"do_resize": True, "size": {"height": 64, "width": 64}, "resample": 3,
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "image_processor_type": "ViTImageProcessor"}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    model = peers.hf_model("Swinv2ForImageClassification", peers.MINI, peers.W8, 71, image_size=64,
                           num_labels=len(LABELS), id2label=dict(enumerate(LABELS)))
    model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return directory, model


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> List[Path]:
    from PIL import Image

    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(48, 80), (100, 70)]):
        path = directory / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def expected_lines(model: torch.nn.Module, pixel_values: torch.Tensor, k: int) -> List[str]:
    with torch.no_grad():
        probs = model(pixel_values).logits[0].softmax(-1)
    values, indices = probs.topk(k)
    return [f"  {r}. {LABELS[int(i)]} ({int(i)})  {float(p):.4f}"
            for r, (p, i) in enumerate(zip(values, indices), 1)]


def test_preprocessing_follows_the_hf_processor(hf_dir, images):
    from transformers import AutoImageProcessor

    directory, _ = hf_dir
    ours = preprocessing_for(directory, convert_checkpoint(directory))
    assert ours.size == (64, 64) and ours.resample == 3 and ours.mean == (0.5, 0.5, 0.5)
    processor = AutoImageProcessor.from_pretrained(directory, use_fast=False)  # the Pillow path
    from PIL import Image

    theirs = processor(Image.open(images[1]).convert("RGB"), return_tensors="pt").pixel_values[0]
    assert float((ours.load(images[1]) - theirs).abs().max()) < 1e-5


def test_prints_named_top_k_and_survives_a_bad_image(hf_dir, images, tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor

    directory, model = hf_dir
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    result = run_script(TOOL, str(images[0]), str(broken), str(images[1]), "--checkpoint", str(directory),
                      "--topk", "3")
    assert result.returncode == 1, result.stderr
    assert "broken.png" in result.stderr and "1 input(s) could not be classified" in result.stderr
    processor = AutoImageProcessor.from_pretrained(directory, use_fast=False)  # the Pillow path
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith(f"{directory}/model.safetensors: hf,"))
    assert "5 classes, named" in header and "preprocessor_config.json" in header
    for path in images:
        start = lines.index(str(path))
        pixels = processor(Image.open(path).convert("RGB"), return_tensors="pt").pixel_values
        assert lines[start + 1:start + 4] == expected_lines(model, pixels, 3)


def test_indices_without_names_and_default_preprocessing(images, tmp_path, capsys):
    timm_model = peers.timm_model(peers.MINI, peers.W8, 72, num_classes=7)
    path = peers.save_torch(peers.official_checkpoint(timm_model), str(tmp_path), "official.pth")
    status, out, err = run_tool(capsys, TOOL, images[0], "--checkpoint", path, "--topk", "2")
    assert status == 0, err
    assert "7 classes;" in out and "256 px" in out
    assert out.splitlines()[-2].startswith("  1. class ")


@pytest.mark.parametrize("args,message", [
    (["--topk", "0"], "argument --topk: must be an int >= 1, got '0'"),
    (["--topk", "9"], "--topk 9 exceeds the checkpoint's 5 classes"),
    (["--device", "tpu"], "invalid device 'tpu'"),
])
def test_bad_arguments(hf_dir, images, args, message, capsys):
    directory, _ = hf_dir
    status, _, err = run_tool(capsys, TOOL, images[0], "--checkpoint", directory, *args)
    assert status == 2 and message in err, err


def test_checkpoint_without_head_or_missing(images, tmp_path, capsys):
    headless = peers.timm_model(peers.MINI, peers.W8, 73, num_classes=0)
    path = peers.save_torch(headless.state_dict(), str(tmp_path), "headless.pth")
    status, _, err = run_tool(capsys, TOOL, images[0], "--checkpoint", path)
    assert status == 2 and "has no classification head" in err
    status, _, err = run_tool(capsys, TOOL, images[0], "--checkpoint", tmp_path / "nope.pth")
    assert status == 2 and "nope.pth" in err


def test_window_size_for_a_file_that_does_not_record_it(images, tmp_path, capsys):
    """A timm state dict holds no window (its coordinate buffers are not persistent): the tool says
    so and runs its default window; ``--window-size`` gives the right one, and the logits then equal
    timm's on the same input."""
    timm_model = peers.timm_model(peers.MINI, peers.single_window(4), 74, num_classes=6)
    path = peers.save_torch(timm_model.state_dict(), str(tmp_path), "model.pth")
    status, out, err = run_tool(capsys, TOOL, images[0], "--checkpoint", path, "--topk", "6")
    assert status == 0, err
    assert "training windows unknown" in out and "using window 8" in out
    status, out, err = run_tool(capsys, TOOL, images[0], "--checkpoint", path, "--topk", "6",
                                "--window-size", "4")
    assert status == 0, err
    assert "training windows (4, 4, 4, 4) (from given explicitly)" in out
    pixels = preprocessing_for(path, convert_checkpoint(path)).load(images[0]).unsqueeze(0)
    with torch.no_grad():
        probs = timm_model(pixels)[0].softmax(-1)
    printed = {int(line.split("class ")[1].split()[0]): float(line.split()[-1])
               for line in out.splitlines() if line.startswith("  ") and "class " in line}
    assert len(printed) == 6
    for index, prob in printed.items():
        assert abs(prob - float(probs[index])) < 2e-4


def test_window_size_that_contradicts_the_checkpoint(hf_dir, images, capsys):
    directory, _ = hf_dir
    status, _, err = run_tool(capsys, TOOL, images[0], "--checkpoint", directory, "--window-size", "4")
    assert status == 2 and "disagree" in err, err
    status, _, err = run_tool(capsys, TOOL, images[0], "--checkpoint", directory,
                              "--pretrained-window-sizes", "6")
    assert status == 2 and "needs --window-size" in err
