"""Which checkpoint ``tools/train.py --resume`` continues from, checked before mmengine touches it.

mmengine's automatic resume reads ``last_checkpoint`` and loads the file it names: a truncated or
zeroed file then fails deep inside ``torch.load``, a missing ``last_checkpoint`` silently starts from
scratch, and on torch < 2.6 its ``torch.load`` unpickles anything. :func:`resolve_resume` instead

* takes the checkpoint ``last_checkpoint`` names (:class:`~.checkpointing.AtomicCheckpointHook`
  writes it only after that file is complete), or without it the highest-numbered
  ``iter_N.pth`` / ``epoch_N.pth`` of the work directory;
* reads it completely with the weights-only loader
  (:func:`swinv2_backbone.checkpoint.load_checkpoint_file`: nothing in it runs, on any torch);
* if that fails, stops with :class:`ResumeError` saying what is wrong with which file and which
  older checkpoint is complete, or, with ``fallback=True``, resumes from that one and logs why;
* starts from scratch only when the work directory holds no checkpoint at all, and says so.

What it chose is printed on stderr (the run's log file does not exist yet at that point).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..checkpoint import CheckpointError, load_checkpoint_file
from .checkpointing import POINTER

#: mmengine's default checkpoint names (``CheckpointHook.filename_tmpl``), by iteration or epoch.
CHECKPOINT_NAME = re.compile(r"^(iter|epoch)_(\d+)\.pth$")


class ResumeError(ValueError):
    """The checkpoint to resume from is missing, truncated, corrupt or unsafe, and no fallback
    was asked for (or none exists); the message names the file and the way on."""


def checkpoint_problem(path: str) -> Optional[str]:
    """``None`` if ``path`` is a complete mmengine training checkpoint that the weights-only loader
    reads, else what is wrong with it (naming the file).

    Args:
        path: The checkpoint file.
    """
    try:
        data = load_checkpoint_file(path).data
    except (CheckpointError, FileNotFoundError) as err:
        return str(err)
    meta = data.get("meta")
    if not isinstance(meta, dict) or "state_dict" not in data or "iter" not in meta:
        return (f"{path} is not an mmengine training checkpoint (it needs 'state_dict' and "
                f"'meta' with the iteration; top-level keys {sorted(map(str, data))})")
    return None


def _numbered(directory: Path) -> List[Tuple[str, int, str]]:
    """``(kind, number, path)`` of the mmengine checkpoints in ``directory``, newest last."""
    if not directory.is_dir():
        return []
    found = [(m.group(1), int(m.group(2)), str(directory / p.name))
             for p in directory.iterdir() if (m := CHECKPOINT_NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def _newest(work_dir: Path) -> Tuple[Optional[str], Optional[str]]:
    """The checkpoint to resume from and, if it cannot be named, why (an empty pointer)."""
    pointer = work_dir / POINTER
    if pointer.is_file():
        named = pointer.read_text(encoding="utf-8", errors="replace").strip()
        if not named:
            return None, f"{pointer} is empty"
        return named, None
    numbered = _numbered(work_dir)
    return (numbered[-1][2], None) if numbered else (None, None)


def _previous_complete(work_dir: Path, newest: Optional[str]) -> Optional[str]:
    """The highest-numbered complete checkpoint other than ``newest`` (same kind, older), in
    ``newest``'s directory and the work directory."""
    folders = {work_dir} | ({Path(newest).parent} if newest else set())
    candidates = sorted({c for folder in folders for c in _numbered(folder)}, reverse=True)
    match = CHECKPOINT_NAME.match(Path(newest).name) if newest else None
    for kind, number, path in candidates:
        if match and (kind != match.group(1) or number >= int(match.group(2))):
            continue
        if os.path.abspath(path) != os.path.abspath(newest or "") and checkpoint_problem(path) is None:
            return path
    return None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_resume(work_dir: str, resume: Optional[str], fallback: bool = False) -> Optional[str]:
    """The checkpoint to resume from, checked complete and safe, or ``None`` to start afresh.

    Args:
        work_dir: The run's work directory.
        resume: ``None`` (no resume), ``'auto'`` (the newest checkpoint of ``work_dir``) or a
            checkpoint path.
        fallback: With ``'auto'``: if the newest checkpoint is unusable, resume from the newest
            complete older one (logged with the reason) instead of stopping.

    Raises:
        ResumeError: The checkpoint is unusable and ``fallback`` is off, or nothing usable is left
            (a silent start from scratch would lose the finished work).
    """
    if resume is None:
        return None
    if resume != "auto":
        if fallback:
            raise ResumeError("--resume-fallback works with automatic --resume (no path): with a "
                              "path, the named checkpoint is the one to resume")
        problem = checkpoint_problem(resume)
        if problem:
            raise ResumeError(f"cannot resume: {problem}")
        return resume
    root = Path(work_dir)
    newest, why = _newest(root)
    if newest is None and why is None:
        _say(f"--resume: {work_dir} holds no checkpoint yet, training starts from scratch")
        return None
    problem = why or checkpoint_problem(newest)
    if problem is None:
        _say(f"--resume: resuming from {newest}")
        return newest
    previous = _previous_complete(root, newest)
    if fallback and previous:
        _say(f"--resume-fallback: the newest checkpoint is unusable ({problem}); resuming from the "
             f"newest complete one, {previous}")
        return previous
    way_on = (f"the newest complete checkpoint is {previous}: resume from it with "
              f"--resume-fallback (or --resume {previous})" if previous else
              f"no complete checkpoint is left in {work_dir}; to start from scratch, train "
              "without --resume")
    raise ResumeError(f"cannot resume: {problem}. {way_on}")
