"""Optimizer-wrapper constructor for models with a :class:`Swinv2Backbone` or a Swin V1
:class:`SwinBackbone`: no weight decay on normalisation layers and on the position parameters that
must not be shrunk (SwinV2's ``cpb_mlp`` and ``logit_scale``, V1's ``relative_position_bias_table``,
both versions' ``absolute_pos_embed``), an optional learning-rate multiplier for the whole backbone
(the DETR recipes' ``custom_keys={'backbone': dict(lr_mult=0.1)}``) and optional layer-wise
learning-rate decay over the backbone's depth.

Use it from a config::

    optim_wrapper = dict(
        type='OptimWrapper',
        constructor='SwinLayerDecayOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
        paramwise_cfg=dict(layer_decay_rate=0.9))
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from ..models import SwinBackboneBase

#: Parameter-name substrings that never get weight decay (besides normalisation layers): the
#: SwinV2 and the Swin V1 position parameters (each version has only its own, so one list serves both).
DEFAULT_NO_DECAY_KEYS: Tuple[str, ...] = ("cpb_mlp", "logit_scale", "relative_position_bias_table",
                                          "absolute_pos_embed")
_NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_ALLOWED_KEYS = ("layer_decay_rate", "backbone_lr_mult", "no_decay_keys")


def backbone_layer_id(name: str, depths: Sequence[int]) -> int:
    """Depth index of a backbone parameter for layer-wise lr decay.

    0 for the patch embedding and the absolute position embedding; ``1 + sum(depths[:i]) + j``
    for block ``j`` of stage ``i``; the patch merging at the end of stage ``i`` shares the id of
    that stage's last block; the output norms (``norm{i}``) get ``sum(depths) + 1``, like every
    parameter outside the backbone.

    Args:
        name: Parameter name relative to the backbone (``layers.1.blocks.0.attn.qkv.weight``).
        depths: Blocks per stage of the backbone.
    """
    parts = name.split(".")
    if parts[0] in ("patch_embed", "absolute_pos_embed"):
        return 0
    if parts[0] == "layers":
        stage = int(parts[1])
        if parts[2] == "blocks":
            return 1 + sum(depths[:stage]) + int(parts[3])
        if parts[2] == "downsample":
            return sum(depths[:stage + 1])
    if parts[0].startswith("norm"):
        return sum(depths) + 1
    raise ValueError(f"no layer id for backbone parameter {name!r}: expected patch_embed.*, "
                     "absolute_pos_embed, layers.<i>.blocks.<j>.*, layers.<i>.downsample.* or "
                     "norm<i>.*")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _norm_parameter_names(model: nn.Module) -> set:
    return {f"{module_name}.{name}" if module_name else name
            for module_name, module in model.named_modules() if isinstance(module, _NORM_TYPES)
            for name, _ in module.named_parameters(recurse=False)}


def _find_backbone(model: nn.Module) -> Tuple[str, SwinBackboneBase]:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, SwinBackboneBase)]
    if len(found) != 1:
        raise ValueError(f"layer-wise lr decay needs exactly one Swinv2Backbone or SwinBackbone in "
                         f"the model, found {len(found)} ({[name for name, _ in found]})")
    return found[0]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
@OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="Swinv2LayerDecayOptimWrapperConstructor")  # former
class SwinLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups for a model holding a :class:`Swinv2Backbone` or a :class:`SwinBackbone`.

    Weight decay is 0 for every parameter of a normalisation layer (LayerNorm, GroupNorm,
    BatchNorm, InstanceNorm; anywhere in the model) and for every parameter whose name contains
    one of ``no_decay_keys``; the rest get the optimizer's ``weight_decay``. With a
    ``layer_decay_rate`` r < 1 a backbone parameter at depth ``l`` (see :func:`backbone_layer_id`)
    gets the learning rate ``lr * r ** (L + 1 - l)`` with ``L = sum(depths)``; the output norms and
    everything outside the backbone (neck, heads) keep ``lr``. A ``backbone_lr_mult`` m multiplies
    the lr of every backbone parameter (its output norms included) by m, on top of the layer decay.
    Parameters are merged into one group per (lr, weight decay) pair; the group holding the full lr
    and full decay comes first, so the lr that mmengine logs (the first group's) is the base lr.
    Frozen parameters (``requires_grad=False``) are left out of the optimizer.

    Args:
        optim_wrapper_cfg: ``optim_wrapper`` config (``optimizer`` with ``lr`` and usually
            ``weight_decay``).
        paramwise_cfg: Optional dict with ``layer_decay_rate`` (float in (0, 1], default 1: no
            decay), ``backbone_lr_mult`` (float > 0, default 1) and ``no_decay_keys``
            (parameter-name substrings, default :data:`DEFAULT_NO_DECAY_KEYS`). Other keys are
            rejected.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(_ALLOWED_KEYS))
        if unknown:
            raise ValueError(f"SwinLayerDecayOptimWrapperConstructor: unknown paramwise_cfg keys "
                             f"{unknown}; allowed keys are {list(_ALLOWED_KEYS)}")
        rate = paramwise_cfg.setdefault("layer_decay_rate", 1.0)
        if not _is_number(rate) or not 0.0 < rate <= 1.0:
            raise ValueError(f"layer_decay_rate must be a number in (0, 1] (1: no layer decay), "
                             f"got {rate!r}")
        mult = paramwise_cfg.setdefault("backbone_lr_mult", 1.0)
        if not _is_number(mult) or not mult > 0.0:
            raise ValueError(f"backbone_lr_mult must be a number > 0 (e.g. 0.1 as the DETR "
                             f"recipes; 1: the base lr), got {mult!r}")
        keys = paramwise_cfg.setdefault("no_decay_keys", DEFAULT_NO_DECAY_KEYS)
        if isinstance(keys, str) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"no_decay_keys must be a sequence of non-empty parameter-name "
                             f"substrings, e.g. {list(DEFAULT_NO_DECAY_KEYS)}, got {keys!r}")
        # Always non-empty, so the parent's __call__ goes through add_params.
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def _lr_scales(self, model: nn.Module) -> Dict[str, float]:
        rate = float(self.paramwise_cfg["layer_decay_rate"])
        mult = float(self.paramwise_cfg["backbone_lr_mult"])
        if rate == 1.0 and mult == 1.0:
            return {}
        prefix, backbone = _find_backbone(model)
        top = sum(backbone.depths) + 1
        lead = f"{prefix}." if prefix else ""
        return {lead + name: mult * rate ** (top - backbone_layer_id(name, backbone.depths))
                for name, _ in backbone.named_parameters()}

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = "",
                   is_dcn_module: Optional[bool] = None) -> None:
        """Append the parameter groups of ``module`` to ``params`` (called by the parent's
        ``__call__`` with the whole model).

        Args:
            params: List of parameter groups, extended in place.
            module: The model.
            prefix: Must be empty: groups are built for the whole model at once.
            is_dcn_module: Unused by this constructor; must be None.
        """
        if prefix or is_dcn_module is not None:
            raise ValueError("SwinLayerDecayOptimWrapperConstructor builds the groups of the whole "
                             "model at once; call add_params(params, model) without prefix")
        no_decay_keys = tuple(self.paramwise_cfg["no_decay_keys"])
        norms = _norm_parameter_names(module)
        scales = self._lr_scales(module)
        groups: Dict[Tuple[float, bool], dict] = {}
        frozen = 0
        for name, param in module.named_parameters():
            if not param.requires_grad:
                frozen += 1
                continue
            decay = name not in norms and not any(k in name for k in no_decay_keys)
            scale = scales.get(name, 1.0)
            group = groups.get((scale, decay))
            if group is None:
                group = groups[(scale, decay)] = dict(params=[], param_names=[],
                                                      lr=self.base_lr * scale, lr_scale=scale)
                if self.base_wd is not None:
                    group["weight_decay"] = self.base_wd if decay else 0.0
            group["params"].append(param)
            group["param_names"].append(name)
        for (scale, decay), group in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1])):
            params.append(group)
            print_log(f"param group lr_scale={scale:.4g} weight_decay="
                      f"{group.get('weight_decay', 'default')}: {len(group['params'])} tensors",
                      logger="current")
        if frozen:
            print_log(f"{frozen} frozen parameter tensors (requires_grad=False) are not optimized",
                      logger="current")


#: The former name (it serves both versions), kept for code that uses it.
Swinv2LayerDecayOptimWrapperConstructor = SwinLayerDecayOptimWrapperConstructor
