"""OpenMMLab integration: registers :class:`Swinv2Backbone`, the Swin V1 :class:`SwinBackbone`,
:class:`Swinv2Classifier` and the SimMIM pre-training model in mmengine's root ``MODELS`` registry
and the SimMIM transforms in its root ``TRANSFORMS`` (found from mmdet, mmseg and mmpretrain configs
alike), registers the crash-safe ``AtomicCheckpointHook`` (:mod:`.checkpointing`), and makes
mmengine's own training checkpoints loadable with weights-only ``torch.load``. Imported
automatically by ``swinv2_backbone`` when mmengine is installed."""
from __future__ import annotations

from mmengine.registry import MODELS

from ..models import SwinBackbone, Swinv2Backbone, Swinv2Classifier
from .safe_globals import register_safe_globals
from . import optim  # noqa: F401  (registers Swinv2LayerDecayOptimWrapperConstructor)
from . import checkpointing, simmim


def register() -> None:
    """Idempotently register the backbones (V2 and V1), the classifier, the SimMIM model and
    transforms, the crash-safe checkpoint hook and its file backend, and the checkpoint safe
    globals."""
    for model in (Swinv2Backbone, SwinBackbone, Swinv2Classifier):
        if MODELS.get(model.__name__) is not model:
            MODELS.register_module(name=model.__name__, module=model, force=True)
    simmim.register()
    checkpointing.register()
    register_safe_globals()


register()

__all__ = ["register", "register_safe_globals"]
