"""swinv2_backbone: a Swin Transformer V2 backbone for OpenMMLab dense prediction.

The model (:mod:`swinv2_backbone.models`) and the checkpoint adapters
(:mod:`swinv2_backbone.checkpoint`) need torch alone. When mmengine is installed, importing
this package also registers ``Swinv2Backbone`` in mmengine's root ``MODELS`` registry, so mmdet and
mmseg configs build it after ``custom_imports=dict(imports=['swinv2_backbone'])``.
"""
from importlib.util import find_spec

from . import checkpoint  # noqa: F401  (registers the backbone's 'Pretrained' weight loader)
from .models import ARCH_SETTINGS, SwinBackbone, Swinv2Backbone, SwinClassifier, Swinv2Classifier

__version__ = "0.1.0"
__all__ = ["ARCH_SETTINGS", "SwinBackbone", "Swinv2Backbone", "SwinClassifier", "Swinv2Classifier",
           "__version__"]

if find_spec("mmengine") is not None:
    from . import openmmlab  # noqa: F401  (registers the backbone and the classifier)
