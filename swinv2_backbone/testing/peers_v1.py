"""The peer Swin V1 implementations (Hugging Face transformers, timm, torchvision, mmpretrain,
mmdet/mmseg) for the V1 parity tests and ``tools/benchmark.py --model v1``: each built with seeded
random, non-trivial weights (:func:`swinv2_backbone.testing.randomize_`), its stage features and its
checkpoint in the peer's own format. :func:`build_v1_peer` pairs a peer with our
:class:`SwinBackbone` holding the same weights, read through the checkpoint adapters from the file
the peer itself writes, under the peer's small-map rule (:data:`V1_PEER_RULES`).

The shared pieces (:class:`~swinv2_backbone.testing.peers.Variant`,
:class:`~swinv2_backbone.testing.peers.Peer`, the official key layout, the file helpers) are in
:mod:`swinv2_backbone.testing.peers`. The peer libraries are test-only dependencies: they are
imported inside the functions that need them, so importing this module needs torch alone.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..checkpoint import load_pretrained
from ..models import SwinBackbone
from . import randomize_
from .peers import (ImageSize, Peer, Variant, import_mmpretrain, mmpretrain_checkpoint,
                    mmpretrain_image_classifier, official_layout, save_safetensors, save_torch,
                    timm_stages, torchvision_stages)

Tensor = torch.Tensor
#: A small Swin V1 to compare with every peer quickly (window 7 at 224 px: stage 4 is one window).
V1_MINI = Variant("v1-mini", 16, (2, 2, 2, 2), (1, 2, 2, 4))
V1_PEERS = ("hf", "timm", "torchvision", "mmpretrain", "mmdet")
#: The distribution that provides each V1 peer.
V1_PEER_PACKAGES = {"hf": "transformers", "timm": "timm", "torchvision": "torchvision",
                    "mmpretrain": "mmpretrain", "mmdet": "mmdet"}
#: The :class:`SwinBackbone` ``small_map`` rule that reproduces each peer's features: HF
#: ``SwinModel`` and mmpretrain (``pad_small_map=False``, its default) shrink the window to a small
#: map's ``min(H, W)`` ('hf' is that rule for V1), timm has its own, torchvision pads, mmdet/mmseg
#: (and mmpretrain's ``pad_small_map=True``) shift even a map of one window.
V1_PEER_RULES = {"hf": "hf", "timm": "timm", "torchvision": "pad", "mmpretrain": "official",
                 "mmdet": "mmdet"}
#: Peers whose stage outputs are normed (``norm0..3``); the others return raw stage outputs.
V1_NORMED_PEERS = ("mmpretrain", "mmdet")


def ours_v1(variant: Variant, window: int, small_map: str, out_norm: bool = True,
            **kwargs: Any) -> SwinBackbone:
    """Our :class:`SwinBackbone` for ``variant`` at ``window`` (no drop path)."""
    return SwinBackbone(arch=None, embed_dims=variant.embed_dims, depths=variant.depths,
                        num_heads=variant.num_heads, window_size=window, small_map=small_map,
                        out_norm=out_norm, drop_path_rate=0.0, **kwargs)


# ----------------------------------------------------------------------------- Hugging Face
def hf_v1_model(kind: str, variant: Variant, window: int, seed: int, image_size: ImageSize = 224,
                **kwargs: Any) -> nn.Module:
    """A randomised HF Swin V1 model: ``kind`` in ``SwinModel``, ``SwinBackbone``,
    ``SwinForImageClassification``, ``SwinForMaskedImageModeling``."""
    import transformers

    size = list(image_size) if isinstance(image_size, tuple) else image_size
    config = transformers.SwinConfig(image_size=size, embed_dim=variant.embed_dims,
                                     depths=list(variant.depths), num_heads=list(variant.num_heads),
                                     window_size=window, drop_path_rate=0.0, **kwargs)
    return randomize_(getattr(transformers, kind)(config), seed).eval()


def hf_v1_stages(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Raw stage outputs (NCHW) of an HF ``SwinModel``, before each stage's patch merging, with
    ``SwinModel``'s small-map rule (HF ``SwinBackbone`` partitions and shifts even a map of one
    window, ``always_partition=True``: that is ``small_map='mmdet'``). Through the embeddings and the
    encoder: ``SwinModel.forward`` passes ``output_hidden_states_before_downsampling`` on only in
    recent transformers, the encoder takes it in every supported version."""
    embedded, dims = model.embeddings(x)
    out = model.encoder(embedded, dims, output_hidden_states=True,
                        output_hidden_states_before_downsampling=True)
    return list(out.reshaped_hidden_states[1:])  # [0] is the patch embedding


# ----------------------------------------------------------------------------- timm / official
def timm_v1_model(variant: Variant, window: int, seed: int, num_classes: int = 10,
                  img_size: Any = 224) -> nn.Module:
    """A randomised timm ``SwinTransformer`` (V1) for ``img_size`` inputs."""
    from timm.models.swin_transformer import SwinTransformer

    model = SwinTransformer(img_size=img_size, embed_dim=variant.embed_dims, depths=variant.depths,
                            num_heads=variant.num_heads, window_size=window,
                            num_classes=num_classes, drop_path_rate=0.0)
    return randomize_(model, seed).eval()


def official_v1_state(model: nn.Module) -> Dict[str, Tensor]:
    """The official Microsoft Swin V1 layout of a timm V1 model's weights, which is also timm's
    layout before 0.9 and that of the V1 files on the timm hub (``relative_position_index`` of
    every block, ``attn_mask`` of the shifted ones), see
    :func:`~swinv2_backbone.testing.peers.official_layout`."""
    return official_layout(model, ("relative_position_index",))


# ----------------------------------------------------------------------------- torchvision
def torchvision_v1_model(variant: Variant, window: int, seed: int, num_classes: int = 10) -> nn.Module:
    """A randomised torchvision ``SwinTransformer`` with V1 blocks (as ``swin_t``, at ``variant``);
    its stages are :func:`~swinv2_backbone.testing.peers.torchvision_stages`."""
    from torchvision.models.swin_transformer import SwinTransformer

    model = SwinTransformer(patch_size=[4, 4], embed_dim=variant.embed_dims, depths=list(variant.depths),
                            num_heads=list(variant.num_heads), window_size=[window, window],
                            stochastic_depth_prob=0.0, num_classes=num_classes)
    return randomize_(model, seed).eval()


# ----------------------------------------------------------------------------- mmpretrain, mmdet
def mmpretrain_v1_backbone_cfg(variant: Variant, window: int, img_size: ImageSize = 224,
                               pad_small_map: bool = False) -> Dict[str, Any]:
    """The config of an mmpretrain ``SwinTransformer`` (V1) returning all four stages (output
    norms ``norm0..3``)."""
    arch = dict(embed_dims=variant.embed_dims, depths=list(variant.depths),
                num_heads=list(variant.num_heads))
    return dict(type="SwinTransformer", arch=arch, img_size=img_size, window_size=window,
                out_indices=(0, 1, 2, 3), drop_path_rate=0.0, pad_small_map=pad_small_map)


def mmpretrain_v1_backbone(variant: Variant, window: int, seed: int, img_size: ImageSize = 224,
                           pad_small_map: bool = False) -> nn.Module:
    """A randomised mmpretrain ``SwinTransformer`` (:func:`mmpretrain_v1_backbone_cfg`)."""
    models = import_mmpretrain()
    cfg = mmpretrain_v1_backbone_cfg(variant, window, img_size, pad_small_map)
    model = models.backbones.SwinTransformer(**{k: v for k, v in cfg.items() if k != "type"})
    randomize_(model, seed).eval()  # its train() override returns None, not the module
    return model


def mmpretrain_v1_classifier(variant: Variant, window: int, seed: int, num_classes: int = 10
                             ) -> nn.Module:
    """A randomised mmpretrain ``ImageClassifier`` around a V1 ``SwinTransformer`` at 224 px
    returning its last stage, with a linear head."""
    backbone = {**mmpretrain_v1_backbone_cfg(variant, window), "out_indices": (3,)}
    model = mmpretrain_image_classifier(
        backbone=backbone, neck=dict(type="GlobalAveragePooling"),
        head=dict(type="LinearClsHead", num_classes=num_classes, in_channels=variant.embed_dims * 8))
    return randomize_(model, seed).eval()


def mmdet_swin(variant: Variant, window: int, seed: int, out_indices: Sequence[int] = (0, 1, 2, 3)
               ) -> nn.Module:
    """A randomised ``mmdet.models.backbones.SwinTransformer`` (the Swin V1 backbone of the mmdet
    and mmseg configs), returning the normed stages ``out_indices`` (``norm{i}``)."""
    from mmdet.models.backbones import SwinTransformer

    model = SwinTransformer(embed_dims=variant.embed_dims, depths=variant.depths,
                            num_heads=variant.num_heads, window_size=window,
                            out_indices=tuple(out_indices), drop_path_rate=0.0)
    randomize_(model, seed).eval()  # its train() override returns None, not the module
    return model


def mmdet_checkpoint(backbone: nn.Module, seed: int) -> Dict[str, Any]:
    """What mmdet's runner saves for a detector with ``backbone``: ``{'meta', 'state_dict'}`` with
    ``backbone.*`` and a seeded stand-in for the neck and heads (``neck.``, ``rpn_head.``,
    ``roi_head.``), which a backbone checkpoint reader must leave out."""
    gen = torch.Generator().manual_seed(seed)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({"neck.lateral_convs.0.conv.weight": torch.randn(8, 16, 1, 1, generator=gen),
                  "rpn_head.rpn_conv.weight": torch.randn(8, 8, 3, 3, generator=gen),
                  "roi_head.bbox_head.fc_cls.weight": torch.randn(3, 8, generator=gen)})
    return {"meta": {"mmdet_version": "3.3.0", "epoch": 12}, "state_dict": state}


# ----------------------------------------------------------------------------- one peer by name
#: A peer builder: (variant, window, input (H, W), seed, directory) -> the peer and the checkpoint
#: it wrote into the directory, in its own format.
V1Builder = Callable[[Variant, int, Tuple[int, int], int, str], Tuple[Peer, str]]


def _hf(variant: Variant, window: int, img_size: Tuple[int, int], seed: int, directory: str
        ) -> Tuple[Peer, str]:
    model = hf_v1_model("SwinModel", variant, window, seed, image_size=img_size)
    path = os.path.join(directory, "hf")
    model.save_pretrained(path)
    return Peer("hf", model, lambda x: hf_v1_stages(model, x)), path


def _timm(variant: Variant, window: int, img_size: Tuple[int, int], seed: int, directory: str
          ) -> Tuple[Peer, str]:
    model = timm_v1_model(variant, window, seed, num_classes=0, img_size=img_size)
    path = save_safetensors(model.state_dict(), directory, "model.safetensors")
    return Peer("timm", model, lambda x: timm_stages(model, x)), path


def _torchvision(variant: Variant, window: int, img_size: Tuple[int, int], seed: int,
                 directory: str) -> Tuple[Peer, str]:
    model = torchvision_v1_model(variant, window, seed)
    path = save_torch(model.state_dict(), directory, "swin_t.pth")
    return Peer("torchvision", model, lambda x: torchvision_stages(model, x)), path


def _mmpretrain(variant: Variant, window: int, img_size: Tuple[int, int], seed: int,
                directory: str) -> Tuple[Peer, str]:
    model = mmpretrain_v1_backbone(variant, window, seed, img_size)
    path = save_torch(mmpretrain_checkpoint(model), directory, "mmpretrain.pth")
    return Peer("mmpretrain", model, lambda x: list(model(x))), path


def _mmdet(variant: Variant, window: int, img_size: Tuple[int, int], seed: int, directory: str
           ) -> Tuple[Peer, str]:
    model = mmdet_swin(variant, window, seed)
    path = save_torch(mmdet_checkpoint(model, seed), directory, "detector.pth")
    return Peer("mmdet", model, lambda x: list(model(x))), path


#: Every V1 peer: name -> builder.
V1_BUILDERS: Dict[str, V1Builder] = {"hf": _hf, "timm": _timm, "torchvision": _torchvision,
                                     "mmpretrain": _mmpretrain, "mmdet": _mmdet}


def build_v1_peer(name: str, variant: Variant, window: int, img_size: Tuple[int, int], seed: int,
                  **ours_kwargs: Any) -> Tuple[Peer, SwinBackbone]:
    """The V1 peer ``name`` with seeded random weights for ``img_size`` inputs, and our
    :class:`SwinBackbone` holding the same weights, read by :func:`load_pretrained` from the
    checkpoint file the peer wrote: the peer's small-map rule (:data:`V1_PEER_RULES`), output
    norms where the peer's stages are normed (:data:`V1_NORMED_PEERS`; elsewhere the peer's final
    norm has no place in our copy and is left out).

    Args:
        name: One of :data:`V1_PEERS`.
        variant: Architecture.
        window: Window of every stage.
        img_size: Input (H, W) the peer is configured for.
        seed: Seed of the random weights.
        **ours_kwargs: Further :class:`SwinBackbone` arguments for our copy (e.g. ``with_cp``).
    """
    if name not in V1_BUILDERS:
        raise ValueError(f"unknown Swin V1 peer {name!r}; choose from {V1_PEERS}")
    ours = ours_v1(variant, window, V1_PEER_RULES[name], out_norm=name in V1_NORMED_PEERS,
                   **ours_kwargs)
    with tempfile.TemporaryDirectory() as directory:
        peer, path = V1_BUILDERS[name](variant, window, img_size, seed, directory)
        load_pretrained(ours, path)
    return peer, ours
