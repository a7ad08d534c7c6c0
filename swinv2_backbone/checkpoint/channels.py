"""Pretrained RGB weights for a model with another number of input channels.

Only the patch embedding sees the image, so only its convolution weight ``(C, 3, p, p)`` changes:

* one channel (grey): the sum over the RGB channels, so that a grey image gives the features the
  RGB weights give for that image replicated to three channels;
* ``N`` channels otherwise: the RGB weights repeated cyclically (``R, G, B, R, G, ...``) up to ``N``
  and scaled by ``3 / N``, so that the response to an input that is the same in every channel
  keeps its size.

A checkpoint with any channel count other than 3 or the model's is refused.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .common import CheckpointError
from .keys import StateDict, Tensor

#: The native key of the patch-embedding convolution weight ``(C, in_channels, p, p)``.
PATCH_WEIGHT = "patch_embed.proj.weight"
#: The channels the adapted weights were trained with.
RGB = 3


def adapt_input_conv(weight: Tensor, channels: int) -> Tensor:
    """An RGB convolution ``weight`` ``(C, 3, kh, kw)`` for ``channels`` input channels: the sum
    over RGB for one channel, else the RGB weights repeated cyclically to ``channels`` and scaled
    by ``3 / channels`` (computed in float32, returned in the weight's dtype).

    Args:
        weight: Convolution weight with 3 input channels.
        channels: Input channels wanted (at least 1).
    """
    if weight.ndim != 4 or weight.shape[1] != RGB:
        raise ValueError(f"expected an RGB convolution weight (C, 3, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    rgb = weight.float()
    if channels == 1:
        adapted = rgb.sum(dim=1, keepdim=True)
    else:
        order = torch.arange(channels) % RGB
        adapted = rgb[:, order] * (RGB / channels)
    return adapted.to(weight.dtype)


def describe_adaptation(channels: int) -> str:
    """What :func:`adapt_input_conv` does for ``channels``, for the load summary."""
    if channels == 1:
        return "summed over the R, G, B channels"
    order = ", ".join("RGB"[i % RGB] for i in range(channels))
    return f"the R, G, B weights repeated cyclically as ({order}) and scaled by 3/{channels}"


def fit_input_channels(state: StateDict, in_channels: int, source: str
                       ) -> Tuple[StateDict, Optional[str]]:
    """``state`` (native keys) with its patch-embedding weight adapted to ``in_channels`` where the
    checkpoint's is RGB and the model's is not, and the note saying what was done (``None`` when
    nothing was).

    Args:
        state: Native-layout weights.
        in_channels: The model's input channels.
        source: The checkpoint's name, for the messages.

    Raises:
        CheckpointError: The checkpoint's patch embedding takes neither 3 nor ``in_channels``
            channels.
    """
    weight = state.get(PATCH_WEIGHT)
    if weight is None or weight.ndim != 4 or weight.shape[1] == in_channels:
        return state, None
    found = int(weight.shape[1])
    if found != RGB:
        raise CheckpointError(
            f"{source}: the checkpoint's patch embedding takes {found} input channels, the model "
            f"in_channels={in_channels}; only RGB (3-channel) weights are adapted to another count: "
            f"build the model with in_channels={found}")
    adapted = dict(state)
    adapted[PATCH_WEIGHT] = adapt_input_conv(weight, in_channels)
    return adapted, (f"{PATCH_WEIGHT} adapted from 3 to in_channels={in_channels}: "
                     f"{describe_adaptation(in_channels)}")
