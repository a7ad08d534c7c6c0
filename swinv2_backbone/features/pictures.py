"""Feature maps as pictures: the 3 leading principal components as RGB, expanded to image pixels."""
from __future__ import annotations

import io
import math
import os
from typing import Optional, Union

import torch
import torch.nn.functional as F

from ..checkpoint.atomic import write_atomic
from .images import Size, load_pillow


def pca_rgb(feature: torch.Tensor) -> torch.Tensor:
    """The 3 leading principal components of a ``(C, h, w)`` map's C-dim vectors over its ``h*w``
    positions, each min-max scaled to 0-255: a ``(3, h, w)`` uint8 picture.

    A component's sign is chosen so that its largest-magnitude value is positive (deterministic);
    missing components (fewer than 3 channels or positions) and constant ones are 0.

    Args:
        feature: One image's feature map.
    """
    if feature.ndim != 3:
        raise ValueError(f"pca_rgb expects a (C, h, w) map, got shape {tuple(feature.shape)}")
    c, h, w = feature.shape
    x = feature.detach().to("cpu", torch.float32).reshape(c, h * w).T  # (positions, C)
    x = x - x.mean(dim=0, keepdim=True)
    out = torch.zeros(h * w, 3)
    k = min(3, c, h * w)
    if k > 0 and x.abs().max() > 0:
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        proj = x @ vh[:k].T  # (positions, k)
        peak = proj.gather(0, proj.abs().argmax(dim=0, keepdim=True))
        proj = proj * torch.where(peak < 0, -1.0, 1.0)
        low, high = proj.min(dim=0).values, proj.max(dim=0).values
        span = high - low
        scaled = torch.where(span > 0, (proj - low) / span.clamp_min(1e-12), torch.zeros_like(proj))
        out[:, :k] = scaled
    return (out * 255.0).round().to(torch.uint8).T.reshape(3, h, w)


def upsample_to_image(picture: torch.Tensor, stride: int, input_size: Size,
                      output_size: Optional[Size] = None) -> torch.Tensor:
    """Expand a ``(3, h, w)`` per-cell picture to image pixels: each cell becomes the
    ``stride x stride`` block it covers, cropped to ``input_size``, then (if ``output_size``
    differs, e.g. the original size of a resized image) resized with nearest neighbours.

    Args:
        picture: ``(3, ceil(H / stride), ceil(W / stride))`` uint8.
        stride: The map's stride.
        input_size: Model input size ``(H, W)``.
        output_size: Final size, or ``None`` for ``input_size``.
    """
    rows, cols = input_size
    if picture.shape[1] != math.ceil(rows / stride) or picture.shape[2] != math.ceil(cols / stride):
        raise ValueError(f"a {tuple(picture.shape[1:])} map does not have stride {stride} for input "
                         f"size {tuple(input_size)}")
    full = picture.repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)[:, :rows, :cols]
    if output_size is None or tuple(output_size) == tuple(input_size):
        return full.contiguous()
    return F.interpolate(full[None].float(), size=tuple(output_size), mode="nearest")[0].to(torch.uint8)


def save_png(picture: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Write a ``(3, H, W)`` uint8 picture as PNG, crash-safely
    (:func:`swinv2_backbone.checkpoint.write_atomic`: complete or absent under its name).

    Args:
        picture: The picture.
        path: Output file.
    """
    pil_image, _ = load_pillow()
    array = picture.permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    pil_image.fromarray(array).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())
