"""SimMIM masked image modeling with the SwinV2 or Swin V1 encoder (pure torch): the block mask generator, the
one-layer decoder, the (optionally locally normalised) L1 loss on the masked pixels, and
:class:`SimMIM`, which puts them together.

Numerically HF ``Swinv2ForMaskedImageModeling`` / ``SwinForMaskedImageModeling`` and the official
SimMIM code: the mask token replaces
the masked patch embeddings after the patch LayerNorm, the last stage goes through its output
LayerNorm, a 1x1 convolution to ``stride**2 * in_channels`` channels and ``PixelShuffle(stride)``,
and the loss is ``(|x - rec| * m).sum() / (m.sum() + 1e-5) / in_channels`` with the patch mask ``m``
upsampled to pixels.

Sizes: the backbone zero-pads the image bottom/right to its patch grid, so the reconstruction covers
``ceil(H / stride) * stride`` rows; it is cropped to the input's ``H x W`` (the rows and columns
beyond are padding, with nothing to reconstruct), and so is the upsampled mask, so that any size
works and the loss counts real pixels only.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .args import check_int, check_number
from .backbone import SwinBackboneBase, check_patch_mask
from .weights import load_registered_weights, pretrained_init_cfg
from .base_module import BaseModule
from .versions import backbone_class

#: ``'eps'`` of the loss's denominator (HF and official), so that an all-visible mask gives 0.
LOSS_EPS = 1e-5
#: Added to the local variance before the square root in :func:`normalize_targets` (official).
NORM_TARGET_EPS = 1e-6
#: Official SwinV2 pre-training window of the normalised target (``NORM_TARGET.PATCH_SIZE``).
NORM_TARGET_WINDOW = 47


def simmim_mask(image_size: Union[int, Tuple[int, int]], mask_patch_size: int = 32,
                model_patch_size: int = 4, mask_ratio: float = 0.6,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The SimMIM random block mask at patch resolution: ``ceil(n * mask_ratio)`` of the ``n``
    blocks of ``mask_patch_size`` pixels, chosen uniformly without replacement, each expanded to
    ``mask_patch_size / model_patch_size`` patches per side.

    Args:
        image_size: Image ``(H, W)`` (or one int for a square), multiples of ``mask_patch_size``.
        mask_patch_size: Side of a masked block in pixels, a multiple of ``model_patch_size``.
        model_patch_size: The backbone's patch size.
        mask_ratio: Fraction of blocks to mask, in ``[0, 1]``.
        generator: Random source (``None``: torch's global one, which mmengine seeds).

    Returns:
        A bool tensor ``(H / model_patch_size, W / model_patch_size)``, True = masked.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    check_int("model_patch_size", model_patch_size, 1)
    check_int("mask_patch_size", mask_patch_size, 1)
    if mask_patch_size % model_patch_size:
        raise ValueError(f"mask_patch_size {mask_patch_size} must be a multiple of "
                         f"model_patch_size {model_patch_size}")
    check_number("mask_ratio", mask_ratio, "a number in [0, 1]", lambda r: 0.0 <= r <= 1.0)
    for name, side in (("height", h), ("width", w)):
        if isinstance(side, bool) or not isinstance(side, int) or side < 1 or side % mask_patch_size:
            raise ValueError(f"image {name} {side!r} must be a positive multiple of mask_patch_size "
                             f"{mask_patch_size} (crop or resize the image to one); image size "
                             f"{(h, w)}")
    rows, cols = h // mask_patch_size, w // mask_patch_size
    count = math.ceil(rows * cols * mask_ratio)
    blocks = torch.zeros(rows * cols, dtype=torch.bool)
    blocks[torch.randperm(rows * cols, generator=generator)[:count]] = True
    scale = mask_patch_size // model_patch_size
    return blocks.view(rows, cols).repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def _box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of the in-image pixels of the ``window x window`` neighbourhood of every pixel: a
    column pass then a row pass (each averaging over in-image pixels only, so their product of
    counts is the 2-D count), ``2 * window`` additions per pixel instead of ``window**2`` (the
    official 47-px window: 94 instead of 2209); equal to the 2-D ``avg_pool2d`` with
    ``count_include_pad=False`` up to rounding."""
    half = window // 2
    x = F.avg_pool2d(x, (window, 1), stride=1, padding=(half, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, window), stride=1, padding=(0, half), count_include_pad=False)


def local_statistics(images: torch.Tensor, window: int = NORM_TARGET_WINDOW
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The mean and the standard deviation (unbiased variance plus ``NORM_TARGET_EPS``, square
    root) of the ``window x window`` neighbourhood around every pixel of every channel (cut at the
    image border: only pixels inside the image count), each ``(N, C, H, W)``: what
    :func:`normalize_targets` divides by, and what turns a prediction of the normalised target back
    into pixels.

    Args:
        images: ``(N, C, H, W)`` float images.
        window: Odd side of the neighbourhood.
    """
    check_odd_window("window", window)
    mean = _box_mean(images, window)
    mean_sq = _box_mean(images * images, window)
    # pixels in each neighbourhood: the product of the in-image rows and columns it spans
    h, w = images.shape[-2:]
    count = (_span(h, window, images.device)[:, None] * _span(w, window, images.device)[None, :])
    # unbiased; a 1-pixel neighbourhood (only in a 1x1 image) keeps the biased 0
    unbiased = count / (count - 1).clamp(min=1)
    # rounding can make E[x^2] - E[x]^2 slightly negative where the values are constant
    var = ((mean_sq - mean * mean) * unbiased.to(images.dtype)).clamp(min=0)
    return mean, torch.sqrt(var + NORM_TARGET_EPS)


def normalize_targets(images: torch.Tensor, window: int = NORM_TARGET_WINDOW) -> torch.Tensor:
    """The official SwinV2 pre-training target: every pixel of every channel normalised by the mean
    and the unbiased variance of the ``window x window`` neighbourhood around it
    (:func:`local_statistics`).

    Args:
        images: ``(N, C, H, W)`` float images.
        window: Odd side of the neighbourhood.
    """
    mean, std = local_statistics(images, window)
    return (images - mean) / std


def check_odd_window(name: str, window: object) -> int:
    """``window`` if it is an odd int >= 1 (a neighbourhood centred on the pixel), else a clear
    TypeError/ValueError naming ``name``."""
    check_int(name, window, 1)
    if window % 2 == 0:
        raise ValueError(f"{name} must be odd (a window centred on the pixel), got {window}")
    return window


def _span(length: int, window: int, device: torch.device) -> torch.Tensor:
    """For each position along an axis of ``length``, how many positions of its centred
    ``window`` lie inside the axis."""
    pos = torch.arange(length, device=device)
    r = window // 2
    return (torch.clamp(pos + r, max=length - 1) - torch.clamp(pos - r, min=0) + 1).float()


def pixel_mask(mask: torch.Tensor, patch_size: int, hw: Tuple[int, int]) -> torch.Tensor:
    """A ``(N, rows, cols)`` patch mask as ``(N, 1, H, W)`` pixels (each patch repeated
    ``patch_size`` times per axis, then cropped to the image ``hw``)."""
    pixels = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
    return pixels[:, None, :hw[0], :hw[1]]


def simmim_loss(images: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor,
                patch_size: int, norm_target_window: Optional[int] = None) -> torch.Tensor:
    """Mean L1 error per masked pixel and channel: ``(|target - rec| * m).sum() / (m.sum() + 1e-5)
    / C`` with the patch mask ``m`` upsampled to pixels.

    Args:
        images: ``(N, C, H, W)`` input images.
        reconstruction: ``(N, C, H, W)`` reconstruction.
        mask: ``(N, ceil(H / patch_size), ceil(W / patch_size))`` patch mask, bool or 0/1.
        patch_size: The backbone's patch size.
        norm_target_window: If given, the target is :func:`normalize_targets` of the images with
            this window (official SwinV2 pre-training: 47); else the images themselves.
    """
    if reconstruction.shape != images.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and images "
                         f"{tuple(images.shape)} must have the same shape")
    h, w = images.shape[-2:]
    mask = check_patch_mask(mask, images.shape[0], (math.ceil(h / patch_size),
                                                    math.ceil(w / patch_size)))
    target = images if norm_target_window is None else normalize_targets(images, norm_target_window)
    m = pixel_mask(mask, patch_size, (h, w)).to(reconstruction.dtype)
    error = F.l1_loss(target, reconstruction, reduction="none")
    return (error * m).sum() / (m.sum() + LOSS_EPS) / images.shape[1]


class SimMIMDecoder(nn.Sequential):
    """The SimMIM decoder: ``Conv2d(channels, stride**2 * out_channels, 1)`` then
    ``PixelShuffle(stride)`` (keys ``0.weight``, ``0.bias`` as in HF and the official code).

    Args:
        channels: Channels of the encoder's last map.
        stride: Its stride in pixels.
        out_channels: Image channels to reconstruct.
    """

    def __init__(self, channels: int, stride: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(channels, stride ** 2 * out_channels, kernel_size=1),
                         nn.PixelShuffle(stride))


def simmim_backbone(backbone: Union[SwinBackboneBase, Dict[str, Any]]) -> SwinBackboneBase:
    """The encoder of a SimMIM model: an existing ``Swinv2Backbone`` or Swin V1 ``SwinBackbone``, or
    the keyword arguments of one (``type``: ``'Swinv2Backbone'``, the default, or
    ``'SwinBackbone'``), where ``use_mask_token=True``, ``out_norm=True`` and the last stage as the
    only output are the defaults. Either must have a mask token and return its last stage,
    normalised, alone."""
    if isinstance(backbone, dict):
        kwargs = dict(backbone)
        cls = backbone_class(kwargs.pop("type", "Swinv2Backbone"), "backbone type")
        defaults = dict(use_mask_token=True, out_norm=True)
        if kwargs.get("out_features") is None:
            defaults["out_indices"] = (-1,)
        backbone = cls(**{**defaults, **kwargs})
    if not isinstance(backbone, SwinBackboneBase):
        raise TypeError(f"backbone must be a Swinv2Backbone, a SwinBackbone or a dict of its "
                        f"arguments, got {type(backbone).__name__}")
    last = backbone.num_stages - 1
    if backbone.mask_token is None or backbone.out_indices != (last,) or not backbone.out_norm:
        raise ValueError("a SimMIM backbone needs use_mask_token=True, out_indices=(-1,) (the last "
                         f"stage alone) and out_norm=True; got mask token "
                         f"{backbone.mask_token is not None}, out_indices {backbone.out_indices}, "
                         f"out_norm {backbone.out_norm}")
    return backbone


def reconstruct(backbone: SwinBackboneBase, decoder: nn.Module, images: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """The reconstruction of ``images`` (``(N, C, H, W)``) from the visible patches of ``mask``,
    cropped to ``H x W``."""
    (features,) = backbone(images, mask)
    return decoder(features)[..., :images.shape[-2], :images.shape[-1]]


class SimMIM(BaseModule):
    """SimMIM masked image modeling with a :class:`Swinv2Backbone` or Swin V1 ``SwinBackbone``
    encoder (pure torch):
    ``forward(images, mask)`` returns the reconstruction, :meth:`loss` the L1 loss on the masked
    pixels. Keys: ``backbone.*`` (with ``backbone.mask_token`` and ``backbone.norm{last}``, HF's
    final ``layernorm``) and ``decoder.0.weight/bias``.

    A checkpoint given by ``pretrained`` / ``init_cfg=dict(type='Pretrained', ...)`` is loaded whole
    at :meth:`init_weights` (encoder, mask token and decoder, strictly: to continue pre-training)
    from this model's own state dicts and training checkpoints, HF ``Swinv2ForMaskedImageModeling``
    / ``SwinForMaskedImageModeling`` directories and official SimMIM files.

    Args:
        backbone: A :class:`Swinv2Backbone` or ``SwinBackbone`` with ``use_mask_token=True``
            returning its last stage normalised (``out_indices=(-1,)``, ``out_norm=True``), or the
            keyword arguments of one, with ``type='SwinBackbone'`` for Swin V1 (those three are
            then set).
        norm_target_window: Normalise the loss's target per pixel over this odd window
            (:func:`normalize_targets`; the official SwinV2 pre-training uses
            ``NORM_TARGET_WINDOW`` = 47); ``None`` (default, as HF): the images themselves.
        pretrained: Checkpoint path to load at :meth:`init_weights` (any supported format with a
            mask token and a SimMIM decoder).
        init_cfg: mmengine initialisation config; ``dict(type='Pretrained', checkpoint=PATH)``
            loads through the checkpoint adapters, as ``pretrained`` does.
    """

    def __init__(self, backbone: Union[SwinBackboneBase, Dict[str, Any]],
                 norm_target_window: Optional[int] = None, pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=pretrained_init_cfg(pretrained, init_cfg))
        if norm_target_window is not None:
            check_odd_window("norm_target_window", norm_target_window)
        self.backbone = simmim_backbone(backbone)
        info = self.backbone.feature_info[-1]
        self.patch_size = self.backbone.patch_embed.patch_size
        self.stride = info.stride
        self.norm_target_window = norm_target_window
        self.decoder = SimMIMDecoder(info.channels, info.stride, self.backbone.in_channels)

    def init_weights(self) -> None:
        """Load the checkpoint named by ``init_cfg``/``pretrained`` (strict: encoder, mask token and
        decoder), or re-initialise the backbone (and apply any other mmengine ``init_cfg``)."""
        if load_registered_weights(self):
            return
        self.backbone.init_weights()
        if self.init_cfg is not None:
            super().init_weights()

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``(N, C, H, W)`` of ``images`` ``(N, C, H, W)`` from the patches that
        ``mask`` (``(N, ceil(H / patch_size), ceil(W / patch_size))``, True/1 = masked) leaves
        visible."""
        return reconstruct(self.backbone, self.decoder, images, mask)

    def loss(self, images: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor
             ) -> torch.Tensor:
        """:func:`simmim_loss` with this model's patch size and target."""
        return simmim_loss(images, reconstruction, mask, self.patch_size, self.norm_target_window)
