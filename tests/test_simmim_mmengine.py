"""SimMIM through mmengine: the registered model's BaseModel contract, the registered transforms and a
few optimiser steps through ``train_step``, the pre-training config through tools/train.py."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS, TRANSFORMS

import swinv2_backbone  # noqa: F401  (registers the model and transforms)
from swinv2_backbone.compat import load_weights_only
from swinv2_backbone.models import SimMIM
from swinv2_backbone.models.simmim import simmim_loss
from swinv2_backbone.openmmlab.simmim import Swinv2SimMIM
from kit import SHALLOW

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = [dict(type="SimMIMMaskGenerator"), dict(type="PackSimMIMInputs")]


def batch(n: int = 2, hw=(64, 96), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pipe = Compose(PIPELINE)
    return pseudo_collate([pipe(dict(img=rng.integers(0, 256, (*hw, 3), dtype=np.uint8)))
                           for _ in range(n)])


def build(**kw) -> Swinv2SimMIM:
    torch.manual_seed(0)
    return MODELS.build(dict(type="Swinv2SimMIM", backbone=dict(SHALLOW), **kw))


def test_registered_in_the_root_registries():
    assert MODELS.get("Swinv2SimMIM") is Swinv2SimMIM
    assert TRANSFORMS.get("SimMIMMaskGenerator") is not None
    assert TRANSFORMS.get("PackSimMIMInputs") is not None


def test_pipeline_packs_uint8_chw_images_and_block_masks():
    torch.manual_seed(0)
    data = batch(hw=(64, 96))
    assert [tuple(i.shape) for i in data["inputs"]] == [(3, 64, 96)] * 2
    assert all(i.dtype == torch.uint8 for i in data["inputs"])
    assert [tuple(m.shape) for m in data["data_samples"]] == [(16, 24)] * 2
    assert all(int(m.sum()) == 4 * 64 for m in data["data_samples"])  # ceil(6 * 0.6) blocks of 8x8


def test_pipeline_masks_repeat_with_the_seed():
    torch.manual_seed(3)
    a = batch()["data_samples"]
    torch.manual_seed(3)
    b = batch()["data_samples"]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_seeded_mask_generator_fixes_each_images_mask():
    """With ``seed`` the mask depends on the seed and the image's index only, not on the global
    generator; different indices get different masks."""
    generator = TRANSFORMS.build(dict(type="SimMIMMaskGenerator", mask_patch_size=8, seed=5))
    img = np.zeros((64, 64, 3), np.uint8)
    torch.manual_seed(0)
    a = [generator(dict(img=img, sample_idx=i))["mask"] for i in range(4)]
    torch.manual_seed(1)
    b = [generator(dict(img=img, sample_idx=i))["mask"] for i in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len({tuple(m.flatten().tolist()) for m in a}) == 4
    other = TRANSFORMS.build(dict(type="SimMIMMaskGenerator", mask_patch_size=8, seed=6))
    assert not torch.equal(other(dict(img=img, sample_idx=0))["mask"], a[0])
    with pytest.raises(KeyError, match="sample_idx"):
        generator(dict(img=img))
    with pytest.raises(ValueError, match="seed"):
        TRANSFORMS.build(dict(type="SimMIMMaskGenerator", seed=-1))


def test_reconstruction_metric_is_the_mean_of_per_image_losses():
    from mmengine.registry import METRICS

    model = build(norm_target_window=7).eval()
    torch.manual_seed(0)
    raw = batch(n=3, hw=(64, 64))
    metric = METRICS.build(dict(type="SimMIMReconstructionMetric"))
    with torch.no_grad():
        metric.process(raw, model.test_step(raw))
        data = model.data_preprocessor(raw, False)
        rec = model(**data, mode="tensor")
        expected = [simmim_loss(x[None], r[None], m[None], 4, 7)
                    for x, r, m in zip(data["inputs"], rec, data["data_samples"])]
    value = metric.evaluate(3)["simmim/reconstruction_l1"]
    assert abs(value - float(torch.stack(expected).mean())) < 1e-6
    assert len({round(float(e), 6) for e in expected}) == 3  # really per image


def test_mask_generator_refuses_images_off_the_block_grid():
    with pytest.raises(ValueError, match="multiple of mask_patch_size 32"):
        TRANSFORMS.build(dict(type="SimMIMMaskGenerator"))(dict(img=np.zeros((64, 50, 3), np.uint8)))
    with pytest.raises(ValueError, match="mask_ratio"):
        TRANSFORMS.build(dict(type="SimMIMMaskGenerator", mask_ratio=2.0))


def test_modes_and_equality_with_the_pure_torch_model():
    model = build(norm_target_window=7).eval()
    torch.manual_seed(0)
    data = model.data_preprocessor(batch(), False)
    core = SimMIM(dict(SHALLOW), norm_target_window=7).eval()
    core.load_state_dict(model.state_dict(), strict=True)  # the same keys
    mask = torch.stack(data["data_samples"])
    with torch.no_grad():
        rec = model(**data, mode="tensor")
        loss = model(**data, mode="loss")["loss"]
        preds = model(**data, mode="predict")
        expected = core(data["inputs"], mask)
        assert torch.equal(rec, expected)
        assert torch.equal(loss, core.loss(data["inputs"], expected, mask))
    assert len(preds) == 2 and torch.equal(preds[1]["reconstruction"], rec[1])
    # normalised with the ImageNet statistics after BGR -> RGB
    assert abs(data["inputs"].mean().item()) < 0.5
    with pytest.raises(ValueError, match="data_samples"):
        model(data["inputs"], mode="loss")
    with pytest.raises(ValueError, match="mode"):
        model(**data, mode="features")


def test_train_step_decreases_the_loss():
    model = build().train()
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=2e-3))
    torch.manual_seed(0)
    data = batch(n=4, hw=(64, 64))
    # smooth images, reconstructable from their neighbourhood
    data["inputs"] = [torch.nn.functional.interpolate(i[None].float(), scale_factor=1 / 8,
                                                      mode="area").repeat_interleave(8, 2)
                      .repeat_interleave(8, 3)[0].to(torch.uint8) for i in data["inputs"]]
    losses = [model.train_step(data, wrapper)["loss"].item() for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_random_resized_crop_gives_the_size_and_repeats_with_the_seed():
    crop = TRANSFORMS.build(dict(type="SimMIMRandomResizedCrop", size=(64, 96)))
    img = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    torch.manual_seed(1)
    a = crop(dict(img=img.copy()))["img"]
    torch.manual_seed(1)
    b = crop(dict(img=img.copy()))["img"]
    assert a.shape == (64, 96, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    with pytest.raises(ValueError, match="scale"):
        TRANSFORMS.build(dict(type="SimMIMRandomResizedCrop", size=32, scale=(0.5, 2.0)))


CONFIG = ROOT / "configs/simmim/simmim_swinv2-t-p4-w6_100e_image-folder-192px.py"


def test_pretraining_config_trains_through_tools_train(tmp_path):
    """The SimMIM config, shrunk to a tiny model on six generated images of different sizes, runs
    two epochs through tools/train.py and saves a checkpoint with the model's keys."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (72 + 8 * i, 100, 3), dtype=np.uint8)).save(
            images / f"{i}.png")
    work = tmp_path / "work"
    model_options = ["model.backbone.arch=None", "model.backbone.embed_dims=16",
                     "model.backbone.depths=[1,1,1,1]", "model.backbone.num_heads=[1,1,2,2]",
                     "model.norm_target_window=7"]
    options = [f"train_dataloader.dataset.data_root={images}", "train_dataloader.batch_size=2",
               "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
               "train_dataloader.dataset.pipeline.1.size=64", *model_options,
               "train_cfg.max_epochs=2", "default_hooks.logger.interval=1"]
    proc = subprocess.run([sys.executable, "tools/train.py", str(CONFIG), "--work-dir", str(work),
                           "--cfg-options", *options], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "loss:" in proc.stdout + proc.stderr
    state = load_weights_only(str(work / "epoch_2.pth"), map_location="cpu")["state_dict"]
    assert {"backbone.mask_token", "decoder.0.weight", "backbone.norm3.weight"} <= set(state)

    # tools/test.py: the held-out loss with the config's seeded masks, the same on every run
    test_options = [f"test_dataloader.dataset.data_root={images}", "test_dataloader.batch_size=4",
                    "test_dataloader.num_workers=0", "test_dataloader.dataset.pipeline.1.scale=[64,64]",
                    *model_options]
    values = []
    for run in range(2):
        proc = subprocess.run([sys.executable, "tools/test.py", str(CONFIG), str(work / "epoch_2.pth"),
                               "--work-dir", str(tmp_path / f"test{run}"), "--cfg-options",
                               *test_options], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        found = re.search(r"simmim/reconstruction_l1: ([0-9.]+)", proc.stdout + proc.stderr)
        assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
        values.append(float(found.group(1)))
    assert values[0] == values[1] and 0.0 < values[0] < 10.0


def test_tools_test_refuses_a_config_without_evaluation(tmp_path):
    toy = ROOT / "configs/simmim/simmim_swinv2-compact_toy-shapes.py"
    proc = subprocess.run([sys.executable, "tools/test.py", str(toy), str(tmp_path / "x.pth"),
                           "--work-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "has no test_dataloader, test_cfg, test_evaluator" in proc.stderr, proc.stderr[-2000:]
