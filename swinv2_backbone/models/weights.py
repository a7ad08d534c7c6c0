"""How models get their weights without importing the checkpoint package: the registries
:mod:`swinv2_backbone.checkpoint` fills when imported (as ``import swinv2_backbone`` does; it imports
the models, so the models must not import it), and the ``init_cfg`` helpers every model shares."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn


#: Loaders for the ``init_cfg`` types the backbone handles itself: ``loader(model, **cfg)`` for
#: ``init_cfg=dict(type=name, **cfg)``. :mod:`swinv2_backbone.checkpoint` registers ``'Pretrained'``.
WEIGHT_LOADERS: Dict[str, Callable[..., object]] = {}

#: Adapters that let ``load_state_dict`` take weights in another implementation's layout:
#: ``adapter(model, state_dict, prefix)`` rewrites, in place, the keys under ``prefix`` into the
#: model's own, or leaves them alone when they are the model's already. They run before
#: ``load_state_dict`` fills the backbone (mmengine's ``load_checkpoint`` of a whole mmdet/mmseg
#: model whose backbone was mmdet's ``SwinTransformer``: ``tools/test.py`` on such a checkpoint).
#: :mod:`swinv2_backbone.checkpoint` registers its adapter.
STATE_DICT_ADAPTERS: List[Callable[[nn.Module, Dict[str, torch.Tensor], str], None]] = []


def adapt_loaded_state(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str,
                        *_: object) -> None:
    """``load_state_dict`` pre-hook of every backbone: run :data:`STATE_DICT_ADAPTERS`."""
    for adapt in STATE_DICT_ADAPTERS:
        adapt(module, state_dict, prefix)


def pretrained_init_cfg(pretrained: Optional[str], init_cfg: Optional[Union[dict, List[dict]]]
                        ) -> Optional[Union[dict, List[dict]]]:
    """The ``init_cfg`` of a model built with ``pretrained=PATH`` (shorthand for
    ``dict(type='Pretrained', checkpoint=PATH)``) or ``init_cfg``; at most one may be given.

    Args:
        pretrained: Checkpoint path, or ``None``.
        init_cfg: mmengine initialisation config, or ``None``.
    """
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError("give either pretrained or init_cfg, not both")
    if not isinstance(pretrained, str):
        raise TypeError(f"pretrained must be a checkpoint path (str), got {type(pretrained)}")
    return dict(type="Pretrained", checkpoint=pretrained)


def load_registered_weights(model: nn.Module) -> bool:
    """Run the :data:`WEIGHT_LOADERS` entry named by ``model.init_cfg['type']`` on ``model`` (with
    the other ``init_cfg`` entries as keyword arguments) and mark the model initialised; returns
    False, doing nothing, when ``init_cfg`` names no registered loader.

    Args:
        model: A module with mmengine's ``init_cfg`` / ``_is_init`` attributes.
    """
    cfg = model.init_cfg
    if not (isinstance(cfg, dict) and cfg.get("type") in WEIGHT_LOADERS):
        return False
    WEIGHT_LOADERS[cfg["type"]](model, **{k: v for k, v in cfg.items() if k != "type"})
    model._is_init = True
    return True
