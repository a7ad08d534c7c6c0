"""Validation of the backbone's constructor arguments: each helper returns the checked value or
raises a ``TypeError``/``ValueError`` that names the argument and what is allowed."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

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


def resolve_outputs(
    out_indices: Optional[Sequence[int]],
    out_features: Optional[Sequence[str]],
    num_stages: int,
) -> Tuple[str, ...]:
    """Validate ``out_indices`` / ``out_features`` and return the selected output names in order.

    ``out_indices`` are 0-based stage indices (negatives count from the end); ``out_features`` are
    names from ``('stem', 'stage1', ..., 'stageN')``. Either may be given; if both, they must select
    the same stages. Neither selects every stage.
    """
    names = ("stem",) + tuple(f"stage{i + 1}" for i in range(num_stages))
    from_indices = None
    if out_indices is not None:
        if isinstance(out_indices, (int, str)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in out_indices):
            raise ValueError(f"out_indices must be a sequence of stage indices in "
                             f"[{-num_stages}, {num_stages - 1}], got {out_indices!r}")
        indices = list(out_indices)
        if not indices:
            raise ValueError("out_indices is empty; give at least one stage index in "
                             f"[{-num_stages}, {num_stages - 1}]")
        bad = [i for i in indices if not -num_stages <= i < num_stages]
        if bad:
            raise ValueError(f"out_indices {bad} out of range: valid stage indices are "
                             f"{list(range(num_stages))} (or negatives from {-num_stages})")
        indices = [i % num_stages for i in indices]
        _check_order(indices, "out_indices", out_indices, list(range(num_stages)))
        from_indices = tuple(names[i + 1] for i in indices)
    if out_features is not None:
        if isinstance(out_features, str) or not all(isinstance(n, str) for n in out_features):
            raise ValueError(f"out_features must be a sequence of names from {list(names)}, "
                             f"got {out_features!r}")
        features = list(out_features)
        if not features:
            raise ValueError(f"out_features is empty; choose from {list(names)}")
        unknown = [n for n in features if n not in names]
        if unknown:
            raise ValueError(f"unknown out_features {unknown}: valid names are {list(names)}")
        _check_order([names.index(n) for n in features], "out_features", out_features, list(names))
        if from_indices is not None and tuple(features) != from_indices:
            raise ValueError(f"out_indices {tuple(out_indices)!r} selects {list(from_indices)} but "
                             f"out_features selects {features}; give one of them, or make them agree")
        return tuple(features)
    return from_indices if from_indices is not None else names[1:]


def _check_order(positions: List[int], arg: str, given: object, valid: list) -> None:
    if len(set(positions)) != len(positions):
        raise ValueError(f"{arg} {given!r} has duplicates; valid choices are {valid}, each at most once")
    if positions != sorted(positions):
        raise ValueError(f"{arg} {given!r} must be in stage order (shallow to deep); "
                         f"valid choices are {valid}")
