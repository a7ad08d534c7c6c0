"""Fault injection for tests/test_faults_training.py: train through tools/train.py, SIGKILL the run at
seeded random moments (some of them while a checkpoint is being written) and resume it with
``--resume`` until it finishes; train an uninterrupted reference beside it; write a JSON report.

    python tests/kill_resume_driver.py CONFIG ROOT --kills 24 --during-write 8 --seed 0

Everything is imported once here and every training runs in a ``fork()`` of this process, so a run
starts in a fraction of a second instead of the several seconds an interpreter with torch, mmengine
and the plugin takes; this process runs no torch operation itself (a fork then inherits no thread
pool), and every run uses one thread. Two of mmengine's pure but slow steps are computed once per
process instead of at every call, to keep the many short runs short: the environment report
(``collect_env``, which starts compilers) and yapf's formatting of the config text, which mmengine
repeats for the log, the config dump and every checkpoint's ``meta`` (memoised on its input; the
text written is the same). For the kills during a write, the child's
``write_atomic`` writes half of the checkpoint, sleeps ``SLOW_WRITE_S`` and writes the rest: the
driver kills it at a random moment of that window, after it has seen the temporary file appear.

After every kill the driver checks what a crash must never leave: a file under a checkpoint name
(``iter_N.pth``) that does not read back complete, or a ``last_checkpoint`` naming one. The report
lists per round what ``last_checkpoint`` named before it and the checkpoint files there were, whether a temporary file existed
at the kill, and the checkpoint the next run said it resumed from.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swinv2_backbone.checkpoint import atomic  # noqa: E402
from swinv2_backbone.compat import load_weights_only  # noqa: E402
from swinv2_backbone.openmmlab.resume import CHECKPOINT_NAME, checkpoint_problem  # noqa: E402
from kit import load_tool  # noqa: E402

#: How long a slowed checkpoint write pauses half-way (the window the during-write kills aim at).
SLOW_WRITE_S = 0.4


TRAIN = load_tool("train")
import mmengine.config.config as mm_config  # noqa: E402
import mmengine.runner.runner as mm_runner  # noqa: E402

# imported before forking: the config's custom_imports and what mmengine imports on first use
for _name in ("matplotlib.pyplot", "mmcv.transforms", "torch._dynamo", "torchvision"):
    importlib.import_module(_name)

_ENVIRONMENT = mm_runner.collect_env()
mm_runner.collect_env = lambda: dict(_ENVIRONMENT)
_FORMATTED: Dict[str, Any] = {}
_format_code = mm_config.FormatCode


def _memoised_format_code(text: str, **kwargs: Any) -> Any:
    key = text + repr(sorted(kwargs.items(), key=repr))
    if key not in _FORMATTED:
        _FORMATTED[key] = _format_code(text, **kwargs)
    return _FORMATTED[key]


mm_config.FormatCode = _memoised_format_code


def _slow_write(fd: int, data: bytes) -> None:
    half = len(data) // 2
    os.write(fd, data[:half])
    time.sleep(SLOW_WRITE_S)
    view = memoryview(data)[half:]
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _child(config: str, work_dir: Path, log: Path, resume: bool, slow: bool) -> None:
    """Run tools/train.py's main in this (forked) process and exit with its status."""
    status = 3
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        torch.set_num_threads(1)
        if slow:
            atomic._write_and_sync = _slow_write
        argv = [config, "--work-dir", str(work_dir)] + (["--resume"] if resume else [])
        status = TRAIN.main(argv)
    except BaseException:  # report anything, then leave without running the parent's cleanup
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _spawn(config: str, work_dir: Path, log: Path, resume: bool, slow: bool) -> int:
    pid = os.fork()
    if pid == 0:
        _child(config, work_dir, log, resume, slow)
    return pid


def _partial_files(work_dir: Path, pid: Optional[int] = None) -> List[str]:
    """Temporary files of unfinished writes (of process ``pid`` only, if given)."""
    pattern = f".*.{pid}{atomic.PARTIAL_SUFFIX}" if pid else f".*{atomic.PARTIAL_SUFFIX}"
    return sorted(p.name for p in work_dir.glob(pattern)) if work_dir.is_dir() else []


def _pointer(work_dir: Path) -> Optional[str]:
    pointer = work_dir / "last_checkpoint"
    return pointer.read_text().strip() if pointer.is_file() else None


def _checkpoints(work_dir: Path) -> List[str]:
    """The checkpoint-named files, by iteration."""
    found = [p for p in work_dir.iterdir() if CHECKPOINT_NAME.match(p.name)] if work_dir.is_dir() else []
    return [str(p) for p in sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(2)))]


def _broken_checkpoints(work_dir: Path) -> List[str]:
    """Checkpoint-named files (and the pointer's target) that do not read back complete."""
    named = [str(p) for p in work_dir.iterdir() if CHECKPOINT_NAME.match(p.name)] if work_dir.is_dir() else []
    pointer = _pointer(work_dir)
    if pointer is not None:
        named.append(pointer)
    return sorted({p for p in named if checkpoint_problem(p)})


def _resumed_from(log: Path, offset: int) -> Optional[str]:
    text = log.read_text(errors="replace")[offset:]
    marker = "--resume: resuming from "
    found = [line.split(marker, 1)[1].strip() for line in text.splitlines() if marker in line]
    if "holds no checkpoint yet" in text:
        found.append("scratch")
    return found[0] if found else None


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _iterations_logged(log: Path, offset: int) -> int:
    if not log.exists():  # the child has not opened it yet
        return 0
    with open(log, "rb") as handle:
        handle.seek(offset)
        return handle.read().count(b"Iter(train) [")


def _kill_round(config: str, work: Path, log: Path, rng: random.Random, during_write: bool,
                max_startup: float) -> Dict[str, Any]:
    """One run killed: during a checkpoint write, during its start-up (a random moment of the first
    ``max_startup`` s), or a random fraction of an iteration after its 1st to 3rd logged
    iteration (checkpoints are saved right after an iteration's log line)."""
    before, files_before = _pointer(work), _checkpoints(work)
    offset = log.stat().st_size if log.exists() else 0
    pid = _spawn(config, work, log, resume=True, slow=during_write)
    start = time.monotonic()
    iterations = 0 if during_write else rng.randint(0, 3)
    if during_write:
        while not _partial_files(work, pid) and time.monotonic() - start < 60:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return dict(pointer_before=before, checkpoints_before=files_before, killed=False,
                            during_write=True, resumed_from=_resumed_from(log, offset))
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, SLOW_WRITE_S))
    elif iterations == 0:
        time.sleep(rng.uniform(0.0, max_startup))
    else:
        while _iterations_logged(log, offset) < iterations and time.monotonic() - start < 60:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
    partial_at_kill = _partial_files(work, pid)
    finished = os.waitpid(pid, os.WNOHANG)[0] != 0
    if not finished:
        os.kill(pid, signal.SIGKILL)
        _wait(pid)
    return dict(pointer_before=before, checkpoints_before=files_before, killed=not finished,
                during_write=during_write,
                after_iterations=iterations, partial_at_kill=partial_at_kill,
                seconds=round(time.monotonic() - start, 3),
                resumed_from=_resumed_from(log, offset), broken_after=_broken_checkpoints(work))


def _final_state(path: str) -> Dict[str, torch.Tensor]:
    data = load_weights_only(path, map_location="cpu")
    return {**{f"model.{k}": v for k, v in data["state_dict"].items()},
            **{f"optimizer.{i}.{k}": v for i, group in data["optimizer"]["state"].items()
               for k, v in group.items() if isinstance(v, torch.Tensor)}}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("root", type=Path)
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--during-write", type=int, default=8)
    parser.add_argument("--max-startup", type=float, default=0.5)
    parser.add_argument("--final-iter", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    reference, work = args.root / "reference", args.root / "killed"
    t0 = time.monotonic()
    ref_status = _wait(_spawn(args.config, reference, args.root / "reference.log", False, False))
    reference_s = time.monotonic() - t0
    modes = [True] * args.during_write + [False] * (args.kills - args.during_write)
    rng.shuffle(modes)
    log = args.root / "killed.log"
    rounds = [_kill_round(args.config, work, log, rng, mode, args.max_startup) for mode in modes]
    offset = log.stat().st_size if log.exists() else 0
    final_before, final_files = _pointer(work), _checkpoints(work)
    final_status = _wait(_spawn(args.config, work, log, True, False))
    final_resumed = _resumed_from(log, offset)
    name = f"iter_{args.final_iter}.pth"
    equal, compared = None, 0
    if ref_status == 0 and final_status == 0:
        ours, theirs = _final_state(str(work / name)), _final_state(str(reference / name))
        compared = len(theirs)
        equal = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    report = dict(reference_status=ref_status, reference_seconds=round(reference_s, 2),
                  rounds=rounds, final=dict(pointer_before=final_before, checkpoints_before=final_files,
                                            status=final_status, resumed_from=final_resumed),
                  final_tensors_compared=compared, final_equal=equal,
                  leftover_partial=_partial_files(work), seconds=round(time.monotonic() - t0, 2))
    (args.root / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
