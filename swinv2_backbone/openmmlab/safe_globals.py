"""Allow-list the few non-tensor types that mmengine training checkpoints hold, so that torch >= 2.6
loads them (resume, test after train) with ``weights_only=True`` left on. On older torch mmengine's
loads need no list (``torch.load`` defaults to ``weights_only=False`` there), and this project's own
loaders enforce the same list (:func:`swinv2_backbone.compat.load_weights_only`).

mmengine 0.10.7's ``torch.load`` calls pass no ``weights_only``; since torch 2.6 that means True, and its
own checkpoints then fail on ``HistoryBuffer`` (message hub) and numpy arrays/scalars/dtypes. Those are
allow-listed here. The buffers' statistics methods are pickled as ``getattr(HistoryBuffer, name)``:
instead of allowing ``builtins.getattr`` (which would reach arbitrary attributes), a restricted stand-in
is registered under that name that resolves only those methods.
"""
from __future__ import annotations

import _codecs
import pickle
from typing import Any, List

import numpy as np

from ..compat import add_safe_globals

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

_DTYPES = ("bool int8 uint8 int16 uint16 int32 uint32 int64 uint64 float16 float32 float64 "
           "complex64 complex128").split()
_registered = False


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to the statistics methods of mmengine's ``HistoryBuffer``."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith("_") \
            and callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"refusing getattr({obj!r}, {name!r}) while loading a checkpoint: only HistoryBuffer "
        "statistics methods are allowed")


def safe_globals() -> List[Any]:
    """The allow-list registered by :func:`register_safe_globals`."""
    from mmengine.logging.history_buffer import HistoryBuffer

    return [
        HistoryBuffer,
        (_history_buffer_getattr, "builtins.getattr"),
        np.ndarray,
        np.dtype,
        _codecs.encode,  # arrays' bytes at pickle protocol 2 (torch.save's); torch >= 2.4 lists it too
        _multiarray._reconstruct,
        _multiarray.scalar,
        *{type(np.dtype(t)) for t in _DTYPES},
    ]


def register_safe_globals() -> None:
    """Register the allow-list with ``torch.serialization`` once per process (where torch has the
    weights-only default: :func:`swinv2_backbone.compat.add_safe_globals`)."""
    global _registered
    if not _registered:
        add_safe_globals(safe_globals())
        _registered = True
