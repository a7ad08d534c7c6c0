"""The backbone's outputs: which maps it returns, resolved once from ``out_indices`` /
``out_features`` into :class:`FeatureInfo` records that everything else reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

#: Name of the patch-embedding output; stage ``i`` (0-based) is named ``f"stage{i + 1}"``.
STEM = "stem"


@dataclass(frozen=True)
class FeatureInfo:
    """One returned feature map.

    Args:
        name: ``'stem'`` or ``'stage1'`` ... ``'stageN'``.
        stage: 0-based stage index, ``None`` for the stem.
        channels: Channels of the map.
        stride: Input pixels per map pixel.
    """

    name: str
    stage: Optional[int]
    channels: int
    stride: int


def output_names(num_stages: int) -> Tuple[str, ...]:
    """Every selectable output in stage order: ``('stem', 'stage1', ..., 'stageN')``."""
    return (STEM,) + tuple(f"stage{i + 1}" for i in range(num_stages))


def output_records(names: Sequence[str], num_stages: int, embed_dims: int, patch_size: int
                 ) -> Tuple[FeatureInfo, ...]:
    """Records for the selected ``names`` (as :func:`resolve_outputs` returns them): stage ``i``
    has ``embed_dims * 2**i`` channels and stride ``patch_size * 2**i``; the stem has stage 1's."""
    positions = {name: i for i, name in enumerate(output_names(num_stages))}
    records = []
    for name in names:
        stage = positions[name] - 1 if name != STEM else None
        scale = 2 ** (stage or 0)
        records.append(FeatureInfo(name, stage, embed_dims * scale, patch_size * scale))
    return tuple(records)


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
    names = output_names(num_stages)
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
