"""The peer SwinV2 implementations (Hugging Face transformers, timm, mmpretrain, torchvision) for the
parity tests and ``tools/benchmark.py``: each built with seeded random, non-trivial weights, its stage
features, and its checkpoint in the peer's own format, so that checkpoint conversion can be checked
against the implementation that produced the weights.

Weights are perturbed everywhere a mapping error could hide (:func:`swinv2_backbone.testing.randomize_`):
LayerNorm weights and biases, ``logit_scale`` (per head), q/v biases, the unused k third of
torchvision's ``qkv.bias`` and the position-bias MLP. The official format is not pip-installable, so
:func:`official_checkpoint` writes the official key layout (buffers, final ``norm``, ``head``) from a
timm model, following the layout table in ``/work/shared/reference``; its features are timm's.

The Swin V1 peers are in :mod:`swinv2_backbone.testing.peers_v1`, which shares this module's
:class:`Variant`, :class:`Peer`, the official layout and the file helpers.

The peer libraries are test-only dependencies: they are imported inside the functions that need
them, so importing this module needs torch alone.
"""
from __future__ import annotations

import math
import os
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checkpoint import convert_checkpoint
from ..models import ARCH_SETTINGS, Swinv2Backbone
from . import mmpretrain_stub, randomize_

Tensor = torch.Tensor
ImageSize = Union[int, Tuple[int, int]]
IMAGE_SIZE = 256
PEERS = ("hf", "timm", "mmpretrain", "torchvision")
#: The distribution that provides each peer.
PEER_PACKAGES = {"hf": "transformers", "timm": "timm", "mmpretrain": "mmpretrain",
                 "torchvision": "torchvision"}


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
    per-stage equivalent, which mmpretrain also gets (it refuses maps smaller than the window
    unless padding).

    Args:
        name: Label for test ids.
        window: The peer's window argument.
        pretrained: Pretrained window per stage (0: none).
        ours: Our per-stage windows (the clamped ones at 256 px for :data:`W16`).
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


def variant_of(arch: str) -> Variant:
    """The :class:`Variant` of one of our ``ARCH_SETTINGS`` presets."""
    preset = ARCH_SETTINGS[arch]
    return Variant(arch, preset.embed_dims, tuple(preset.depths), tuple(preset.num_heads))


def single_window(window: int) -> Windows:
    """``window`` in every stage, no pretrained windows."""
    return Windows(f"w{window}", window, (0, 0, 0, 0), (window,) * 4)


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
def hf_config(variant: Variant, windows: Windows, image_size: ImageSize = IMAGE_SIZE, **kwargs: Any) -> Any:
    """A ``transformers.Swinv2Config`` for ``variant`` at ``image_size`` (256 px by default)."""
    from transformers import Swinv2Config

    size = list(image_size) if isinstance(image_size, tuple) else image_size
    return Swinv2Config(image_size=size, embed_dim=variant.embed_dims, depths=list(variant.depths),
                        num_heads=list(variant.num_heads), window_size=windows.window,
                        pretrained_window_sizes=list(windows.pretrained), drop_path_rate=0.0,
                        out_features=[f"stage{i + 1}" for i in range(len(variant.depths))], **kwargs)


def hf_model(kind: str, variant: Variant, windows: Windows, seed: int,
             image_size: ImageSize = IMAGE_SIZE, **kwargs: Any) -> nn.Module:
    """A randomised HF model: ``kind`` in ``Swinv2Model``, ``Swinv2Backbone``,
    ``Swinv2ForImageClassification``, ``Swinv2ForMaskedImageModeling``."""
    import transformers

    config = hf_config(variant, windows, image_size, **kwargs)
    model = getattr(transformers, kind)(config)
    return randomize_(model, seed).eval()


def hf_stages(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Raw stage outputs (NCHW) of an HF ``Swinv2Backbone``, differentiable."""
    return list(model(x).feature_maps)


def hf_features(model: nn.Module, x: Tensor) -> List[Tensor]:
    """:func:`hf_stages` without autograd."""
    with torch.no_grad():
        return hf_stages(model, x)


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


def timm_stages(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Raw stage outputs (NCHW) of a timm model, differentiable."""
    return model.forward_intermediates(x, intermediates_only=True)


def timm_features(model: nn.Module, x: Tensor) -> Tuple[List[Tensor], Tensor]:
    """Raw stage outputs (NCHW) of a timm model and its final ``norm(stage 4)``, in one pass."""
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
    return list(stages), final.permute(0, 3, 1, 2)


def official_layout(model: nn.Module, buffers: Sequence[str]) -> Dict[str, Tensor]:
    """The official Microsoft key layout of a timm model (either version): patch merging at the
    end of stages, classifier ``head``, and the persistent block buffers the official code saves:
    ``attn.<name>`` for each of ``buffers`` and ``attn_mask`` where a block has one."""
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
            for name in buffers:
                state[f"{prefix}attn.{name}"] = getattr(block.attn, name).clone()
            if getattr(block, "attn_mask", None) is not None:
                state[prefix + "attn_mask"] = block.attn_mask.clone()
    return state


def official_state(model: nn.Module) -> Dict[str, Tensor]:
    """The official SwinV2 layout of a timm ``SwinTransformerV2``'s weights (coordinate tables,
    position indices and shift masks included), see :func:`official_layout`."""
    return official_layout(model, ("relative_coords_table", "relative_position_index"))


def official_checkpoint(model: nn.Module) -> Dict[str, Any]:
    """``{'model': official state}`` as in the released ``.pth`` files."""
    return {"model": official_state(model)}


def simmim_checkpoint(model: nn.Module, seed: int) -> Dict[str, Any]:
    """An official SimMIM pre-training checkpoint of a timm model's weights (the reference layout):
    the official encoder keys under ``encoder.`` with the old ``rpe_mlp`` name (final norm
    ``encoder.norm.*``, buffers included), a seeded ``encoder.mask_token`` ``(1, 1, embed_dim)`` and
    the ``decoder.0`` 1x1 convolution to ``stride**2 * 3`` channels for the pixel shuffle by the
    encoder's stride; no classifier."""
    gen = torch.Generator().manual_seed(seed)
    state = {f"encoder.{k.replace('.cpb_mlp.', '.rpe_mlp.')}": v
             for k, v in official_state(model).items() if not k.startswith("head.")}
    dim, last = model.embed_dim, model.num_features
    channels = model.feature_info[-1]["reduction"] ** 2 * 3
    state["encoder.mask_token"] = torch.randn(1, 1, dim, generator=gen)
    state["decoder.0.weight"] = torch.randn(channels, last, 1, 1, generator=gen) / math.sqrt(last)
    state["decoder.0.bias"] = torch.randn(channels, generator=gen)
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


def torchvision_stages(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Raw stage outputs (NCHW) of a torchvision SwinV2, differentiable: the odd entries of its
    ``features`` (the even ones are the patch embedding and the merges)."""
    outs = []
    for index, layer in enumerate(model.features):
        x = layer(x)
        if index % 2 == 1:
            outs.append(x.permute(0, 3, 1, 2))
    return outs


def torchvision_features(model: nn.Module, x: Tensor) -> Tuple[List[Tensor], Tensor]:
    """Raw stage outputs (NCHW) of a torchvision SwinV2 and its final ``norm(stage 4)``."""
    with torch.no_grad():
        outs = torchvision_stages(model, x)
        final = model.norm(outs[-1].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return outs, final


# ----------------------------------------------------------------------------- mmpretrain
def import_mmpretrain() -> types.ModuleType:
    """``mmpretrain.models``, imported with its multimodal package stubbed out
    (:mod:`swinv2_backbone.testing.mmpretrain_stub`; the SwinV2 backbone does not need it)."""
    mmpretrain_stub.install()
    import mmpretrain.models

    return mmpretrain.models


def mmpretrain_backbone_cfg(variant: Variant, windows: Windows, img_size: ImageSize = IMAGE_SIZE
                            ) -> Dict[str, Any]:
    """The config of an mmpretrain ``SwinTransformerV2`` returning all four stages (output norms
    ``norm0..3``). mmpretrain refuses maps smaller than the window (unless padding), so it gets
    our per-stage windows."""
    arch = dict(embed_dims=variant.embed_dims, depths=list(variant.depths),
                num_heads=list(variant.num_heads), extra_norm_every_n_blocks=0)
    return dict(type="SwinTransformerV2", arch=arch, img_size=img_size, window_size=list(windows.ours),
                pretrained_window_sizes=list(windows.pretrained), out_indices=(0, 1, 2, 3),
                drop_path_rate=0.0)


def mmpretrain_backbone(variant: Variant, windows: Windows, seed: int,
                        img_size: ImageSize = IMAGE_SIZE) -> nn.Module:
    """A randomised mmpretrain ``SwinTransformerV2`` (:func:`mmpretrain_backbone_cfg`)."""
    models = import_mmpretrain()
    cfg = mmpretrain_backbone_cfg(variant, windows, img_size)
    model = models.backbones.SwinTransformerV2(**{k: v for k, v in cfg.items() if k != "type"})
    randomize_(model, seed).eval()  # its train() override returns None, not the module
    return model


def mmpretrain_classifier(variant: Variant, windows: Windows, seed: int) -> nn.Module:
    """A randomised mmpretrain ``ImageClassifier`` with the backbone of
    :func:`mmpretrain_backbone_cfg` at 256 px and a linear head."""
    model = mmpretrain_image_classifier(
        backbone=mmpretrain_backbone_cfg(variant, windows),
        neck=dict(type="GlobalAveragePooling"),
        head=dict(type="LinearClsHead", num_classes=10, in_channels=variant.embed_dims * 8),
    )
    return randomize_(model, seed).eval()


def mmpretrain_image_classifier(**parts: Any) -> nn.Module:
    """mmpretrain's ``ImageClassifier(**parts)``, built in mmpretrain's registry scope: it builds its
    default ``ClsDataPreprocessor`` by name, which another default scope (one a runner or
    ``init_default_scope`` left set earlier in the process) does not hold."""
    from mmengine.registry import DefaultScope

    models = import_mmpretrain()
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        return models.ImageClassifier(**parts)


def mmpretrain_stages(backbone: nn.Module, x: Tensor) -> List[Tensor]:
    """Normed stage outputs (NCHW) of an mmpretrain ``SwinTransformerV2``, differentiable."""
    return list(backbone(x))


def mmpretrain_features(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Normed stage outputs (NCHW) of an mmpretrain classifier's backbone."""
    with torch.no_grad():
        return mmpretrain_stages(model.backbone, x)


def mmpretrain_checkpoint(model: nn.Module) -> Dict[str, Any]:
    """What mmpretrain's runner saves: ``{'meta': ..., 'state_dict': ...}``."""
    return {"meta": {"mmpretrain_version": "1.2.0", "epoch": 1}, "state_dict": model.state_dict()}


# ----------------------------------------------------------------------------- one peer by name
@dataclass(frozen=True)
class Peer:
    """A peer model with random weights and its differentiable forward.

    Args:
        name: One of :data:`PEERS` (or of :data:`~swinv2_backbone.testing.peers_v1.V1_PEERS`).
        module: The model (in eval mode as built).
        stages: Input batch -> stage feature maps (NCHW): raw, but normed (``norm0..3``) for
            mmpretrain and mmdet.
    """

    name: str
    module: nn.Module
    stages: Callable[[Tensor], Sequence[Tensor]]


def build_peer(name: str, variant: Variant, windows: Windows, img_size: Tuple[int, int],
               seed: int) -> Peer:
    """The peer ``name`` at ``variant`` / ``windows`` for ``img_size`` inputs, with seeded random
    weights (:func:`randomize_`: fresh initialisations zero timm's res-post-norm weights, which
    makes every block the identity, and agreement then proves little). Its ``state_dict()`` is
    in the peer's own layout."""
    if name == "hf":
        model = hf_model("Swinv2Backbone", variant, windows, seed, image_size=img_size)
        return Peer(name, model, lambda x: hf_stages(model, x))
    if name == "timm":
        model = timm_model(variant, windows, seed, num_classes=0, img_size=img_size)
        return Peer(name, model, lambda x: timm_stages(model, x))
    if name == "mmpretrain":
        model = mmpretrain_backbone(variant, windows, seed, img_size)
        return Peer(name, model, lambda x: mmpretrain_stages(model, x))
    if name == "torchvision":
        model = torchvision_model(variant, windows.window, seed)
        return Peer(name, model, lambda x: torchvision_stages(model, x))
    raise ValueError(f"unknown peer {name!r}; choose from {PEERS}")


def small_map_rule(source: Optional[str]) -> str:
    """Our ``small_map`` rule that reproduces ``source``: ``'hf'`` and ``'timm'`` have their own
    (window size, shift and roll order on maps that are small or not window multiples), the others
    pad to the window (``'pad'``). timm's rectangular window on a non-square map shorter than the
    window on one side is not reproduced: a comparison then shows it."""
    return source if source in ("hf", "timm") else "pad"


def ours_with_weights(state: Optional[Mapping[str, Tensor]], source: Optional[str], variant: Variant,
                      windows: Windows, out_norm: bool, **kwargs: Any) -> Swinv2Backbone:
    """Our backbone with ``source``'s weights ``state`` converted through the checkpoint adapters
    (none: its own initialisation), following the peer's rule for small or padded stage maps.
    Without ``out_norm`` the peer's final norm has no place here, so loading is not strict."""
    model = Swinv2Backbone(**ours(variant, windows, out_norm, small_map=small_map_rule(source), **kwargs))
    if state is not None:
        model.load_state_dict(convert_checkpoint(dict(state), format=source).state_dict, strict=out_norm)
    return model


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
