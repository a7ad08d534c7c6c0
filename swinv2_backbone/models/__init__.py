"""The SwinV2 models, backbone and classifier: pure torch (mmengine optional)."""
from .backbone import WEIGHT_LOADERS, Swinv2Backbone
from .classifier import Swinv2Classifier
from .layers import SMALL_MAP_RULES
from .outputs import FeatureInfo, resolve_outputs
from .presets import ARCH_SETTINGS, ArchPreset

__all__ = ["ARCH_SETTINGS", "ArchPreset", "FeatureInfo", "SMALL_MAP_RULES", "Swinv2Backbone",
           "Swinv2Classifier", "WEIGHT_LOADERS", "resolve_outputs"]
