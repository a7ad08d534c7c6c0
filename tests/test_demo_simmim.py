"""tools/demo_simmim.py: the SimMIM demo config pre-trains the compact UPerNet's own backbone, the
backbone-only checkpoint loads into the UPerNet's backbone, the curve helper, and a smoke run of the
whole command with a few iterations (outputs, both curves)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

import swinv2_backbone  # noqa: F401  (registers the models)
from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.openmmlab.simmim_pictures import GAP, LABEL_HEIGHT

from kit import load_tool

ROOT = Path(__file__).resolve().parents[1]
DEMO_SIMMIM = load_tool("demo_simmim")
MIM_CONFIG, SEG_CONFIG = DEMO_SIMMIM.MIM_CONFIG, DEMO_SIMMIM.SEG_CONFIG
compare, first_reaching = DEMO_SIMMIM.compare, DEMO_SIMMIM.first_reaching

#: Arguments the UPerNet's backbone sets for dense prediction that SimMIM sets its own way.
DENSE_ONLY = {"type", "out_indices", "init_cfg"}


def test_simmim_config_pretrains_the_upernets_backbone():
    seg = dict(Config.fromfile(str(SEG_CONFIG)).model.backbone)
    mim = dict(Config.fromfile(str(MIM_CONFIG)).model.backbone)
    assert {k: v for k, v in seg.items() if k not in DENSE_ONLY} == mim


def test_simmim_checkpoint_loads_into_the_upernets_backbone(tmp_path):
    mim_cfg = Config.fromfile(str(MIM_CONFIG))
    torch.manual_seed(0)
    model = MODELS.build(mim_cfg.model)
    simmim_ckpt = tmp_path / "iter_1.pth"
    save_checkpoint(dict(meta=dict(iter=1), state_dict=weights_to_cpu(model.state_dict())),
                    str(simmim_ckpt))
    seg = dict(Config.fromfile(str(SEG_CONFIG)).model.backbone)
    seg.pop("type")
    backbone = Swinv2Backbone(**seg, init_cfg=dict(type="Pretrained", checkpoint=str(simmim_ckpt)))
    backbone.init_weights()
    pretrained = model.state_dict()
    taken = [name for name in backbone.state_dict() if f"backbone.{name}" in pretrained]
    assert len(taken) >= 100 and backbone.mask_token is None
    for name in taken:
        assert torch.equal(backbone.state_dict()[name], pretrained[f"backbone.{name}"]), name


def test_compare_says_when_there_is_nothing_to_reach():
    flat = [(100, 0.236), (200, 0.236), (300, 0.236)]
    assert "no comparison" in compare(flat, flat)
    rising = [(100, 0.3), (200, 0.6), (300, 0.8)]
    assert compare(rising, rising) == "reaches it after 300 of 300 iterations"
    assert compare(flat, rising) == "does not reach it"


def test_first_reaching():
    curve = [(50, 0.4), (100, 0.8), (150, 0.79), (200, 0.9)]
    assert first_reaching(curve, 0.8) == 100
    assert first_reaching(curve, 0.85) == 200
    assert first_reaching(curve, 0.95) is None


@pytest.mark.slow
def test_demo_simmim_runs_end_to_end_with_a_few_iterations(tmp_path):
    work = tmp_path / "demo_simmim"
    proc = subprocess.run([sys.executable, "tools/demo_simmim.py", "--work-dir", str(work),
                           "--num-train", "6", "--num-val", "3", "--mim-iters", "2",
                           "--seg-iters", "2", "--val-interval", "1", "--seeds", "0", "3",
                           "--num-pictures", "2"],
                          cwd=ROOT, capture_output=True, text=True, env=dict(os.environ),
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    for phase in range(1, 9):  # data, pre-training, pictures, 2 seeds x 2 runs, metrics
        assert f"[demo_simmim {phase}/8]" in out
    assert out.count("load_pretrained") == 2  # each fine-tuning from SimMIM loaded the backbone
    metrics = json.loads((work / "metrics.json").read_text())
    for name in ("simmim", "scratch"):
        assert set(metrics["curves"][name]) == {"0", "3"}
        for seed, curve in metrics["curves"][name].items():
            assert [it for it, _ in curve] == [1, 2]
            assert all(0.0 <= miou <= 1.0 for _, miou in curve)
            assert metrics["final_mIoU"][name][seed] == curve[-1][1]
    assert set(metrics["simmim_reaches_scratch_final_at"]) == {"0", "3"}
    assert metrics["iterations"] == {"simmim": 2, "finetune": 2, "val_interval": 1}
    assert metrics["seeds"] == [0, 3]
    assert set(metrics["simmim_loss"]) == {"first", "last", "window"}
    assert Path(metrics["checkpoints"]["simmim"]).is_file()
    pictures = [Path(p) for p in metrics["pictures"]]
    assert len(pictures) == 2 and all(p.is_file() for p in pictures)
    assert cv2.imread(str(pictures[0])).shape == (128 + LABEL_HEIGHT, 3 * 128 + 2 * GAP, 3)
