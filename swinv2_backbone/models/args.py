"""Validation of the backbone's constructor arguments: each helper returns the checked value or
raises a ``TypeError``/``ValueError`` that names the argument and what is allowed
(:func:`unknown_arguments_message` words the error for keywords a constructor does not take)."""
from __future__ import annotations

import difflib
import inspect
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

IntOrSeq = Union[int, Sequence[int]]


def _is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, low: int, high: Optional[int] = None, note: str = "") -> int:
    """``value`` if it is an int in ``[low, high]``; else a TypeError (not an int) or ValueError
    (out of range) naming ``name`` and the allowed range (``note`` is appended to it)."""
    allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    if not _is_int(value):
        raise TypeError(f"{name} must be {allowed}{note}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}{note}, got {value!r}")
    return value


def check_stage_ints(name: str, value: object, low: int) -> Tuple[int, ...]:
    """``value`` as a tuple of ints >= ``low`` (one per stage), or a clear TypeError/ValueError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of ints >= {low} (one per stage), got {value!r}")
    if not all(_is_int(v) and v >= low for v in value):
        raise ValueError(f"{name} must be a sequence of ints >= {low} (one per stage), got {value!r}")
    return tuple(value)


def check_number(name: str, value: object, allowed: str, valid: Callable[[float], bool]) -> float:
    """``value`` if it is a real number (not a bool) satisfying ``valid``; else a TypeError or
    ValueError saying ``name`` must be ``allowed``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if not valid(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool, else a TypeError (a string such as 'False' would be truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def per_stage(value: IntOrSeq, num_stages: int, name: str) -> Tuple[int, ...]:
    """One int for every stage from an int or a sequence of ``num_stages`` ints."""
    if _is_int(value):
        return (value,) * num_stages
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be an int or a sequence of {num_stages} ints (one per stage), "
                        f"got {value!r}")
    values = tuple(value)
    if len(values) != num_stages or not all(_is_int(v) for v in values):
        raise ValueError(f"{name} must be an int or a sequence of {num_stages} ints "
                         f"(one per stage), got {value!r}")
    return values


def stage_windows(window_size: IntOrSeq, num_stages: int) -> Tuple[int, ...]:
    """One window >= 1 per stage from ``window_size`` (an int or one per stage), or a clear error."""
    windows = per_stage(window_size, num_stages, "window_size")
    if any(w < 1 for w in windows):
        raise ValueError(f"window_size must be >= 1, got {window_size!r}")
    return windows


def unknown_arguments_message(cls: type, unknown: Dict[str, object]) -> str:
    """Names the unknown keywords of ``cls``, the closest valid one for each, and every valid
    keyword."""
    known = [n for n in inspect.signature(cls.__init__).parameters
             if n not in ("self", "unknown")]
    hints = "".join(f"; did you mean {m[0]!r} for {k!r}?" for k in unknown
                    for m in [difflib.get_close_matches(k, known, n=1)] if m)
    return (f"{cls.__name__} got unknown keyword arguments {sorted(unknown)}{hints} "
            f"Valid arguments: {known}")
