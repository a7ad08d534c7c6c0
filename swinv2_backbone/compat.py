"""The torch calls whose spelling changed within the supported range (torch 2.1 to the newest).

Each helper uses the newer API where this torch has it and the older equivalent where it does not;
none changes behaviour. Every other module calls these instead of the version-dependent API, so the
range is handled in one place (tests/test_compat.py checks the branch this torch takes).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Tuple

import torch


def _release(version: str) -> Tuple[int, int]:
    """``'2.1.2+cu121'`` -> ``(2, 1)``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a torch release from {version!r}")
    return int(match.group(1)), int(match.group(2))


#: (major, minor) of the running torch.
TORCH_RELEASE = _release(torch.__version__)


def is_compiling() -> bool:
    """Whether the caller is being traced by ``torch.compile`` (``torch.compiler.is_compiling``
    from torch 2.3; ``torch._dynamo.is_compiling`` before)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    import torch._dynamo

    return torch._dynamo.is_compiling()


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` ('cpu' or 'cuda'). torch < 2.4 has no device
    argument: ``is_autocast_cpu_enabled()`` for the CPU, ``is_autocast_enabled()`` for CUDA."""
    if TORCH_RELEASE >= (2, 4):
        return torch.is_autocast_enabled(device_type)
    if device_type == "cpu":
        return torch.is_autocast_cpu_enabled()
    return device_type == "cuda" and torch.is_autocast_enabled()


def autocast_dtype(device_type: str) -> torch.dtype:
    """The dtype autocast casts to on ``device_type`` (``torch.get_autocast_dtype`` from 2.4;
    ``get_autocast_cpu_dtype`` / ``get_autocast_gpu_dtype`` before)."""
    if TORCH_RELEASE >= (2, 4):
        return torch.get_autocast_dtype(device_type)
    return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()


def weights_only_is_default() -> bool:
    """Whether ``torch.load`` without ``weights_only`` refuses arbitrary pickles (torch >= 2.6).
    Before, callers that pass no ``weights_only`` (mmengine) load any pickle and need no allow-list."""
    return TORCH_RELEASE >= (2, 6)


def add_safe_globals(items: Iterable[Any]) -> bool:
    """Allow-list ``items`` (objects, or ``(object, 'module.name')`` pairs) for weights-only loading.
    Returns False, registering nothing, where ``torch.load``'s weights-only default does not exist
    yet (torch < 2.6: see :func:`weights_only_is_default`), which is also where the pair form is
    missing."""
    if not weights_only_is_default():
        return False
    torch.serialization.add_safe_globals(list(items))
    return True
