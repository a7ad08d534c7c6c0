"""The SwinV2 models: backbone, classifier and SimMIM; pure torch (mmengine optional)."""
from .backbone import WEIGHT_LOADERS, Swinv2Backbone
from .classifier import Swinv2Classifier
from .layers import SMALL_MAP_RULES
from .outputs import FeatureInfo, resolve_outputs
from .presets import ARCH_SETTINGS, ArchPreset
from .simmim import SimMIM, local_statistics, normalize_targets, simmim_loss, simmim_mask

__all__ = ["ARCH_SETTINGS", "ArchPreset", "FeatureInfo", "SMALL_MAP_RULES", "Swinv2Backbone",
           "SimMIM", "Swinv2Classifier", "WEIGHT_LOADERS", "local_statistics", "normalize_targets",
           "resolve_outputs", "simmim_loss", "simmim_mask"]
