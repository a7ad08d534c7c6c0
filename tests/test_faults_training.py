"""Faults around training through tools/train.py with our configs: SIGKILL at random moments (some
during a checkpoint write) and resume, a full disk during a save, a corrupt newest checkpoint, a
malicious checkpoint given to --resume.

The trainings are the SimMIM config (configs/simmim/) shrunk to a tiny backbone, 32-px crops of
eight generated images and a checkpoint every 2 iterations; they run on one thread."""
from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from swinv2_backbone.checkpoint import atomic
from swinv2_backbone.compat import load_weights_only
from swinv2_backbone.openmmlab.resume import ResumeError, checkpoint_problem, resolve_resume
from kit import RunsCode, load_tool, one_thread, run_tool

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "simmim" / "simmim_swinv2-compact_toy-shapes.py"


TRAIN = load_tool("train")


def write_config(root: Path, max_iters: int, max_keep_ckpts: int) -> Path:
    """Eight random 40-px PNGs and a config inheriting the SimMIM toy config, shrunk."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    config = root / "tiny_simmim.py"
    config.write_text(f"""_base_ = [{str(BASE)!r}]
image_size = 32
max_iters = {max_iters}
model = dict(backbone=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='SimMIMRandomResizedCrop', size=image_size, scale=(0.67, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SimMIMMaskGenerator', mask_patch_size=16, model_patch_size=4, mask_ratio=0.5),
    dict(type='PackSimMIMInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(data_root={str(images)!r}, pipeline=train_pipeline))
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=2),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=2, end=max_iters),
]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2, max_keep_ckpts={max_keep_ckpts}))
""")
    return config


def train(config: Path, work: Path, name: str, *extra: str,
          capsys: pytest.CaptureFixture) -> Tuple[int, str]:
    """tools/train.py's main in this process (:func:`kit.run_tool`); returns (status, stdout +
    stderr)."""
    status, out, err = run_tool(capsys, TRAIN, config, "--work-dir", work, *extra,
                                "--cfg-options", f"experiment_name={name}")
    return status, out + err


def weights(path: Path) -> Dict[str, torch.Tensor]:
    return load_weights_only(str(path), map_location="cpu")["state_dict"]


# ------------------------------------------------------------------------------- kill and resume

@pytest.mark.slow
def test_killed_training_resumes_from_the_last_complete_checkpoint_to_the_same_weights(tmp_path):
    """22 SIGKILLs (7 during a checkpoint write), each followed by --resume, then a run to the end:
    every resume starts from the checkpoint last_checkpoint named, or without it (a kill between a
    checkpoint's rename and the pointer's first write) the newest checkpoint file, never from a
    half-written file,
    no kill ever leaves a checkpoint-named file that does not read back, and the final model and
    optimizer state equal an uninterrupted run's bit for bit (CPU, one thread, no dropout: the run
    is deterministic, and mmengine's resume replays the data order and augmentation)."""
    config = write_config(tmp_path, max_iters=48, max_keep_ckpts=2)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_resume_driver.py"), str(config),
                           str(tmp_path), "--kills", "22", "--during-write", "7", "--final-iter", "48",
                           "--seed", "0"], capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    rounds: List[Dict[str, Any]] = report["rounds"]
    killed = [r for r in rounds if r["killed"]]
    mid_write = [r for r in killed if r["during_write"] and r["partial_at_kill"]]
    assert report["reference_status"] == 0 and report["final"]["status"] == 0, report
    assert len(killed) >= 20, rounds
    assert len(mid_write) >= 5, rounds  # killed with the new checkpoint half-written
    for r in rounds + [report["final"]]:
        assert r.get("broken_after", []) == [], r
        killed_before_choosing = r["resumed_from"] is None and r.get("after_iterations") == 0 \
            and not r.get("during_write")  # a kill during start-up, before --resume chose
        newest = r["pointer_before"] or (r["checkpoints_before"] or ["scratch"])[-1]
        assert killed_before_choosing or r["resumed_from"] == newest, r
    assert len({r["pointer_before"] for r in rounds}) >= 5, rounds  # the training made progress
    assert report["final_tensors_compared"] > 300 and report["final_equal"] is True
    assert report["leftover_partial"] == []


# ------------------------------------------------------------------------------------- full disk

def _failing_write(after_bytes: int, fail_on: str):
    """A ``_write_and_sync`` that writes ``after_bytes`` of the file whose temporary name contains
    ``fail_on`` and then fails as a full disk does; other files are written normally."""
    real = atomic._write_and_sync

    def write(fd: int, data: bytes) -> None:
        if fail_on in os.readlink(f"/proc/self/fd/{fd}"):
            os.write(fd, data[:after_bytes])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    return write


@pytest.mark.slow
def test_full_disk_during_a_save_names_the_file_and_keeps_the_previous_checkpoint(
        tmp_path, capsys, monkeypatch):
    """The second save (iter_4) fails part-way with ENOSPC, simulated by the write function (no
    small file system can be mounted here without root); max_keep_ckpts=1, where mmengine's own hook
    would already have deleted iter_2."""
    config = write_config(tmp_path, max_iters=6, max_keep_ckpts=1)
    work = tmp_path / "work"
    monkeypatch.setattr(atomic, "_write_and_sync", _failing_write(1 << 20, ".iter_4.pth."))
    status, text = train(config, work, "disk1", capsys=capsys)
    assert status == 2
    line = [t for t in text.splitlines() if t.startswith("error: ")][-1]
    assert f"cannot write {work / 'iter_4.pth'}: No space left on device (" in line
    assert f"MiB free on the file system of {work}, " in line and "MiB to write)" in line
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_2.pth"]
    assert checkpoint_problem(str(work / "iter_2.pth")) is None
    assert (work / "last_checkpoint").read_text() == str(work / "iter_2.pth")
    assert list(work.glob(".*.partial")) == []
    monkeypatch.undo()
    status, text = train(config, work, "disk2", "--resume", capsys=capsys)
    assert status == 0, text
    assert f"--resume: resuming from {work / 'iter_2.pth'}" in text
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_6.pth"]


# ------------------------------------------------------------------------- corrupt newest checkpoint

def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "zeroed": bytes(len(data)),
                      "empty": b""}[how])


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A finished 4-iteration run with iter_2.pth and iter_4.pth (pristine copies to restore)."""
    root = tmp_path_factory.mktemp("corrupt")
    config = write_config(root, max_iters=4, max_keep_ckpts=2)
    work = root / "work"
    with one_thread():
        assert TRAIN.main([str(config), "--work-dir", str(work),
                           "--cfg-options", "experiment_name=corrupt0"]) == 0
    pristine = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    return config, work, pristine


def _restore(work: Path, pristine: Dict[str, bytes]) -> None:
    for name, data in pristine.items():
        (work / name).write_bytes(data)


@pytest.mark.parametrize("how, message", [
    ("truncated", "the file is truncated or corrupt"),
    ("zeroed", "the file is truncated or corrupt"),
    ("empty", "the file is empty"),
])
def test_corrupt_newest_checkpoint_stops_with_the_way_on_or_falls_back(two_checkpoints, how,
                                                                        message):
    _, work, pristine = two_checkpoints
    _restore(work, pristine)
    newest, previous = work / "iter_4.pth", work / "iter_2.pth"
    _corrupt(newest, how)
    with pytest.raises(ResumeError) as info:
        resolve_resume(str(work), "auto")
    text = str(info.value)
    assert text.startswith(f"cannot resume: cannot read {newest}: {message}") or \
        text.startswith(f"cannot resume: cannot read {newest}") and message in text, text
    assert f"the newest complete checkpoint is {previous}: resume from it with " \
           f"--resume-fallback (or --resume {previous})" in text
    assert resolve_resume(str(work), "auto", fallback=True) == str(previous)
    with pytest.raises(ResumeError, match=rf"cannot resume: cannot read {newest}"):
        resolve_resume(str(work), str(newest))


def test_what_resume_takes_without_a_usable_pointer(two_checkpoints, tmp_path, caplog):
    _, work, pristine = two_checkpoints
    _restore(work, pristine)
    pointer = work / "last_checkpoint"
    pointer.unlink()  # no pointer: the highest-numbered checkpoint
    assert resolve_resume(str(work), "auto") == str(work / "iter_4.pth")
    pointer.write_text("")  # an empty pointer (mmengine's own hook can leave one)
    with pytest.raises(ResumeError, match=rf"{pointer} is empty\. the newest complete checkpoint "
                                          rf"is {work / 'iter_4.pth'}"):
        resolve_resume(str(work), "auto")
    pointer.write_text(str(work / "iter_6.pth"))  # names a file that is gone
    with pytest.raises(ResumeError, match=r"checkpoint not found: .*iter_6\.pth"):
        resolve_resume(str(work), "auto")
    assert resolve_resume(str(work), "auto", fallback=True) == str(work / "iter_4.pth")
    empty = tmp_path / "fresh"
    assert resolve_resume(str(empty), "auto") is None  # nothing to resume: a fresh start, logged
    with pytest.raises(ResumeError, match="--resume-fallback works with automatic --resume"):
        resolve_resume(str(work), str(work / "iter_2.pth"), fallback=True)


def test_nothing_complete_left_is_never_a_silent_start_from_scratch(two_checkpoints):
    _, work, pristine = two_checkpoints
    _restore(work, pristine)
    for name in ("iter_2.pth", "iter_4.pth"):
        _corrupt(work / name, "zeroed")
    for fallback in (False, True):
        with pytest.raises(ResumeError, match=r"no complete checkpoint is left in .*train without "
                                              r"--resume"):
            resolve_resume(str(work), "auto", fallback=fallback)


@pytest.mark.slow
def test_train_tool_reports_a_corrupt_checkpoint_and_resumes_with_fallback(two_checkpoints, capsys):
    config, work, pristine = two_checkpoints
    _restore(work, pristine)
    _corrupt(work / "iter_4.pth", "truncated")
    status, text = train(config, work, "corrupt1", "--resume", capsys=capsys)
    assert status == 2 and f"error: cannot resume: cannot read {work / 'iter_4.pth'}" in text
    status, text = train(config, work, "corrupt2", "--resume", "--resume-fallback", capsys=capsys)
    assert status == 0, text
    assert (f"--resume-fallback: the newest checkpoint is unusable (cannot read {work / 'iter_4.pth'}"
            in text and f"resuming from the newest complete one, {work / 'iter_2.pth'}" in text)
    assert "resumed epoch: 0, iter: 2" in text  # mmengine continued from iteration 2
    redone = weights(work / "iter_4.pth")  # iterations 3-4 again give the lost checkpoint's weights
    lost = load_weights_only(io.BytesIO(pristine["iter_4.pth"]), map_location="cpu")["state_dict"]
    assert redone.keys() == lost.keys() and all(torch.equal(redone[k], lost[k]) for k in lost)


# ----------------------------------------------------------------------------- malicious --resume

def test_resume_refuses_a_malicious_checkpoint_before_mmengine_loads_it(two_checkpoints, tmp_path,
                                                                         capsys):
    """On torch < 2.6 mmengine's own torch.load would unpickle anything; --resume reads the file
    with the weights-only loader first."""
    config, work, pristine = two_checkpoints
    _restore(work, pristine)
    marker = tmp_path / "pwned"
    evil = work / "iter_4.pth"
    data = load_weights_only(str(evil))
    data["meta"]["payload"] = RunsCode(str(marker))
    torch.save(data, evil)
    status, text = train(config, work, "evil1", "--resume", capsys=capsys)
    assert status == 2
    assert (f"error: cannot resume: refusing to load {evil}: it references the Python object "
            "posix.system") in text
    status, text = train(config, work, "evil2", "--resume", str(evil), capsys=capsys)
    assert status == 2 and f"refusing to load {evil}" in text
    assert not marker.exists()


def test_train_tool_argument_checks(capsys):
    with pytest.raises(SystemExit):
        TRAIN.parse_args(["cfg.py", "--resume-fallback"])
    assert "--resume-fallback needs --resume" in capsys.readouterr().err
