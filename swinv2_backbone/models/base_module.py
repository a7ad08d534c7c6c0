"""``BaseModule``, the base class of the backbones, the classifier and the SimMIM model: mmengine's
when mmengine is installed, otherwise a torch-only stand-in with the same ``init_cfg`` /
``init_weights`` contract, so the models run with torch alone."""
from __future__ import annotations

from typing import List, Optional, Union

from torch import nn

try:
    from mmengine.model import BaseModule
except ImportError:  # torch-only install

    class BaseModule(nn.Module):  # type: ignore[no-redef]
        """Minimal stand-in for ``mmengine.model.BaseModule``.

        Args:
            init_cfg: Initialisation config. Without mmengine only ``type='Pretrained'`` is
                understood (handled by the subclass); anything else raises at ``init_weights``.
        """

        def __init__(self, init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
            super().__init__()
            self.init_cfg = init_cfg
            self._is_init = False

        @property
        def is_init(self) -> bool:
            return self._is_init

        def init_weights(self) -> None:
            if self.init_cfg is not None:
                raise RuntimeError(f"init_cfg {self.init_cfg!r} needs mmengine (pip install "
                                   "'swinv2-backbone[mm]'); only type='Pretrained' works without it")
            self._is_init = True

__all__ = ["BaseModule"]
