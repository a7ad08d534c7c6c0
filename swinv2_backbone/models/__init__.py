"""The SwinV2 model: pure torch (mmengine optional)."""
from .backbone import ARCH_SETTINGS, Swinv2Backbone, resolve_outputs
from .layers import SMALL_MAP_RULES

__all__ = ["ARCH_SETTINGS", "SMALL_MAP_RULES", "Swinv2Backbone", "resolve_outputs"]
