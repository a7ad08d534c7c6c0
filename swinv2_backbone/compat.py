"""The torch calls whose spelling changed within the supported range (torch 2.1 to the newest).

Each helper uses the newer API where this torch has it and the older equivalent where it does not;
none changes behaviour. Every other module calls these instead of the version-dependent API, so the
range is handled in one place (tests/test_compat.py checks the branch this torch takes).
"""
from __future__ import annotations

import _compat_pickle
import pickle
import re
import types
from typing import Any, Dict, Iterable, Optional, Tuple

import torch


def _release(version: str) -> Tuple[int, int]:
    """``'2.1.2+cu121'`` -> ``(2, 1)``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a torch release from {version!r}")
    return int(match.group(1)), int(match.group(2))


#: (major, minor) of the running torch.
TORCH_RELEASE = _release(torch.__version__)


if hasattr(getattr(torch, "compiler", None), "is_compiling"):
    is_compiling = torch.compiler.is_compiling
else:
    def is_compiling() -> bool:
        """Whether the caller is being traced by ``torch.compile`` (``torch.compiler.is_compiling``
        from torch 2.3; ``torch._dynamo.is_compiling`` before, imported on first use)."""
        from torch._dynamo import is_compiling as dynamo_is_compiling

        return dynamo_is_compiling()


def tracing() -> bool:
    """Whether the model is being traced into a graph rather than run: ``torch.compile`` /
    ``torch.export`` (dynamo, or export's non-strict mode), ``torch.jit.trace`` (the TorchScript ONNX
    exporter, FLOP counters) or ``torch.fx`` symbolic tracing. The fast kernels are eager strategies,
    not graph content: a trace takes the reference kernels (or an exporter's,
    :func:`swinv2_backbone.models.kernels.traced_with`)."""
    if is_compiling() or torch.jit.is_tracing():
        return True
    is_exporting = getattr(getattr(torch, "compiler", None), "is_exporting", None)  # torch >= 2.4
    if is_exporting is not None and is_exporting():
        return True
    from torch.fx import _symbolic_trace

    # is_fx_symbolic_tracing from torch 2.8; before, is_fx_tracing meant symbolic tracing alone.
    return getattr(_symbolic_trace, "is_fx_symbolic_tracing", _symbolic_trace.is_fx_tracing)()



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


#: Objects allow-listed with :func:`add_safe_globals` on torch < 2.6, by pickled name.
_EXTRA_SAFE: Dict[str, Any] = {}


def add_safe_globals(items: Iterable[Any]) -> bool:
    """Allow-list ``items`` (objects, or ``(object, 'module.name')`` pairs) for weights-only loading.
    On torch >= 2.6 they are registered with torch, so every ``torch.load`` (mmengine's too) accepts
    them; on older torch they are kept for :func:`load_weights_only` only, and False is returned."""
    items = list(items)
    if weights_only_is_default():
        torch.serialization.add_safe_globals(items)
        return True
    for item in items:
        obj, name = item if isinstance(item, tuple) else (item, f"{item.__module__}.{item.__qualname__}")
        _EXTRA_SAFE[name] = obj
    return False


class _AllowListUnpickler(pickle.Unpickler):
    """An unpickler that resolves only torch's weights-only allow-list and :data:`_EXTRA_SAFE`:
    every global a pickle can call or build goes through ``find_class``, so nothing else runs."""

    def find_class(self, module: str, name: str) -> Any:
        from torch._weights_only_unpickler import _get_allowed_globals

        # Protocol-2 pickles (torch.save's) use Python 2 names such as __builtin__.getattr.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        allowed = _EXTRA_SAFE[full] if full in _EXTRA_SAFE else _get_allowed_globals().get(full)
        if allowed is None:
            raise pickle.UnpicklingError(f"Unsupported class {full}")
        return allowed


def _allow_list_load(file: Any, **kwargs: Any) -> Any:
    return _AllowListUnpickler(file, **kwargs).load()


#: ``pickle_module`` for torch.load on torch < 2.6 (torch subclasses ``Unpickler`` and calls ``load``).
_ALLOW_LIST_PICKLE = types.SimpleNamespace(__name__=__name__, Unpickler=_AllowListUnpickler,
                                           load=_allow_list_load)


def load_weights_only(file: Any, map_location: Any = None) -> Any:
    """``torch.load`` that accepts tensors, plain containers and the allow-listed types only
    (:func:`add_safe_globals`), refusing any other pickled object with ``pickle.UnpicklingError``.
    torch >= 2.6 does this with ``weights_only=True`` and its registered allow-list. Older torch
    cannot extend its weights-only list (and cannot rebuild such objects), so there the same list is
    enforced by an unpickler whose ``find_class`` resolves nothing else."""
    if weights_only_is_default():
        return torch.load(file, map_location=map_location, weights_only=True)
    return torch.load(file, map_location=map_location, weights_only=False,
                      pickle_module=_ALLOW_LIST_PICKLE)


def refused_global(message: str) -> Optional[str]:
    """The Python object named in a weights-only ``torch.load``'s refusal, or None where the error
    is of another kind (a truncated file). torch >= 2.4 says ``GLOBAL module.name``, older torch
    ``Unsupported class module.name``."""
    found = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", message)
    return found.group(1) if found else None


def event_start_ns(event: Any) -> int:
    """Start time of a profiler (Kineto) event in ns (``start_ns`` from torch 2.2, ``start_us``
    before)."""
    return event.start_ns() if hasattr(event, "start_ns") else event.start_us() * 1000
