"""The models: the SwinV2 backbone, classifier and SimMIM, and the Swin V1 backbone; pure torch
(mmengine optional)."""
from . import fast, kernels
from .backbone import SwinBackboneBase
from .backbone_v1 import SwinBackbone
from .backbone_v2 import Swinv2Backbone
from .classifier import SwinClassifier, Swinv2Classifier
from .blocks import SMALL_MAP_RULES
from .outputs import FeatureInfo, resolve_outputs
from .presets import ARCH_SETTINGS, ArchPreset
from .simmim import SimMIM, local_statistics, normalize_targets, simmim_loss, simmim_mask
from .versions import BACKBONE_TYPES, backbone_class
from .weights import STATE_DICT_ADAPTERS, WEIGHT_LOADERS

kernels.use(fast.FAST)  # the default; fast.set_fast_paths(False) runs the reference kernels

__all__ = ["ARCH_SETTINGS", "ArchPreset", "BACKBONE_TYPES", "FeatureInfo", "SMALL_MAP_RULES", "STATE_DICT_ADAPTERS", "SwinBackbone",
           "SwinBackboneBase", "Swinv2Backbone",
           "SimMIM", "SwinClassifier", "Swinv2Classifier", "WEIGHT_LOADERS", "local_statistics", "normalize_targets",
           "backbone_class", "resolve_outputs", "simmim_loss", "simmim_mask"]
