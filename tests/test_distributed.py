"""Multi-process training on CPU: 2 gloo processes started by torchrun through tools/train.py
(``--launcher pytorch``) follow the same loss curve and reach the same weights as one process with
the same total batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch

from swinv2_backbone.openmmlab.toy_data import write_toy_dataset
from swinv2_backbone.compat import load_weights_only

ROOT = Path(__file__).resolve().parents[1]
SEG_CONFIG = ROOT / "configs/demo/upernet_swinv2-compact_toy-shapes.py"
ITERS = 4

# Records the loss of every iteration averaged over the processes (each process only sees the
# loss of its own share of the batch), written by rank 0 at the end of the run.
PROBE = '''
import json
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class LossProbeHook(Hook):
    def __init__(self, out_file):
        self.out_file = out_file
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        loss = outputs["loss"].detach().clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        self.losses.append(loss.item())

    def after_run(self, runner):
        if runner.rank == 0:
            with open(self.out_file, "w") as f:
                json.dump(dict(losses=self.losses, world_size=runner.world_size), f)
'''


def _config(tmp_path: Path, data_root: Path, batch_per_process: int, name: str) -> Path:
    """Deterministic training: no flips, fixed order, dropout and drop-path already 0 in the demo
    config, GroupNorm heads (no batch statistics), unweighted loss; no validation."""
    out = tmp_path / f"{name}.json"
    text = f"""
_base_ = {str(SEG_CONFIG)!r}
custom_imports = dict(imports=['swinv2_backbone', 'ddp_probe'], allow_failed_imports=False)
train_dataloader = dict(
    batch_size={batch_per_process}, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(data_root={str(data_root) + '/'!r}, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=False),
        dict(type='PackSegInputs'),
    ]))
train_cfg = dict(max_iters={ITERS}, val_interval={ITERS + 1})
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
custom_hooks = [dict(type='LossProbeHook', out_file={str(out)!r})]
# unweighted cross-entropy: with class weights mmseg divides by the batch's summed pixel weights,
# so the mean of per-process losses is not the loss of the whole batch (a real difference)
model = dict(
    decode_head=dict(loss_decode=dict(class_weight=None)),
    auxiliary_head=dict(loss_decode=dict(class_weight=None)))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={ITERS}))
"""
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: List[str], tmp_path: Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # two processes share the CPU cores; same math either way
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_total_batch(tmp_path):
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    data = write_toy_dataset(tmp_path / "data", num_train=2 * ITERS, num_val=1, image_size=128)

    single = _config(tmp_path, data.root, batch_per_process=2, name="single")
    _run(["tools/train.py", str(single), "--work-dir", str(tmp_path / "w1")], tmp_path)

    double = _config(tmp_path, data.root, batch_per_process=1, name="double")
    out = _run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port()), "tools/train.py", str(double),
                "--work-dir", str(tmp_path / "w2"), "--launcher", "pytorch"], tmp_path)
    assert "Distributed training is not used" not in out

    one = json.loads((tmp_path / "single.json").read_text())
    two = json.loads((tmp_path / "double.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert len(one["losses"]) == len(two["losses"]) == ITERS
    # the model learns (the curve is not flat), and both runs follow the same curve
    assert one["losses"][-1] < one["losses"][0]
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4, abs=1e-5)

    w1 = load_weights_only(tmp_path / "w1" / f"iter_{ITERS}.pth", map_location="cpu")
    w2 = load_weights_only(tmp_path / "w2" / f"iter_{ITERS}.pth", map_location="cpu")
    assert w1["state_dict"].keys() == w2["state_dict"].keys()
    for key, value in w1["state_dict"].items():
        torch.testing.assert_close(w2["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
