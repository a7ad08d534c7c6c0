"""The registry of source formats: a name, a description, a key-based ``detect`` predicate and a
``to_native`` mapping per format. Detection must find exactly one format."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Dict, Optional

from . import hf, mmpretrain, native, official, timm, torchvision
from .common import CheckpointError, Mapped, Source, format_keys


@dataclass(frozen=True)
class CheckpointFormat:
    """One supported source layout.

    Args:
        name: Value of ``format=``.
        description: One line for messages and ``--help``.
        detect: Whether a set of state-dict keys is in this layout.
        to_native: Maps a :class:`Source` in this layout to native keys.
    """

    name: str
    description: str
    detect: Callable[[Collection[str]], bool]
    to_native: Callable[[Source], Mapped]


FORMATS: Dict[str, CheckpointFormat] = {f.name: f for f in (
    CheckpointFormat(native.NAME, native.DESCRIPTION, native.detect, native.to_native),
    CheckpointFormat(hf.NAME, hf.DESCRIPTION, hf.detect, hf.to_native),
    CheckpointFormat(official.NAME, official.DESCRIPTION, official.detect, official.to_native),
    CheckpointFormat(official.SIMMIM_NAME, official.SIMMIM_DESCRIPTION, official.detect_simmim,
                     official.simmim_to_native),
    CheckpointFormat(timm.NAME, timm.DESCRIPTION, timm.detect, timm.to_native),
    CheckpointFormat(torchvision.NAME, torchvision.DESCRIPTION, torchvision.detect,
                     torchvision.to_native),
    CheckpointFormat(mmpretrain.NAME, mmpretrain.DESCRIPTION, mmpretrain.detect, mmpretrain.to_native),
)}


def describe_formats() -> str:
    """One ``name: description`` line per format."""
    return "\n".join(f"  {f.name}: {f.description}" for f in FORMATS.values())


def get_format(name: str) -> CheckpointFormat:
    """The format called ``name``; a clear error listing the valid names otherwise."""
    if name not in FORMATS:
        raise ValueError(f"unknown checkpoint format {name!r}; choose from {sorted(FORMATS)}")
    return FORMATS[name]


def detect_format(keys: Collection[str], source_name: str, hint: Optional[str] = None) -> CheckpointFormat:
    """The one format whose ``detect`` accepts ``keys``.

    Args:
        keys: State-dict keys.
        source_name: Used in error messages.
        hint: Extra words for the error when nothing matched (e.g. the container found).

    Raises:
        CheckpointError: No format or several formats match; lists the formats recognised.
    """
    matches = [f for f in FORMATS.values() if f.detect(keys)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CheckpointError(
            f"{source_name}: unrecognised checkpoint layout{' (' + hint + ')' if hint else ''}; "
            f"first keys {format_keys(list(keys)[:8])}. Recognised formats:\n{describe_formats()}\n"
            "Pass format=... (CLI: --format) if you know which one it is.")
    raise CheckpointError(f"{source_name}: keys match several formats "
                          f"{[f.name for f in matches]}; pass format=... to choose")
