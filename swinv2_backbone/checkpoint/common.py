"""Shared pieces of the checkpoint adapters: the checkpoint as read, the result of a layout mapping,
readable key lists for messages, and the training windows read back from the relative-coordinate
tables some layouts store or from a release name. The key vocabulary itself is in :mod:`.keys`."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from .keys import BLOCK_OR_DOWNSAMPLE, StateDict, Tensor, coords_tables, split_prefix


@dataclass(frozen=True)
class Source:
    """A checkpoint as read, before its layout is mapped.

    Args:
        state_dict: The tensors, unwrapped from any ``state_dict``/``model`` container.
        name: Where it came from (a path, or ``'<state dict>'``), used in messages.
        config: The ``config.json`` next to the weights (Hugging Face or timm directories), if any.
        meta: This project's own metadata (see :mod:`swinv2_backbone.checkpoint.io`), if any.
    """

    state_dict: StateDict
    name: str
    config: Optional[Mapping[str, Any]] = None
    meta: Optional[Mapping[str, Any]] = None


class SmallMapSource(NamedTuple):
    """The ``small_map`` rule that reproduces the features of the implementation that wrote a
    checkpoint, where its layout (or this project's metadata) tells.

    Args:
        rule: One of :data:`~swinv2_backbone.models.SMALL_MAP_RULES`.
        writer: That implementation, for messages (``'timm'``, ``'an mmdet/mmseg detector or
            segmentor'``, ...).
        finished: Whether the weights are a finished dense-prediction model's backbone (a detector,
            a segmentor, a feature backbone), whose features a user loading them expects to get;
            pretraining weights are routinely fine-tuned under another rule.
    """

    rule: str
    writer: str
    finished: bool = False


@dataclass
class StageWindow:
    """The window one stage was trained with and the window normalising its position-bias
    coordinates (the ``pretrained_window_size``; 0 when it is the training window itself).

    Args:
        window: Training window of the stage.
        pretrained: Pretrained window (0: none, coordinates normalised by ``window``).
    """

    window: int
    pretrained: int = 0


@dataclass
class Mapped:
    """Result of mapping one layout to native keys.

    Args:
        state_dict: Native-layout tensors.
        dropped: Reason -> source keys deliberately left out (recomputed buffers, heads, ...).
        windows: Stage index -> training window read from the file, where the file tells.
        windows_from: What told the windows (``'buffers'``, ``'config.json'``, ...), if anything.
        notes: Extra facts for the summary line (e.g. the container that was unwrapped).
        claimed: Architecture stated by the file's own metadata (``embed_dims``, ``depths``,
            ``num_heads``, ``use_abs_pos_embed``), checked against the tensors.
        heads: Head name -> its tensors under native head keys (e.g. ``'classification head'`` ->
            ``head.weight``/``head.bias``), kept apart from the encoder for models that have the
            head. Invariant: every head name is also a reason in :attr:`dropped` listing the source
            keys, since the encoder weights never hold them (see :meth:`keep_head`).
        labels: Class names by index, where the file's metadata names them (HF ``id2label``).
        small_map: The rule that reproduces the writer's features, where the layout tells.
    """

    state_dict: StateDict = field(default_factory=dict)
    dropped: Dict[str, List[str]] = field(default_factory=dict)
    windows: Dict[int, StageWindow] = field(default_factory=dict)
    windows_from: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    claimed: Dict[str, Any] = field(default_factory=dict)
    heads: Dict[str, StateDict] = field(default_factory=dict)
    labels: Optional[Tuple[str, ...]] = None
    small_map: Optional[SmallMapSource] = None

    def keep_head(self, head: str, key: str, native_key: str, value: Tensor) -> None:
        """Keep the source ``key`` as ``native_key`` of the head ``head``; like every head key it is
        also recorded as dropped from the encoder under the reason ``head``."""
        self.heads.setdefault(head, {})[native_key] = value
        self.drop(head, key)

    def drop(self, reason: str, key: str) -> None:
        """Record ``key`` as deliberately dropped for ``reason``."""
        self.dropped.setdefault(reason, []).append(key)

    def take_prefix(
        self, state: Mapping[str, Tensor], prefix: str,
        heads: Sequence[Tuple[Union[str, Tuple[str, ...]], str]],
    ) -> Tuple[StateDict, StateDict]:
        """Split a model that wraps the encoder under ``prefix`` (``swinv2.``, ``backbone.``, ...).

        Args:
            state: The whole model's tensors.
            prefix: The encoder's prefix.
            heads: ``(key prefix(es), reason)`` of the other modules to drop (e.g. the classifier).

        Returns:
            ``(encoder, others)``: the entries under ``prefix`` (prefix removed), and the entries
            outside it that are no known head, left for validation to report. Dropped heads are
            recorded in :attr:`dropped`.
        """
        encoder, rest = split_prefix(state, prefix)
        others: StateDict = {}
        for key, value in rest.items():
            reason = next((why for starts, why in heads if key.startswith(starts)), None)
            if reason is None:
                others[key] = value
            else:
                self.drop(reason, key)
        return encoder, others

    def read_tables(self, state: Mapping[str, Tensor]) -> None:
        """Set :attr:`windows` from the first block's relative-coordinate table of each stage among
        the native-named entries of ``state`` (see :func:`window_from_table`); stages whose table
        does not tell are left out."""
        for stage, table in coords_tables(state).items():
            found = window_from_table(table)
            if found is not None:
                self.windows[stage] = found
        if self.windows:
            self.windows_from = "relative-coordinate buffers"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, recognised or fitted; the message names the file and keys."""


def format_keys(keys: Iterable[str], limit: int = 40, group: bool = True) -> str:
    """``keys`` as a sorted, readable list. With ``group``, several keys of one block or patch
    merging read ``layers.2.blocks.5.* (17 keys)``; after ``limit`` entries the rest is counted."""
    entries: Dict[str, List[str]] = {}
    for key in sorted(keys):
        m = BLOCK_OR_DOWNSAMPLE.match(key) if group else None
        entries.setdefault(m.group(1) + "*" if m else key, []).append(key)
    shown = [members[0] if len(members) == 1 else f"{name} ({len(members)} keys)"
             for name, members in entries.items()]
    text = ", ".join(shown[:limit])
    if len(shown) > limit:
        text += f", ... ({len(shown) - limit} more)"
    return f"[{text}]"


def window_from_table(table: Tensor) -> Optional[StageWindow]:
    """Read the window and pretrained window back from an official-style relative-coordinate table.

    The table has shape ``(1, 2w-1, 2w-1, 2)`` and holds ``sign(t) * log2(|t| + 1) / 3`` with
    ``t = 8 * d / (p - 1)`` for relative offsets ``d`` in ``[-(w-1), w-1]``, ``p`` being the
    pretrained window (or ``w`` itself when there is none). The largest entry (``d = w - 1``) gives
    ``p``. Returns ``None`` for a table of another shape, a window of 1 or non-finite values.
    """
    if table.ndim != 4 or table.shape[0] != 1 or table.shape[-1] != 2 or table.shape[1] != table.shape[2]:
        return None
    side = table.shape[1]
    if side % 2 == 0 or side < 3:
        return None
    window = (side + 1) // 2
    top = float(table[..., 0].max())
    if not math.isfinite(top) or top <= 0:
        return None
    scaled = 2.0 ** (3.0 * top) - 1.0  # = 8 * (w - 1) / (p - 1)
    pretrained = 1.0 + 8.0 * (window - 1) / scaled
    if abs(pretrained - round(pretrained)) > 1e-3:
        return None
    pretrained = int(round(pretrained))
    return StageWindow(window, 0 if pretrained == window else pretrained)


def map_sides(image_size: int, patch_size: int, stages: int) -> List[int]:
    """The side of each stage's feature map for a square ``image_size`` input."""
    return [image_size // patch_size // 2 ** i for i in range(stages)]


def clamped_windows(window: int, image_size: int, patch_size: int, stages: int) -> List[int]:
    """One ``window`` for all stages, clamped to each stage's map side at ``image_size`` (the rule
    of the official code, Hugging Face and timm for a single window setting)."""
    return [min(window, side) for side in map_sides(image_size, patch_size, stages)]


def windows_from_name(name: str, stages: int, patch_size: int = 4) -> Dict[int, StageWindow]:
    """Per-stage windows from a release name such as ``swinv2_base_patch4_window12to16_192to256``
    (official), ``swinv2_base_window12to16_192to256`` (timm) or
    ``swinv2-base-patch4-window12to16-192to256`` (Hugging Face): window ``16`` at ``256`` px,
    pretrained with window ``12`` at ``192`` px. Each stage's window is clamped to its map size, as
    the official code does. Returns ``{}`` when the name does not say."""
    m = re.search(r"window(\d+)(?:to(\d+))?[_-](\d+)(?:to(\d+))?", name)
    if not m:
        return {}
    first, second, size0, size1 = m.groups()
    windows = clamped_windows(int(second or first), int(size1 or size0), patch_size, stages)
    pretrained = clamped_windows(int(first), int(size0), patch_size, stages) if second else [0] * stages
    return {i: StageWindow(w, 0 if p == w else p) for i, (w, p) in enumerate(zip(windows, pretrained))}
