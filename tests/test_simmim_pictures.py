"""SimMIM reconstruction pictures: the panels (visible pixels kept, masked ones greyed, the
reconstruction de-normalised, also for the normalised target), the mask settings read from a config,
and tools/simmim_pictures.py on generated images with a tiny random checkpoint saved as the runner
saves one (an unreadable image is reported and the others still drawn)."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
from PIL import Image

import swinv2_backbone  # noqa: F401  (registers the model)
from swinv2_backbone.models.simmim import normalize_targets, pixel_mask
from swinv2_backbone.openmmlab.simmim_pictures import (GAP, LABEL_HEIGHT, MASK_GREY, MaskSettings,
                                                       mask_settings, panel_labels,
                                                       reconstruction_panels, seeded_mask)
from kit import SHALLOW, run_tool

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "simmim_pictures.py"
DEMO_CONFIG = ROOT / "configs/simmim/simmim_swinv2-compact_toy-shapes.py"
SETTINGS = MaskSettings(image_size=(64, 64), mask_patch_size=16, model_patch_size=4, mask_ratio=0.6)


def tiny_model(**kw):
    torch.manual_seed(0)
    return MODELS.build(dict(type="Swinv2SimMIM", backbone=dict(SHALLOW), **kw)).eval()


def random_image(hw=(64, 64), seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, *hw), dtype=np.uint8))


def test_panels_keep_the_visible_pixels_and_grey_the_masked_ones():
    model = tiny_model()
    image = random_image()
    mask = seeded_mask(SETTINGS, 0)
    shown, masked, rec = reconstruction_panels(model, image, mask)
    hidden = pixel_mask(mask[None], 4, (64, 64))[0].expand(3, -1, -1)
    assert torch.equal(shown, image)
    assert bool((masked[hidden] == MASK_GREY).all())
    assert torch.equal(masked[~hidden], image[~hidden])
    assert rec.dtype == torch.uint8 and torch.equal(rec[~hidden], image[~hidden])
    assert not torch.equal(rec[hidden], image[hidden])  # random weights: no copy of the input


@pytest.mark.parametrize("window", [None, 7])
def test_a_perfect_prediction_of_the_target_draws_the_input(monkeypatch, window):
    """De-normalisation: a model whose output is exactly its target (the normalised image, or its
    locally normalised version) reconstructs the input's pixels, up to rounding."""
    model = tiny_model(norm_target_window=window)
    target = (lambda x: x) if window is None else (lambda x: normalize_targets(x, window))
    monkeypatch.setattr(model, "forward", lambda inputs, data_samples, mode: target(inputs))
    image = random_image(seed=1)
    _, _, rec = reconstruction_panels(model, image, seeded_mask(SETTINGS, 3))
    assert (rec.int() - image.int()).abs().max() <= 1
    assert panel_labels(model, 0.6)[2] == ("reconstruction" if window is None
                                          else "rec. (local stats)")


def test_masks_repeat_with_their_seed_alone():
    torch.manual_seed(123)  # the global generator does not matter
    a = seeded_mask(SETTINGS, 5)
    torch.manual_seed(7)
    assert torch.equal(a, seeded_mask(SETTINGS, 5))
    assert not torch.equal(a, seeded_mask(SETTINGS, 6))
    assert a.shape == (16, 16) and int(a.sum()) == 10 * 16  # ceil(16 blocks * 0.6) of 4x4 patches


def test_mask_settings_come_from_the_training_pipeline():
    cfg = Config.fromfile(str(DEMO_CONFIG))
    assert mask_settings(cfg) == MaskSettings((128, 128), 16, 4, 0.6)
    assert mask_settings(cfg, (64, 96)).image_size == (64, 96)
    cfg.train_dataloader.dataset.pipeline = [t for t in cfg.train_pipeline
                                             if t["type"] != "SimMIMRandomResizedCrop"]
    with pytest.raises(ValueError, match="give the input size"):
        mask_settings(cfg)


def save_like_the_runner(model, path: Path) -> None:
    """A checkpoint as mmengine's runner writes it: meta, the CPU state dict and the message hub
    (whose HistoryBuffers need the safe globals to load weights-only)."""
    hub = MessageHub.get_instance("test_simmim_pictures")
    hub.update_scalar("train/loss", 0.5)
    save_checkpoint(dict(meta=dict(iter=1, epoch=0), state_dict=weights_to_cpu(model.state_dict()),
                         message_hub=hub.state_dict()), str(path))


def test_tool_draws_every_readable_image_and_fails_at_the_end(tmp_path):
    config = tmp_path / "tiny_simmim.py"
    backbone = ", ".join(f"{k}={v!r}" for k, v in SHALLOW.items())
    config.write_text(f"_base_ = {str(DEMO_CONFIG)!r}\nmodel = dict(backbone=dict({backbone}))\n")
    checkpoint = tmp_path / "iter_1.pth"
    save_like_the_runner(tiny_model(), checkpoint)
    images = tmp_path / "images"
    images.mkdir()
    for i, hw in enumerate([(80, 100), (64, 64)]):
        Image.fromarray(random_image(hw, seed=i).permute(1, 2, 0).numpy()).save(images / f"{i}.png")
    (images / "broken.png").write_text("not an image")
    cmd = [sys.executable, str(TOOL), str(config), str(checkpoint), str(images / "0.png"),
           str(images / "broken.png"), str(images / "1.png"), "--size", "64"]
    runs = []
    for name in ("a", "b"):
        proc = subprocess.run(cmd + ["--out", str(tmp_path / name)], cwd=ROOT, capture_output=True,
                              text=True, env=dict(os.environ), timeout=300)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "broken.png" in proc.stderr and "1 input(s) could not be drawn" in proc.stderr
        runs.append(sorted(p.name for p in (tmp_path / name).iterdir()))
    assert runs == [["0.png", "1.png"]] * 2
    for picture in ("0.png", "1.png"):
        a = cv2.imread(str(tmp_path / "a" / picture))
        assert a.shape == (64 + LABEL_HEIGHT, 3 * 64 + 2 * GAP, 3)
        assert np.array_equal(a, cv2.imread(str(tmp_path / "b" / picture)))  # seeded masks
    # the images are masked with different seeds (0, then 2: the broken image had seed 1)
    a0, a1 = (cv2.imread(str(tmp_path / "a" / p))[LABEL_HEIGHT:, 64 + GAP:128 + GAP]
              for p in ("0.png", "1.png"))
    assert not np.array_equal((a0 == MASK_GREY).all(-1), (a1 == MASK_GREY).all(-1))


def test_tool_refuses_a_checkpoint_of_another_model(tmp_path, capsys):
    """In this process (the script itself runs in the test above)."""
    checkpoint = tmp_path / "other.pth"
    torch.save({"state_dict": {"weight": torch.zeros(1)}}, checkpoint)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    status, out, err = run_tool(capsys, "simmim_pictures", DEMO_CONFIG, checkpoint, image, "--out",
                                tmp_path / "out")
    assert status == 2 and "error:" in err, out + err
