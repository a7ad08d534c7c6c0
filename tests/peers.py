"""Test utilities: build each peer SwinV2 implementation with random, non-trivial weights, save it in
that peer's own format, and read its features, so that checkpoint conversion can be checked
against the implementation that produced the weights.

Weights are perturbed everywhere a mapping error could hide (:func:`swinv2_backbone.testing.randomize_`):
LayerNorm weights and biases, ``logit_scale`` (per head), q/v biases, the unused k third of
torchvision's ``qkv.bias`` and the position-bias MLP. The official format is not pip-installable, so :func:`official_checkpoint` writes
the official key layout (buffers, final ``norm``, ``head``) from a timm model, following the
layout table in ``/work/shared/reference``; its features are timm's.
"""
from __future__ import annotations

import math
import os
import sys
import types
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from swinv2_backbone.testing import randomize_

Tensor = torch.Tensor
IMAGE_SIZE = 256


@dataclass(frozen=True)
class Variant:
    """An architecture to test.

    Args:
        name: Label for test ids.
        embed_dims: Channels of stage 1.
        depths: Blocks per stage.
        num_heads: Heads per stage.
    """

    name: str
    embed_dims: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]


@dataclass(frozen=True)
class Windows:
    """A window setting: the peer's single window (clamped to the map by the peers) and our
    per-stage equivalent at 256 px.

    Args:
        name: Label for test ids.
        window: The peer's window argument.
        pretrained: Pretrained window per stage (0: none).
        ours: Our per-stage windows at 256 px.
    """

    name: str
    window: int
    pretrained: Tuple[int, ...]
    ours: Tuple[int, ...]


TINY = Variant("tiny", 96, (2, 2, 6, 2), (3, 6, 12, 24))
#: 'base' widths and heads with reduced depth, to keep CPU time low.
BASE_SHALLOW = Variant("base-shallow", 128, (2, 2, 2, 2), (4, 8, 16, 32))
#: Small model for tests that do not check parity at the release resolution.
MINI = Variant("mini", 32, (1, 1, 2, 1), (1, 2, 4, 8))
W8 = Windows("w8", 8, (0, 0, 0, 0), (8, 8, 8, 8))
W16 = Windows("w16-pre12", 16, (12, 12, 12, 6), (16, 16, 16, 8))


def image(seed: int = 0, size: int = IMAGE_SIZE) -> Tensor:
    """A seeded random ``(1, 3, size, size)`` input."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def ours(variant: Variant, windows: Windows, out_norm: bool, **kwargs: Any) -> Dict[str, Any]:
    """``Swinv2Backbone`` keyword arguments for ``variant`` at ``windows``."""
    return dict(arch=None, embed_dims=variant.embed_dims, depths=variant.depths,
                num_heads=variant.num_heads, window_size=windows.ours,
                pretrained_window_sizes=windows.pretrained, out_norm=out_norm,
                drop_path_rate=0.0, **kwargs)


def nchw_from_tokens(tokens: Tensor, side: int) -> Tensor:
    """``(B, side*side, C)`` tokens -> ``(B, C, side, side)``."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, side, side)


# ----------------------------------------------------------------------------- Hugging Face
def hf_config(variant: Variant, windows: Windows, **kwargs: Any):
    """A ``transformers.Swinv2Config`` for ``variant`` at 256 px."""
    from transformers import Swinv2Config

    return Swinv2Config(image_size=IMAGE_SIZE, embed_dim=variant.embed_dims, depths=list(variant.depths),
                        num_heads=list(variant.num_heads), window_size=windows.window,
                        pretrained_window_sizes=list(windows.pretrained), drop_path_rate=0.0,
                        out_features=[f"stage{i + 1}" for i in range(len(variant.depths))], **kwargs)


def hf_model(kind: str, variant: Variant, windows: Windows, seed: int, **kwargs: Any) -> nn.Module:
    """A randomised HF model: ``kind`` in ``Swinv2Model``, ``Swinv2Backbone``,
    ``Swinv2ForImageClassification``, ``Swinv2ForMaskedImageModeling``."""
    import transformers

    config = hf_config(variant, windows, **kwargs)
    model = getattr(transformers, kind)(config)
    return randomize_(model, seed).eval()


def hf_features(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Raw stage outputs (NCHW) of an HF ``Swinv2Backbone``."""
    with torch.no_grad():
        return list(model(x).feature_maps)


def hf_final(model: nn.Module, x: Tensor) -> Tensor:
    """``layernorm(stage 4)`` of an HF ``Swinv2Model`` as NCHW."""
    with torch.no_grad():
        tokens = model(x).last_hidden_state
    return nchw_from_tokens(tokens, math.isqrt(tokens.shape[1]))


# ----------------------------------------------------------------------------- timm / official
def timm_model(variant: Variant, windows: Windows, seed: int, num_classes: int = 10,
               img_size: Any = IMAGE_SIZE) -> nn.Module:
    """A randomised timm ``SwinTransformerV2`` for ``img_size`` inputs (256 px by default)."""
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    model = SwinTransformerV2(img_size=img_size, embed_dim=variant.embed_dims, depths=variant.depths,
                              num_heads=variant.num_heads, window_size=windows.window,
                              pretrained_window_sizes=windows.pretrained, num_classes=num_classes,
                              drop_path_rate=0.0)
    return randomize_(model, seed).eval()


def timm_features(model: nn.Module, x: Tensor) -> Tuple[List[Tensor], Tensor]:
    """Raw stage outputs (NCHW) of a timm model and its final ``norm(stage 4)``, in one pass."""
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
    return list(stages), final.permute(0, 3, 1, 2)


def official_state(model: nn.Module) -> Dict[str, Tensor]:
    """The official Microsoft key layout of a timm model: patch merging at the end of stages,
    classifier ``head``, and the persistent buffers (coordinate tables, position indices,
    shift masks) the official code saves."""
    state: Dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        if parts[0] == "head" and parts[1] == "fc":
            parts = ["head"] + parts[2:]
        state[".".join(parts)] = value
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            prefix = f"layers.{i}.blocks.{j}."
            state[prefix + "attn.relative_coords_table"] = block.attn.relative_coords_table.clone()
            state[prefix + "attn.relative_position_index"] = block.attn.relative_position_index.clone()
            if block.attn_mask is not None:
                state[prefix + "attn_mask"] = block.attn_mask.clone()
    return state


def official_checkpoint(model: nn.Module) -> Dict[str, Any]:
    """``{'model': official state}`` as in the released ``.pth`` files."""
    return {"model": official_state(model)}


def simmim_checkpoint(model: nn.Module, seed: int) -> Dict[str, Any]:
    """An official SimMIM pre-training checkpoint: the encoder under ``encoder.`` with the old
    ``rpe_mlp`` name, a mask token and the pixel-shuffle ``decoder``; no classifier."""
    gen = torch.Generator().manual_seed(seed)
    state = {f"encoder.{k.replace('.cpb_mlp.', '.rpe_mlp.')}": v
             for k, v in official_state(model).items() if not k.startswith("head.")}
    dim, last = model.embed_dim, model.num_features
    state["encoder.mask_token"] = torch.randn(1, 1, dim, generator=gen)
    state["decoder.0.weight"] = torch.randn(32 * 32 * 3, last, 1, 1, generator=gen)
    state["decoder.0.bias"] = torch.randn(32 * 32 * 3, generator=gen)
    return {"model": state}


# ----------------------------------------------------------------------------- torchvision
def torchvision_model(variant: Variant, window: int, seed: int, num_classes: int = 10) -> nn.Module:
    """A randomised torchvision SwinV2 (one window for all stages, no pretrained windows)."""
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    model = SwinTransformer(patch_size=[4, 4], embed_dim=variant.embed_dims, depths=list(variant.depths),
                            num_heads=list(variant.num_heads), window_size=[window, window],
                            stochastic_depth_prob=0.0, num_classes=num_classes,
                            block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    return randomize_(model, seed).eval()


def torchvision_features(model: nn.Module, x: Tensor) -> Tuple[List[Tensor], Tensor]:
    """Raw stage outputs (NCHW) of a torchvision SwinV2 and its final ``norm(stage 4)``."""
    outs = []
    with torch.no_grad():
        for index, layer in enumerate(model.features):
            x = layer(x)
            if index % 2 == 1:
                outs.append(x.permute(0, 3, 1, 2))
        final = model.norm(x).permute(0, 3, 1, 2)
    return outs, final


# ----------------------------------------------------------------------------- mmpretrain
def import_mmpretrain() -> types.ModuleType:
    """Import ``mmpretrain.models`` with its multimodal package stubbed out (mmpretrain 1.2 cannot
    import it with current transformers; the SwinV2 backbone does not need it)."""
    sys.modules.setdefault("mmpretrain.models.multimodal", types.ModuleType("mmpretrain.models.multimodal"))
    import mmpretrain.models

    return mmpretrain.models


def mmpretrain_classifier(variant: Variant, windows: Windows, seed: int) -> nn.Module:
    """A randomised mmpretrain ``ImageClassifier`` with a ``SwinTransformerV2`` backbone returning
    all four stages (output norms ``norm0..3``) and a linear head. mmpretrain refuses maps smaller
    than the window (unless padding), so it gets our per-stage windows."""
    models = import_mmpretrain()
    arch = dict(embed_dims=variant.embed_dims, depths=list(variant.depths),
                num_heads=list(variant.num_heads), extra_norm_every_n_blocks=0)
    model = models.ImageClassifier(
        backbone=dict(type="SwinTransformerV2", arch=arch, img_size=IMAGE_SIZE, window_size=list(windows.ours),
                      pretrained_window_sizes=list(windows.pretrained), out_indices=(0, 1, 2, 3),
                      drop_path_rate=0.0),
        neck=dict(type="GlobalAveragePooling"),
        head=dict(type="LinearClsHead", num_classes=10, in_channels=variant.embed_dims * 8),
    )
    return randomize_(model, seed).eval()


def mmpretrain_features(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Normed stage outputs (NCHW) of an mmpretrain classifier's backbone."""
    with torch.no_grad():
        return list(model.backbone(x))


def mmpretrain_checkpoint(model: nn.Module) -> Dict[str, Any]:
    """What mmpretrain's runner saves: ``{'meta': ..., 'state_dict': ...}``."""
    return {"meta": {"mmpretrain_version": "1.2.0", "epoch": 1}, "state_dict": model.state_dict()}


# ----------------------------------------------------------------------------- comparison
def final_norm(stage: Tensor, state: Dict[str, Tensor], key: str) -> Tensor:
    """Apply the LayerNorm ``key`` (e.g. ``'norm3'``) of ``state`` to an NCHW stage output."""
    weight, bias = state[f"{key}.weight"], state[f"{key}.bias"]
    normed = torch.nn.functional.layer_norm(stage.permute(0, 2, 3, 1), weight.shape, weight, bias)
    return normed.permute(0, 3, 1, 2)


def max_abs_diffs(ours_out: Sequence[Tensor], theirs: Sequence[Tensor]) -> List[float]:
    """Per-stage max absolute difference; shapes must agree."""
    assert len(ours_out) == len(theirs), (len(ours_out), len(theirs))
    diffs = []
    for a, b in zip(ours_out, theirs):
        assert a.shape == b.shape, (a.shape, b.shape)
        diffs.append(float((a - b).abs().max()))
    return diffs


def save_torch(obj: Any, directory: str, name: str) -> str:
    """``torch.save`` into ``directory/name``; returns the path."""
    path = os.path.join(directory, name)
    torch.save(obj, path)
    return path


def save_safetensors(state: Dict[str, Tensor], directory: str, name: str,
                     metadata: Optional[Dict[str, str]] = None) -> str:
    """Write ``state`` as safetensors into ``directory/name``; returns the path."""
    from safetensors.torch import save_file

    path = os.path.join(directory, name)
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata=metadata)
    return path
