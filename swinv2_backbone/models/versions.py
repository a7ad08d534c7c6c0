"""The backbone class of each Swin version by its registry ``type`` name, for the models that build
either (:class:`~swinv2_backbone.models.SwinClassifier`, :class:`~swinv2_backbone.models.SimMIM`)
and for building a backbone from a checkpoint."""
from __future__ import annotations

from typing import Dict, Type

from .backbone import SwinBackboneBase
from .backbone_v1 import SwinBackbone
from .backbone_v2 import Swinv2Backbone

#: Backbone classes by config ``type``: SwinV2 and Swin V1.
BACKBONE_TYPES: Dict[str, Type[SwinBackboneBase]] = {"Swinv2Backbone": Swinv2Backbone,
                                                     "SwinBackbone": SwinBackbone}


def backbone_class(name: object, argument: str = "backbone_type") -> Type[SwinBackboneBase]:
    """The class registered as ``name``; a ``ValueError`` naming ``argument`` and the choices
    otherwise."""
    if not isinstance(name, str) or name not in BACKBONE_TYPES:
        raise ValueError(f"{argument} must be one of {sorted(BACKBONE_TYPES)}, got {name!r}")
    return BACKBONE_TYPES[name]
