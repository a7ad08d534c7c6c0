"""The tests' shared kit: the model sizes they build and a checkpoint of one, ``tools/`` scripts run
in this process or as scripts, a one-thread scope, a time limit and a malicious pickle payload.
Fixtures over it are in ``conftest.py``; what the running torch can do (skip marks) is in
``capabilities.py``."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

import pytest
import torch

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint import save_state_dict

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"

# ---------------------------------------------------------------------------------- model sizes
# Backbone keyword arguments, read-only (every test file shares them: ``dict(SMALL, ...)`` makes a
# variant). Stochastic depth is off, so two train-mode forwards agree; a test that exercises it
# passes ``drop_path_rate`` itself.

#: 4 stages of 2 blocks (regular + shifted), several heads: small but complete.
SMALL: Mapping[str, Any] = MappingProxyType(dict(
    arch=None, embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4,
    drop_path_rate=0.0))
#: :data:`SMALL`'s widths with one (unshifted) block per stage.
SHALLOW: Mapping[str, Any] = MappingProxyType(dict(SMALL, depths=(1, 1, 1, 1),
                                                   num_heads=(1, 1, 2, 2)))
#: :data:`SHALLOW` at half the width (8 channels in stage 1): the cheapest model with 4 stages.
TINY: Mapping[str, Any] = MappingProxyType(dict(SHALLOW, embed_dims=8))


def save_backbone(path: Path, arch: Mapping[str, Any], seed: int = 0) -> Dict[str, torch.Tensor]:
    """Save a seeded ``Swinv2Backbone(**arch)`` as a native checkpoint that records its training
    windows (as converted checkpoints do); returns its state dict.

    Args:
        path: The file to write.
        arch: Backbone keyword arguments with one ``window_size`` for every stage.
        seed: ``torch.manual_seed`` before the model is built.
    """
    torch.manual_seed(seed)
    state = Swinv2Backbone(**arch).state_dict()
    stages = len(arch["depths"])
    save_state_dict(state, path, meta={"window_size": [arch["window_size"]] * stages,
                                       "pretrained_window_sizes": [0] * stages})
    return state


class RunsCode:
    """Unpickling this calls ``os.system`` (a stand-in for any code execution): it touches a file.

    Args:
        marker: The file the command creates.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------------------------- threads, time
@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op torch thread inside the ``with`` block, the previous count restored after it:
    tiny models on a 2-core machine only spin-wait with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()`` in a helper thread; fails the test if it has not returned after ``seconds``, and
    re-raises what it raised."""
    outcome: Dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # re-raised below, in the test's thread
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ---------------------------------------------------------------------------------- tools
def load_tool(name: str) -> ModuleType:
    """A fresh import of ``tools/<name>.py`` (``tools/`` is not a package).

    Args:
        name: The script's path under ``tools/`` without ``.py`` (``'train'``,
            ``'extract_features'``, ``'env/mmcv_source'``, ...).
    """
    spec = importlib.util.spec_from_file_location(f"{name.replace('/', '_')}_tool",
                                                  TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # registered before it runs, as an import would: dataclasses look their module up there
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_tool(capsys: pytest.CaptureFixture, tool: Union[str, ModuleType], *args: Any,
             limit: Optional[float] = None) -> Tuple[int, str, str]:
    """A tool's ``main`` in this process (cheaper than a subprocess), on one torch thread.

    Args:
        capsys: The test's output capture; read (and emptied) after the run.
        tool: A script name for :func:`load_tool`, or a module it returned.
        *args: The command line (each passed through ``str``).
        limit: Seconds the run may take (:func:`within`); ``None``: no limit.

    Returns:
        The exit status (an argparse error's ``SystemExit`` code included), stdout and stderr.
    """
    module = load_tool(tool) if isinstance(tool, str) else tool

    def main() -> int:
        return module.main([str(a) for a in args])

    try:
        with one_thread():
            status = main() if limit is None else within(limit, main)
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def run_script(name: str, *args: Any, timeout: float = 300) -> subprocess.CompletedProcess:
    """``tools/<name>.py`` in a fresh interpreter, from the repository root and importing this
    checkout's package; output captured as text.

    Args:
        name: The script's name without ``.py``.
        *args: The command line (each passed through ``str``).
        timeout: Seconds before the run is killed and the test fails.
    """
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(TOOLS / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": path}, timeout=timeout)
