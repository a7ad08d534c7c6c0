"""The peer Swin V1 implementations for ``tools/benchmark.py --model v1``: each built with seeded
random, non-trivial weights, its raw stage features, and our :class:`SwinBackbone` holding the same
weights read through the checkpoint adapters from the file the peer itself writes.

One entry of :data:`V1_BUILDERS` per peer. Hugging Face is the only one so far: the adapters that
read timm's, torchvision's and mmdet's Swin V1 weights are being added separately, and each of those
peers then needs one builder here (its model, its stage forward and its own checkpoint file).

The peer libraries are test-only dependencies: they are imported inside the functions that need
them, so importing this module needs torch alone.
"""
from __future__ import annotations

import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..checkpoint import convert_checkpoint
from ..models import SwinBackbone
from . import randomize_
from .peers import Peer, Variant

Tensor = torch.Tensor
#: The distribution that provides each V1 peer.
V1_PEER_PACKAGES = {"hf": "transformers"}
#: Peer name -> (peer, our backbone with its weights), see :func:`build_v1_peer`.
V1Builder = Callable[[Variant, int, Tuple[int, int], int, Dict[str, Any]], Tuple[Peer, SwinBackbone]]


def ours_v1(variant: Variant, window: int, small_map: str, out_norm: bool = False,
            **kwargs: Any) -> SwinBackbone:
    """Our :class:`SwinBackbone` at ``variant`` / ``window`` with no stochastic depth."""
    return SwinBackbone(arch=None, embed_dims=variant.embed_dims, depths=variant.depths,
                        num_heads=variant.num_heads, window_size=window, small_map=small_map,
                        out_norm=out_norm, drop_path_rate=0.0, **kwargs)


def _hf(variant: Variant, window: int, img_size: Tuple[int, int], seed: int,
        ours_kwargs: Dict[str, Any]) -> Tuple[Peer, SwinBackbone]:
    """HF ``SwinModel`` returning every stage's output before its patch merging (what
    ``SwinBackbone`` returns, but with ``SwinModel``'s small-map rule, which ours reproduces as
    ``small_map='hf'``; HF ``SwinBackbone`` also shifts a map of one window, which no rule of
    ours does). Our weights come from its ``save_pretrained`` directory, as a user's would."""
    import transformers

    config = transformers.SwinConfig(image_size=list(img_size), embed_dim=variant.embed_dims,
                                     depths=list(variant.depths), num_heads=list(variant.num_heads),
                                     window_size=window, drop_path_rate=0.0)
    model = randomize_(transformers.SwinModel(config, add_pooling_layer=False), seed).eval()

    def stages(x: Tensor) -> List[Tensor]:
        # Through the encoder: SwinModel.forward passes output_hidden_states_before_downsampling
        # on only in recent transformers; the encoder takes it in every supported version.
        embedded, dims = model.embeddings(x)
        out = model.encoder(embedded, dims, output_hidden_states=True,
                            output_hidden_states_before_downsampling=True)
        return list(out.reshaped_hidden_states[1:])  # [0] is the patch embedding

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        converted = convert_checkpoint(directory)
    ours = ours_v1(variant, window, "hf", **ours_kwargs)
    # SwinModel's final layernorm is the last output norm, which a raw-output model does not have.
    result = ours.load_state_dict(converted.state_dict, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith("norm")]
    if result.missing_keys or unexpected:
        raise RuntimeError(f"HF SwinModel weights do not fit SwinBackbone: missing "
                           f"{result.missing_keys}, unexpected {unexpected}")
    return Peer("hf", model, stages), ours


#: Every V1 peer: name -> builder.
V1_BUILDERS: Dict[str, V1Builder] = {"hf": _hf}
V1_PEERS = tuple(V1_BUILDERS)


def build_v1_peer(name: str, variant: Variant, window: int, img_size: Tuple[int, int], seed: int,
                  **ours_kwargs: Any) -> Tuple[Peer, nn.Module]:
    """The V1 peer ``name`` with seeded random weights for ``img_size`` inputs, and our
    :class:`SwinBackbone` (raw stage outputs, the peer's small-map rule, ``ours_kwargs`` such as
    ``with_cp``) holding the same weights.

    Args:
        name: One of :data:`V1_PEERS`.
        variant: Architecture.
        window: Window of every stage.
        img_size: Input (H, W) the peer is configured for.
        seed: Seed of the random weights.
        **ours_kwargs: Further :class:`SwinBackbone` arguments for our copy.
    """
    builder: Optional[V1Builder] = V1_BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown Swin V1 peer {name!r}; choose from {V1_PEERS}")
    return builder(variant, window, img_size, seed, ours_kwargs)
