"""OpenMMLab integration: registers :class:`Swinv2Backbone`, the Swin V1 :class:`SwinBackbone`,
:class:`SwinClassifier` and the SimMIM pre-training model in mmengine's root ``MODELS`` registry
(also under their former names, :data:`FORMER_NAMES`)
and the SimMIM transforms in its root ``TRANSFORMS`` (found from mmdet, mmseg and mmpretrain configs
alike), registers the crash-safe ``AtomicCheckpointHook`` (:mod:`.checkpointing`), and makes
mmengine's own training checkpoints loadable with weights-only ``torch.load``. Imported
automatically by ``swinv2_backbone`` when mmengine is installed."""
from __future__ import annotations

from mmengine.registry import MODELS

from ..models import SwinBackbone, Swinv2Backbone, SwinClassifier
from .safe_globals import register_safe_globals
from . import optim  # noqa: F401  (registers SwinLayerDecayOptimWrapperConstructor)
from . import checkpointing, simmim


#: Former registry names of the classes that serve both versions, still built by the configs that use
#: them.
FORMER_NAMES = {"Swinv2Classifier": SwinClassifier}


def register() -> None:
    """Idempotently register the backbones (V2 and V1), the classifier, the SimMIM model and
    transforms, the crash-safe checkpoint hook and its file backend, and the checkpoint safe
    globals."""
    names = {model.__name__: model for model in (Swinv2Backbone, SwinBackbone, SwinClassifier)}
    for name, model in {**names, **FORMER_NAMES}.items():
        if MODELS.get(name) is not model:
            MODELS.register_module(name=name, module=model, force=True)
    simmim.register()
    checkpointing.register()
    register_safe_globals()


register()

__all__ = ["FORMER_NAMES", "register", "register_safe_globals"]
