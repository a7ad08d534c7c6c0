"""Pictures of SimMIM reconstructions: for one image, three panels side by side (the input, the
input with its masked patches greyed, and the reconstruction), as ``tools/simmim_pictures.py`` and
``tools/demo_simmim.py`` draw them.

The third panel shows the input's own pixels where the model saw them and the reconstruction where
they were masked: the loss counts masked pixels only, so the output at visible patches is never
trained and would only distract. Reconstructions are de-normalised to pixels with the data
preprocessor's mean and std. A model trained on the locally normalised target
(``norm_target_window``) predicts every pixel relative to its neighbourhood's mean and std; the
picture then de-normalises it with those statistics computed on the *whole input*, masked pixels
included (the model cannot know them), and its panel says so (``rec. (local stats)``).

Masks are drawn from a generator seeded per image (``seed + index``), so a picture repeats
whatever else runs in the process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from ..compat import load_weights_only
from ..features.images import Size, read_image
from ..models.simmim import local_statistics, pixel_mask, simmim_mask
from .simmim import SwinSimMIM

#: Grey (0-255) that replaces the masked pixels in the middle panel.
MASK_GREY = 128
#: Height of the label strip above the panels, and the white gap between panels, in pixels.
LABEL_HEIGHT = 14
GAP = 2


@dataclass(frozen=True)
class MaskSettings:
    """How the pictures size their inputs and draw their masks (a config's pipeline's values).

    Args:
        image_size: Model input ``(H, W)``; images are resized to it.
        mask_patch_size: Side of a masked block in pixels.
        model_patch_size: The backbone's patch size.
        mask_ratio: Fraction of blocks masked.
    """

    image_size: Size
    mask_patch_size: int
    model_patch_size: int
    mask_ratio: float


def _find_transform(pipeline: Sequence[Dict[str, Any]], name: str) -> Optional[Dict[str, Any]]:
    """The first transform config of type ``name`` in ``pipeline``, or None.

    Args:
        pipeline: Transform configs.
        name: The transform's registered type.
    """
    return next((dict(t) for t in pipeline if t.get("type") == name), None)


def mask_settings(cfg: Config, image_size: Optional[Size] = None) -> MaskSettings:
    """The input size and mask arguments of a SimMIM config's training pipeline
    (``SimMIMRandomResizedCrop``'s size, ``SimMIMMaskGenerator``'s arguments), so that the pictures
    mask as the training did.

    Args:
        cfg: A SimMIM config (``train_dataloader.dataset.pipeline``).
        image_size: Input size to use instead of the crop's (needed without a crop transform).

    Raises:
        ValueError: No mask generator in the pipeline, or no size to use.
    """
    pipeline = cfg.train_dataloader.dataset.pipeline
    generator = _find_transform(pipeline, "SimMIMMaskGenerator")
    if generator is None:
        raise ValueError("the config's training pipeline has no SimMIMMaskGenerator to take the "
                         "mask settings from")
    if image_size is None:
        crop = _find_transform(pipeline, "SimMIMRandomResizedCrop")
        if crop is None:
            raise ValueError("the config's training pipeline has no SimMIMRandomResizedCrop: give "
                             "the input size")
        image_size = crop["size"]
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return MaskSettings(image_size=size, mask_patch_size=generator.get("mask_patch_size", 32),
                        model_patch_size=generator.get("model_patch_size", 4),
                        mask_ratio=generator.get("mask_ratio", 0.6))


def load_simmim(cfg: Config, checkpoint: Union[str, os.PathLike]) -> SwinSimMIM:
    """The config's ``SwinSimMIM`` with the weights of a checkpoint its runner saved
    (``{'state_dict': ...}``, weights-only loading, strict), in eval mode.

    Args:
        cfg: A SimMIM config.
        checkpoint: A checkpoint of that model.

    Raises:
        ValueError: The model is not a ``SwinSimMIM`` or expects BGR inputs.
    """
    model_cfg = dict(cfg.model)
    model = MODELS.build(model_cfg)
    if not isinstance(model, SwinSimMIM):
        raise ValueError(f"the config's model is a {type(model).__name__}, not a SwinSimMIM")
    preprocessor = model_cfg.get("data_preprocessor") or {}
    if not preprocessor.get("bgr_to_rgb", True):
        # the pictures feed RGB images; a model trained on BGR would see the channels swapped
        raise ValueError("the model's data_preprocessor has bgr_to_rgb=False (trained on BGR), "
                         "which the pictures do not support")
    state = load_weights_only(os.fspath(checkpoint), map_location="cpu")
    model.load_state_dict(state.get("state_dict", state), strict=True)
    return model.eval()


def seeded_mask(settings: MaskSettings, seed: int) -> torch.Tensor:
    """The SimMIM mask of one picture, ``(H / model_patch_size, W / model_patch_size)`` bool, drawn
    from a generator seeded with ``seed`` alone.

    Args:
        settings: Input size and mask arguments.
        seed: The picture's seed.
    """
    return simmim_mask(settings.image_size, settings.mask_patch_size, settings.model_patch_size,
                       settings.mask_ratio, torch.Generator().manual_seed(seed))


def _normalisation(model: SwinSimMIM) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of the model's data preprocessor as ``(3, 1, 1)`` tensors (0 and 1 where it
    does not normalise).

    Args:
        model: The model whose ``data_preprocessor`` normalised its training inputs.
    """
    pre = model.data_preprocessor
    mean = getattr(pre, "mean", None)
    std = getattr(pre, "std", None)
    if mean is None or std is None:
        return torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    return mean.detach().cpu().float().view(-1, 1, 1), std.detach().cpu().float().view(-1, 1, 1)


@torch.no_grad()
def reconstruction_panels(model: SwinSimMIM, image: torch.Tensor, mask: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three panels of one image, each ``(3, H, W)`` uint8 RGB: the input, the input with the
    masked pixels set to :data:`MASK_GREY`, and the input's visible pixels with the de-normalised
    reconstruction at the masked ones (see the module docstring for the normalised target).

    Args:
        model: A ``SwinSimMIM`` in eval mode (on the CPU or any device).
        image: ``(3, H, W)`` uint8 RGB.
        mask: ``(H / patch, W / patch)`` bool patch mask, True = masked.
    """
    device = next(model.parameters()).device
    mean, std = _normalisation(model)
    x = ((image.float() - mean) / std)[None]
    rec = model(x.to(device), mask[None].to(device), mode="tensor").float().cpu()
    if model.norm_target_window is not None:
        local_mean, local_std = local_statistics(x, model.norm_target_window)
        rec = rec * local_std + local_mean
    rec_pixels = (rec[0] * std + mean).round().clamp(0, 255).to(torch.uint8)
    hidden = pixel_mask(mask[None], model.patch_size, tuple(image.shape[-2:]))[0]  # (1, H, W)
    masked = torch.where(hidden, torch.full_like(image, MASK_GREY), image)
    return image, masked, torch.where(hidden, rec_pixels, image)


def panel_labels(model: SwinSimMIM, mask_ratio: float) -> Tuple[str, str, str]:
    """The labels above the three panels; the third says when the normalised target's local
    statistics were taken from the input.

    Args:
        model: The model the panels come from.
        mask_ratio: Fraction of blocks masked.
    """
    third = "rec. (local stats)" if model.norm_target_window is not None else "reconstruction"
    return "input", f"masked {mask_ratio:.0%}", third


def compose(panels: Sequence[torch.Tensor], labels: Sequence[str]) -> np.ndarray:
    """The panels side by side on white, :data:`GAP` pixels apart, each under its label: an
    ``(H + LABEL_HEIGHT, W_total, 3)`` uint8 RGB array.

    Args:
        panels: ``(3, H, W)`` uint8 pictures of one height.
        labels: One label per panel.
    """
    h = panels[0].shape[1]
    width = sum(p.shape[2] for p in panels) + GAP * (len(panels) - 1)
    canvas = np.full((h + LABEL_HEIGHT, width, 3), 255, np.uint8)
    left = 0
    for panel, label in zip(panels, labels):
        w = panel.shape[2]
        canvas[LABEL_HEIGHT:, left:left + w] = panel.permute(1, 2, 0).numpy()
        cv2.putText(canvas, label, (left + 2, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)
        left += w + GAP
    return canvas


def write_picture(model: SwinSimMIM, settings: MaskSettings, image_path: Union[str, os.PathLike],
                  out_file: Union[str, os.PathLike], seed: int) -> Path:
    """Read an image (resized to ``settings.image_size``), mask it with :func:`seeded_mask`,
    reconstruct it and write input | masked | reconstruction as one PNG.

    Args:
        model: A ``SwinSimMIM`` in eval mode.
        settings: Input size and mask arguments.
        image_path: The image file.
        out_file: The PNG to write (its folder must exist).
        seed: The mask's seed.

    Raises:
        swinv2_backbone.features.ImageReadError: The image cannot be read.
    """
    image = read_image(image_path, settings.image_size)
    panels = reconstruction_panels(model, image, seeded_mask(settings, seed))
    canvas = compose(panels, panel_labels(model, settings.mask_ratio))
    if not cv2.imwrite(os.fspath(out_file), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {os.fspath(out_file)!r}")
    return Path(out_file)
