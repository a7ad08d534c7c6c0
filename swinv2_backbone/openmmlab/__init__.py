"""OpenMMLab integration: registers :class:`Swinv2Backbone` and :class:`Swinv2Classifier` in
mmengine's root ``MODELS`` registry (found from mmdet, mmseg and mmpretrain configs alike) and makes
mmengine's own training checkpoints loadable with weights-only ``torch.load``. Imported automatically by ``swinv2_backbone`` when mmengine is
installed."""
from __future__ import annotations

from mmengine.registry import MODELS

from ..models import Swinv2Backbone, Swinv2Classifier
from .safe_globals import register_safe_globals
from . import optim  # noqa: F401  (registers Swinv2LayerDecayOptimWrapperConstructor)


def register() -> None:
    """Idempotently register the backbone, the classifier and the checkpoint safe globals."""
    for model in (Swinv2Backbone, Swinv2Classifier):
        if MODELS.get(model.__name__) is not model:
            MODELS.register_module(name=model.__name__, module=model, force=True)
    register_safe_globals()


register()

__all__ = ["register", "register_safe_globals"]
