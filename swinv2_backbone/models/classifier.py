"""SwinClassifier: image classification on a SwinV2 or Swin V1 backbone, equal to the peers'
classifiers.

The official code, Hugging Face ``Swinv2ForImageClassification`` / ``SwinForImageClassification``,
timm, torchvision and mmpretrain all classify as: last stage -> final LayerNorm -> mean over the
tokens -> Linear. Here the backbone is built up to its last stage only, with that stage's output
norm ``norm{last}`` as the final LayerNorm (the native checkpoint layout maps their final norm to
it), and ``head`` is the Linear.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import torch
from torch import nn

from .args import check_flag, check_int, check_number
from .weights import load_registered_weights, pretrained_init_cfg
from .base_module import BaseModule
from .versions import backbone_class

#: Backbone arguments the classifier fixes: one output, the last stage, with its norm.
_FIXED_BACKBONE_ARGS = ("out_indices", "out_features", "out_norm")


class SwinClassifier(BaseModule):
    """Swin image classifier (SwinV2, or Swin V1 with ``backbone_type='SwinBackbone'``):
    ``head(dropout(mean_tokens(norm{last}(stage_last(x)))))``.

    ``forward(x)`` takes ``(N, C, H, W)`` float images and returns ``(N, num_classes)`` logits;
    :meth:`forward_features` returns the pooled ``(N, channels)`` features. A state dict holds
    ``backbone.*`` (native backbone keys) and ``head.weight`` / ``head.bias``.

    Args:
        num_classes: Number of classes (outputs of ``head``).
        class_names: Optional class names by index (``num_classes`` of them), kept for printing
            predictions and exported as HF ``id2label``; loading a checkpoint that names its
            classes sets them.
        head_drop_rate: Dropout on the pooled features before ``head`` (active in training only).
        small_map: Rule for stage maps not larger than the window (see ``Swinv2Backbone``).
            Default ``'official'``: the official classifiers' rule (window = map, no shift), which
            also gives Hugging Face's and timm's results on square inputs; ``'hf'``, ``'timm'`` and
            ``'pad'`` (torchvision's: the window is kept and the map padded) are the others.
        new_head: Loading a checkpoint keeps ``head`` at its initialisation instead of taking the
            checkpoint's classifier (fine-tuning with another class count, or from a backbone
            checkpoint without a classifier). Without it a missing or differently sized classifier
            is an error.
        backbone_type: ``'Swinv2Backbone'`` (default) or ``'SwinBackbone'`` (Swin V1: HF
            ``SwinForImageClassification``, timm/torchvision/mmpretrain/official Swin V1
            classifiers).
        pretrained: Checkpoint path to load at :meth:`init_weights` (any supported format).
        init_cfg: mmengine initialisation config; ``dict(type='Pretrained', checkpoint=PATH)``
            loads through the checkpoint adapters (keys as for ``Swinv2Backbone``).
        **backbone: Arguments of the ``backbone_type`` class (``arch``, ``window_size``,
            ``pretrained_window_sizes`` (SwinV2), ``drop_path_rate``, ...), except ``out_indices``,
            ``out_features`` and ``out_norm``, which the classifier fixes.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        class_names: Optional[Sequence[str]] = None,
        head_drop_rate: float = 0.0,
        small_map: str = "official",
        new_head: bool = False,
        backbone_type: str = "Swinv2Backbone",
        pretrained: Optional[str] = None,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
        **backbone: Any,
    ) -> None:
        fixed = sorted(set(backbone) & set(_FIXED_BACKBONE_ARGS))
        if fixed:
            raise TypeError(f"SwinClassifier fixes {fixed}: it classifies the normed last stage")
        super().__init__(init_cfg=pretrained_init_cfg(pretrained, init_cfg))
        check_int("num_classes", num_classes, 1)
        check_number("head_drop_rate", head_drop_rate, "in [0, 1)", lambda r: 0.0 <= r < 1.0)
        self.backbone = backbone_class(backbone_type)(out_indices=(-1,), out_norm=True,
                                                      small_map=small_map, **backbone)
        self.num_classes = num_classes
        self.class_names = self._checked_names(class_names)
        self.new_head = check_flag("new_head", new_head)
        self.num_features = self.backbone.out_channels[0]
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)
        self._init_head()

    def _checked_names(self, names: Optional[Sequence[str]]) -> Optional[List[str]]:
        if names is None:
            return None
        if isinstance(names, str) or len(names) != self.num_classes:
            raise ValueError(f"class_names must be {self.num_classes} names (num_classes), got "
                             f"{names!r:.80}")
        return [str(n) for n in names]

    def set_class_names(self, names: Optional[Sequence[str]]) -> None:
        """Set (or with ``None`` clear) the class names; there must be ``num_classes`` of them."""
        self.class_names = self._checked_names(names)

    def _init_head(self) -> None:
        """The official head initialisation: truncated normal (std 0.02) weight, zero bias."""
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def init_weights(self) -> None:
        """Load the checkpoint named by ``init_cfg``/``pretrained`` (backbone and, unless
        ``new_head``, classifier; strict), or re-apply the default initialisation."""
        if load_registered_weights(self):
            return
        self.backbone.init_weights()
        self._init_head()
        if self.init_cfg is not None:
            super().init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` images -> ``(N, num_features)``: the final-normed last stage averaged
        over its positions."""
        (last,) = self.backbone(x)
        return last.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float images -> ``(N, num_classes)`` logits."""
        return self.head(self.head_drop(self.forward_features(x)))


#: The former name (it serves both versions), kept for code and configs that use it.
Swinv2Classifier = SwinClassifier
