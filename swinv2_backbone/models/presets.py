"""The official SwinV2 architecture presets. A leaf module: it imports nothing from this package, so
the model, the checkpoint adapters and the tools can all read it."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Tuple


@dataclass(frozen=True)
class ArchPreset:
    """One architecture of the paper.

    Args:
        embed_dims: Channels of stage 1 (doubled at every stage).
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
    """

    embed_dims: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]

    @property
    def stage_channels(self) -> Tuple[int, ...]:
        """Channels of every stage: ``embed_dims * 2**i``."""
        return tuple(self.embed_dims * 2 ** i for i in range(len(self.depths)))


#: The official variants by name (read-only).
ARCH_SETTINGS: Mapping[str, ArchPreset] = MappingProxyType({
    "tiny": ArchPreset(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": ArchPreset(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": ArchPreset(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "large": ArchPreset(192, (2, 2, 18, 2), (6, 12, 24, 48)),
})
