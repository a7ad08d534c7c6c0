"""The toy dataset, and short real trainings through tools/train.py (fresh, then resumed) followed by
tools/test.py on the saved checkpoint, for one detection and one segmentation config; a Swin V1
segmentation config fine-tuned from a pretrained backbone file and tested the same way; the demo's
end-to-end plumbing with a handful of iterations."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools import mask as mask_utils

from swinv2_backbone import SwinBackbone
from swinv2_backbone.compat import load_weights_only
from swinv2_backbone.openmmlab.toy_data import (CLASS_HUES, CLASSES, HUE_SPREAD, SEG_CLASSES,
                                                write_toy_dataset)

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = ROOT / "configs/demo/mask-rcnn_swinv2-compact_fpn_toy-shapes.py"
SEG_CONFIG = ROOT / "configs/demo/upernet_swinv2-compact_toy-shapes.py"
V1_SEG_CONFIG = ROOT / "configs/demo/upernet_swin-compact_toy-shapes.py"


# ----------------------------------------------------------------------------- toy data
def _files(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_toy_dataset_is_deterministic(tmp_path):
    a = write_toy_dataset(tmp_path / "a", num_train=5, num_val=3, image_size=64)
    b = write_toy_dataset(tmp_path / "b", num_train=5, num_val=3, image_size=64)
    files = _files(a.root)
    assert len(files) == 2 * (5 + 3) + 2
    assert files == _files(b.root)
    c = write_toy_dataset(tmp_path / "c", num_train=5, num_val=3, image_size=64, seed=1)
    assert _files(c.root) != files
    # a split does not depend on the other split's size
    d = write_toy_dataset(tmp_path / "d", num_train=2, num_val=3, image_size=64)
    assert _files(d.root)["annotations/instances_val.json"] == files["annotations/instances_val.json"]


def test_toy_coco_polygons_agree_with_label_maps_and_images(tmp_path):
    data = write_toy_dataset(tmp_path, num_train=2, num_val=12, image_size=96, max_instances=4)
    coco = json.loads(data.coco_json("val").read_text())
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert len(coco["images"]) == 12 and len(coco["annotations"]) >= 12
    anns_by_image: Dict[int, List[dict]] = {}
    for ann in coco["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for info in coco["images"]:
        h, w = info["height"], info["width"]
        labels = cv2.imread(str(data.label_dir("val") / info["file_name"]), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(data.image_dir("val") / info["file_name"]))
        assert labels.shape == (h, w) and labels.dtype == np.uint8 and image.shape == (h, w, 3)
        assert set(np.unique(labels)) <= set(range(len(SEG_CLASSES)))
        expected = np.zeros((h, w), np.uint8)
        for ann in anns_by_image[info["id"]]:
            x, y, bw, bh = ann["bbox"]
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw > 5 and bh > 5
            rle = mask_utils.frPyObjects(ann["segmentation"], h, w)
            mask = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
            assert abs(mask.sum() - ann["area"]) < 0.1 * ann["area"] + 20
            assert not expected[mask].any(), "instances overlap"
            expected[mask] = ann["category_id"]
        # the label map is exactly what COCO evaluation makes of the polygons
        assert np.array_equal(expected, labels)
        # the shapes are visible: inside and outside pixels differ in colour
        if (labels > 0).any():
            inside = image[labels > 0].mean(axis=0)
            outside = image[labels == 0].mean(axis=0)
            assert np.abs(inside - outside).max() > 10


def test_toy_shape_colours_come_from_their_class_hue_family(tmp_path):
    data = write_toy_dataset(tmp_path, num_train=1, num_val=20, image_size=96)
    seen = set()
    for name in sorted(p.name for p in data.image_dir("val").iterdir()):
        image = cv2.imread(str(data.image_dir("val") / name))  # BGR
        labels = cv2.imread(str(data.label_dir("val") / name), cv2.IMREAD_UNCHANGED)
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV_FULL).astype(np.float64)  # hue 0..255
        for value in set(np.unique(labels)) - {0}:
            # erode: the noisy border pixels mix with the background
            inside = cv2.erode((labels == value).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            if not inside.any():
                continue
            angles = hsv[inside][:, 0] / 256.0 * 2 * np.pi  # circular mean of the hue
            hue = np.degrees(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())) % 360
            centre = 2 * CLASS_HUES[value - 1]  # OpenCV half-degrees -> degrees
            distance = min(abs(hue - centre), 360 - abs(hue - centre))
            assert distance <= 2 * HUE_SPREAD + 6, (name, value, hue)
            seen.add(int(value))
    assert seen == {1, 2, 3}


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_train=0), "num_train must be an int >= 1"),
    (dict(image_size=16), "image_size must be an int >= 32"),
    (dict(max_instances=True), "max_instances must be an int >= 1"),
])
def test_toy_dataset_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_toy_dataset(tmp_path, **kwargs)


# ----------------------------------------------------------------------------- tools
def _run(args: List[str], cwd: Path, timeout: float = 600) -> str:
    """Run a tool with this interpreter (stopped after ``timeout`` seconds); fail with its output
    if it fails."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ), timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc.stdout + proc.stderr


def _small_config(tmp_path: Path, base: Path, data_root: Path, name: str, batch_size: int = 2) -> Path:
    """A config deriving from a demo config: the tmp dataset, batch ``batch_size``, no worker
    processes."""
    root = f"{data_root}/"
    loader = (f"dict(batch_size={batch_size}, num_workers=0, persistent_workers=False, "
              f"dataset=dict(data_root={root!r}))")
    lines = [
        f"_base_ = {str(base)!r}",
        f"train_dataloader = {loader}",
        f"val_dataloader = {loader}",
        f"test_dataloader = {loader}",
        "default_hooks = dict(logger=dict(interval=1))",
    ]
    if "ann_file" in Config.fromfile(str(base)).get("val_evaluator", {}):  # COCO
        ann = f"{root}annotations/instances_val.json"
        lines += [f"val_evaluator = dict(ann_file={ann!r})", f"test_evaluator = dict(ann_file={ann!r})"]
    path = tmp_path / f"{name}.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def _test_metrics(work_dir: Path) -> dict:
    """Metrics that tools/test.py logged (mmengine writes them to <work_dir>/<stamp>/<stamp>.json)."""
    logs = sorted(work_dir.glob("*/*.json"))
    assert logs, f"no json log under {work_dir}"
    return json.loads(logs[-1].read_text().strip().splitlines()[-1])


def _plain_weights_only_load_fails(checkpoint: Path) -> bool:
    """Whether torch.load(weights_only=True) refuses the checkpoint without this package imported
    (so tools that load it must have registered the safe globals themselves)."""
    code = f"import torch; torch.load({str(checkpoint)!r}, weights_only=True)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return proc.returncode != 0 and "Weights only load failed" in proc.stderr


@pytest.mark.slow
@pytest.mark.oldest  # mmengine's own checkpoints under each torch's torch.load defaults
@pytest.mark.parametrize("task, base, metric_keys", [
    ("det", DET_CONFIG, ("coco/bbox_mAP", "coco/segm_mAP", "coco/bbox_mAP_50")),
    ("seg", SEG_CONFIG, ("mIoU", "aAcc", "mAcc")),
])
def test_train_resume_then_test_the_checkpoint(tmp_path, task, base, metric_keys):
    data = write_toy_dataset(tmp_path / "data", num_train=6, num_val=4, image_size=128)
    config = _small_config(tmp_path, base, data.root, f"small_{task}")
    work = tmp_path / "work"
    first = _run(["tools/train.py", str(config), "--work-dir", str(work),
                  "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2"], ROOT)
    assert "Iter(train) [2/2]" in first and "Iter(val)" in first
    ckpt2 = work / "iter_2.pth"
    assert ckpt2.is_file() and (work / "last_checkpoint").read_text().strip().endswith("iter_2.pth")
    # read now: the demo configs keep one checkpoint, so iter_3 replaces iter_2
    resumed = load_weights_only(ckpt2, map_location="cpu")  # safe globals: imported

    # resume (weights-only loading of the whole training state) and train one more iteration
    second = _run(["tools/train.py", str(config), "--work-dir", str(work), "--resume",
                   "--cfg-options", "train_cfg.max_iters=3", "train_cfg.val_interval=3"], ROOT)
    assert "resumed" in second.lower() and "Iter(train) [3/3]" in second
    assert "Iter(train) [1/3]" not in second and "Iter(train) [2/3]" not in second
    ckpt3 = work / "iter_3.pth"
    state = load_weights_only(ckpt3, map_location="cpu")
    assert state["meta"]["iter"] == 3 and resumed["meta"]["iter"] == 2
    assert any(not torch.equal(state["state_dict"][k], resumed["state_dict"][k])
               for k in resumed["state_dict"]), "the resumed iteration did not update weights"
    assert _plain_weights_only_load_fails(ckpt3)

    # test after train: a fresh process loads the checkpoint (weights only) and evaluates it
    test_dir = tmp_path / "test"
    _run(["tools/test.py", str(config), str(ckpt3), "--work-dir", str(test_dir)], ROOT)
    metrics = _test_metrics(test_dir)
    for key in metric_keys:
        assert isinstance(metrics[key], float), (key, metrics)
        assert 0.0 <= metrics[key] <= (1.0 if task == "det" else 100.0)


@pytest.mark.slow
def test_swin_v1_config_fine_tunes_from_a_pretrained_backbone_then_tests(tmp_path):
    """The Swin V1 UPerNet demo config through the tools: its backbone loads a V1 checkpoint
    (`init_cfg=dict(type='Pretrained', ...)`, as the V1 configs load the official files), trains
    two iterations and is evaluated from the saved checkpoint in a fresh process."""
    from swinv2_backbone.testing import randomize_

    data = write_toy_dataset(tmp_path / "data", num_train=4, num_val=2, image_size=128)
    config = _small_config(tmp_path, V1_SEG_CONFIG, data.root, "small_v1_seg")
    torch.manual_seed(0)
    pretrained = randomize_(SwinBackbone(arch=None, embed_dims=32, depths=(1, 1, 2, 1),
                                         num_heads=(1, 2, 4, 8), window_size=7), seed=3)
    torch.save(pretrained.state_dict(), tmp_path / "v1_backbone.pth")
    work = tmp_path / "work"
    out = _run(["tools/train.py", str(config), "--work-dir", str(work), "--cfg-options",
                "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                "model.backbone.init_cfg.type=Pretrained",
                f"model.backbone.init_cfg.checkpoint={tmp_path / 'v1_backbone.pth'}"], ROOT)
    assert "Iter(train) [2/2]" in out and "Iter(val)" in out
    assert f"load_pretrained: {tmp_path / 'v1_backbone.pth'}: native checkpoint, Swin V1" in out
    trained = load_weights_only(work / "iter_2.pth", map_location="cpu")["state_dict"]
    # Two warm-up steps (lr 1e-5) move AdamW weights by ~1e-5 each: the backbone still holds the
    # pretrained tensors, which a fresh initialisation would be far from.
    for name, tensor in pretrained.state_dict().items():
        assert (trained[f"backbone.{name}"] - tensor).abs().max() < 1e-3, name
    assert any(k.endswith("relative_position_bias_table") for k in trained)

    test_dir = tmp_path / "test"
    _run(["tools/test.py", str(config), str(work / "iter_2.pth"), "--work-dir", str(test_dir)], ROOT)
    metrics = _test_metrics(test_dir)
    for key in ("mIoU", "aAcc", "mAcc"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics)


@pytest.mark.slow
def test_demo_runs_end_to_end_with_a_few_iterations(tmp_path):
    work = tmp_path / "demo"
    out = _run(["tools/demo.py", "--work-dir", str(work), "--num-train", "6", "--num-val", "3",
                "--det-iters", "2", "--seg-iters", "2", "--num-pictures", "2",
                "--min-bbox-map", "0", "--min-miou", "0"], ROOT)
    for phase in range(1, 7):
        assert f"[demo {phase}/6]" in out
    metrics = json.loads((work / "metrics.json").read_text())
    for key in ("bbox_mAP", "segm_mAP", "mIoU", "aAcc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["targets"]["met"] is True  # targets 0 in this run
    assert metrics["iterations"] == {"det": 2, "seg": 2}
    assert set(metrics["times_s"]) == {"data", "det_train", "det_test", "seg_train", "seg_test",
                                       "pictures", "total"}
    for task in ("det", "seg"):
        pictures = [Path(p) for p in metrics["pictures"][task]]
        assert len(pictures) == 2 and all(p.is_file() for p in pictures)
        image = cv2.imread(str(pictures[0]))
        assert image.shape[1] == 2 * 128  # ground truth | prediction side by side
