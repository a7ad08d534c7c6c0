"""``tools/benchmark.py --isolate``: each implementation of a case timed in a fresh Python process of
its own, because the peers' times depend on the process's history (glibc's heap state: a process
that has freed large blocks serves map-sized temporaries faster). The parent runs one child per
implementation, one after another, with a command the caller builds; the child measures its
implementation with :func:`.cases.measure` and saves what it measured (:func:`save_measured`) into a
temporary directory the parent owns; the parent merges the children's measurements
(:func:`run_isolated`) for :func:`.cases.compare`. A child that fails costs only its own row."""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..compat import load_weights_only
from .cases import Measured, Result

#: How the implementations of a case share processes, as the report states it.
ALTERNATING = "alternating (one process)"
ISOLATED = "isolated (one process per implementation)"
#: Lines of a failed child's stderr that its failure message keeps (the traceback's end).
STDERR_TAIL_LINES = 15

#: Builds a child's command line: (implementation name, file to save its measurements to) -> argv.
ChildCommand = Callable[[str, Path], List[str]]


@dataclass
class Failure:
    """An implementation of a case whose process failed, so it has no result.

    Args:
        impl: The implementation's name.
        size: Input (H, W).
        batch: Images per step.
        dtype: Dtype key of the case.
        task: ``'inference'`` or ``'train'``.
        mode: ``'eager'`` or ``'compile'``.
        error: The child's exit status and the tail of its stderr.
    """

    impl: str
    size: Tuple[int, int]
    batch: int
    dtype: str
    task: str
    mode: str
    error: str


def save_measured(measured: Measured, path: Path) -> None:
    """Write a child's measurements (results as plain dicts, outputs as tensors) for
    :func:`load_measured`."""
    torch.save({"results": [asdict(r) for r in measured.results], "outputs": measured.outputs,
                "fp32_outputs": measured.fp32_outputs}, path)


def load_measured(path: Path) -> Measured:
    """Read what :func:`save_measured` wrote (weights-only: plain containers and tensors)."""
    data = load_weights_only(path)
    results = [Result(**{**r, "size": tuple(r["size"])}) for r in data["results"]]
    return Measured(results, data["outputs"], data["fp32_outputs"])


def child_error(returncode: int, saved: bool, stderr: str) -> str:
    """A failed child's message: its exit status (and, exiting with 0, that it saved nothing) and
    the last :data:`STDERR_TAIL_LINES` lines of its stderr, indented."""
    what = "" if returncode != 0 or saved else " without saving its results"
    tail = stderr.strip().splitlines()[-STDERR_TAIL_LINES:]
    return (f"its process exited with status {returncode}{what}; the end of its stderr:\n"
            + "\n".join("    " + line for line in tail or ["(empty)"]))


def run_isolated(names: Sequence[str], command: ChildCommand) -> Tuple[Measured, Dict[str, str]]:
    """Run ``command(name, file)`` for each implementation in ``names`` in turn, each a fresh
    process that must save its measurements to ``file``, and merge them. Returns the merged
    measurements (``names`` order, failed implementations left out) and, for each implementation
    whose child failed, :func:`child_error`'s message."""
    merged = Measured([], {}, {})
    failed: Dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="swinv2-benchmark-") as tmp:
        for i, name in enumerate(names):
            out = Path(tmp) / f"impl{i}.pt"
            child = subprocess.run(command(name, out), capture_output=True, text=True)
            if child.returncode != 0 or not out.exists():
                failed[name] = child_error(child.returncode, out.exists(), child.stderr)
                continue
            part = load_measured(out)
            merged.results += part.results
            merged.outputs.update(part.outputs)
            merged.fp32_outputs.update(part.fp32_outputs)
    return merged, failed
