"""OpenMMLab integration: registers :class:`Swinv2Backbone` and the SimMIM pre-training model in
mmengine's root ``MODELS`` registry and the SimMIM transforms in its root ``TRANSFORMS`` (found from
mmdet and mmseg configs alike) and makes mmengine's own training checkpoints loadable
with weights-only ``torch.load``. Imported automatically by ``swinv2_backbone`` when mmengine is
installed."""
from __future__ import annotations

from mmengine.registry import MODELS

from ..models import Swinv2Backbone
from .safe_globals import register_safe_globals
from . import optim  # noqa: F401  (registers Swinv2LayerDecayOptimWrapperConstructor)
from . import simmim


def register() -> None:
    """Idempotently register the backbone, the SimMIM model and transforms, and the checkpoint
    safe globals."""
    if MODELS.get("Swinv2Backbone") is not Swinv2Backbone:
        MODELS.register_module(name="Swinv2Backbone", module=Swinv2Backbone, force=True)
    simmim.register()
    register_safe_globals()


register()

__all__ = ["register", "register_safe_globals"]
