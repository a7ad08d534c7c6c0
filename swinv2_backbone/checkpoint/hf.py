"""Hugging Face ``transformers`` SwinV2 (``Swinv2Model`` and friends) <-> native key layout, and
Swin V1 (``SwinModel``, ``SwinBackbone``, ``SwinForImageClassification``,
``SwinForMaskedImageModeling``: ``swin.`` prefix, q/k/v biases, ``relative_position_bias_table``,
``hidden_states_norms.stageN`` of the backbone) -> native.

HF splits the attention input projection into ``query``/``key``/``value`` (no key bias), calls the
res-post-norms ``layernorm_before``/``layernorm_after``, puts patch merging at the end of stages like
the official code, and keeps an unused [CLS] slot in front of the absolute position embedding.
``Swinv2ForImageClassification`` and ``Swinv2ForMaskedImageModeling`` add the ``swinv2.`` prefix and
a ``classifier`` (kept as the native ``head``, with the ``id2label`` class names) / ``decoder`` head
(dropped). The architecture and windows live in ``config.json``: one
``window_size`` for all stages, clamped to each stage's map size at ``image_size``.
"""
from __future__ import annotations

import re
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .common import (CheckpointError, Mapped, SmallMapSource, Source, StageWindow, clamped_windows,
                     map_sides)
from .keys import (CLASSIFICATION_HEAD, MASK_TOKEN, MASK_TOKEN_KEY, MIM_HEAD, StateDict, Tensor,
                   final_norm_for_export, is_buffer_key, num_stages, split_prefix)
from .native import version_of

NAME = "hf"
DESCRIPTION = ("Hugging Face transformers Swinv2Model / SwinModel (V1) and their "
               "ForImageClassification / Backbone / ForMaskedImageModeling (directory with "
               "config.json)")

#: HF sub-module names inside a block -> native names.
_BLOCK_RENAMES = (
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.self.continuous_position_bias_mlp.", "attn.cpb_mlp."),
    ("attention.self.logit_scale", "attn.logit_scale"),
    ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
#: HF ``SwinBackbone`` (V1): the LayerNorm of each returned stage, ``stage{i+1}`` -> ``norm{i}``.
_STAGE_NORM = re.compile(r"^hidden_states_norms\.stage(\d+)\.(weight|bias)$")
#: The encoder's prefix in HF task models: ``swinv2.`` (SwinV2) or ``swin.`` (Swin V1).
_WRAPPERS = ("swinv2.", "swin.")
#: ``config.json`` model_type by Swin version.
_MODEL_TYPES = {1: "swin", 2: "swinv2"}
#: HF class-name stem (``SwinModel``, ``Swinv2ForImageClassification``, ...) by Swin version.
_CLASS_STEMS = {1: "Swin", 2: "Swinv2"}


def hf_class(version: int, task: str = "Model") -> str:
    """The HF class of a Swin ``version`` for ``task`` (``'Model'``, ``'ForImageClassification'``,
    ``'ForMaskedImageModeling'``): ``Swinv2Model``, ``SwinForImageClassification``, ..."""
    return _CLASS_STEMS[version] + task


def encoder_prefix(version: int) -> str:
    """The encoder's prefix in the HF task models of a Swin ``version``: ``swinv2.`` or ``swin.``."""
    return _MODEL_TYPES[version] + "."
_QKV = re.compile(r"^(encoder\.layers\.\d+\.blocks\.\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")
_NATIVE_QKV = re.compile(r"^(layers\.\d+\.blocks\.\d+)\.attn\.(qkv\.weight|qkv\.bias|q_bias|v_bias)$")
#: Heads next to ``swinv2.`` in the task models: prefix -> (head name, native prefix). The MIM
#: decoder's keys are the native ones already.
_HEAD_PREFIXES = {"classifier.": (CLASSIFICATION_HEAD, "head."), "decoder.": (MIM_HEAD, "decoder.")}
#: HF's mask token (``Swinv2Model(use_mask_token=True)``, as in ``Swinv2ForMaskedImageModeling``).
_MASK_TOKEN = "embeddings.mask_token"
#: HF's placeholder class names (``LABEL_0``...), which name no class.
_PLACEHOLDER_LABEL = re.compile(r"^LABEL_\d+$")
#: Native structure field <- config.json key, checked against the tensors.
_CLAIMS = (("embed_dims", "embed_dim"), ("depths", "depths"), ("num_heads", "num_heads"),
           ("use_abs_pos_embed", "use_absolute_embeddings"))


#: Why HF ``SwinBackbone``'s final ``layernorm`` is left out: it returns its stage norms instead.
UNUSED_FINAL_NORM = "final layernorm (unused by HF SwinBackbone, which has stage norms)"


def detect(keys: Collection[str]) -> bool:
    """HF names (``embeddings.patch_embeddings.`` or ``.attention.self.``), optionally under
    ``swinv2.`` or ``swin.``."""
    return any(k.startswith(tuple(w + "embeddings.patch_embeddings." for w in ("",) + _WRAPPERS))
               or ".attention.self." in k for k in keys)


def hf_to_native(state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """Map an HF ``Swinv2Model`` or ``SwinModel`` / ``SwinBackbone`` (V1) state dict (no
    ``swinv2.``/``swin.`` prefix, no buffers) to native keys. Swin V1 (told by its bias tables)
    keeps all three q/k/v biases as one ``qkv.bias``; its ``SwinBackbone`` stage norms become the
    output norms, and its unused final ``layernorm`` is then left out.

    Returns ``(native, unmapped)`` where ``unmapped`` names the HF keys that have no native
    counterpart, each with the reason, for the caller to report or refuse.
    """
    out: Dict[str, Tensor] = {}
    unmapped: Dict[str, str] = {}
    qkv: Dict[str, Dict[str, Tensor]] = {}
    last = num_stages(state, r"^encoder\.layers\.(\d+)\.") - 1
    version = 1 if any(k.endswith(".relative_position_bias_table") for k in state) else 2
    stage_norms = any(map(_STAGE_NORM.match, state))
    for key, value in state.items():
        m = _QKV.match(key)
        if m:
            qkv.setdefault(m.group(1), {})[f"{m.group(2)}.{m.group(3)}"] = value
            continue
        if key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("embeddings.norm."):
            out["patch_embed.norm." + key.rsplit(".", 1)[1]] = value
        elif key == "embeddings.position_embeddings":
            # HF keeps a [CLS] slot in front that SwinV2 never uses.
            out["absolute_pos_embed"] = value[:, 1:]
        elif key.startswith("encoder.layers."):
            new = key[len("encoder."):]
            for old, rep in _BLOCK_RENAMES:
                if old in new:
                    new = new.replace(old, rep)
                    break
            out[new] = value
        elif (m := _STAGE_NORM.match(key)) is not None:
            out[f"norm{int(m.group(1)) - 1}.{m.group(2)}"] = value
        elif key.startswith("layernorm.") and stage_norms:
            unmapped[key] = UNUSED_FINAL_NORM
        elif key.startswith("layernorm."):
            out[f"norm{last}." + key.rsplit(".", 1)[1]] = value
        else:
            unmapped[key] = "not part of the SwinV2 encoder"
    for prefix, parts in qkv.items():
        new = prefix[len("encoder."):] + ".attn."
        missing = {"query.weight", "key.weight", "value.weight"} - set(parts)
        if missing:
            raise CheckpointError(f"{prefix}.attention.self is missing {sorted(missing)}")
        out[new + "qkv.weight"] = torch.cat(
            [parts["query.weight"], parts["key.weight"], parts["value.weight"]])
        if version == 1:
            biases = [parts.get(f"{n}.bias") for n in ("query", "key", "value")]
            if any(b is None for b in biases) and any(b is not None for b in biases):
                raise CheckpointError(f"{prefix}.attention.self has only some of the query/key/"
                                      "value biases; Swin V1 has all or none")
            if biases[0] is not None:
                out[new + "qkv.bias"] = torch.cat(biases)
            continue
        if "key.bias" in parts:
            unmapped[f"{prefix}.attention.self.key.bias"] = "SwinV2 has no key bias"
        if "query.bias" in parts:
            out[new + "q_bias"] = parts["query.bias"]
        if "value.bias" in parts:
            out[new + "v_bias"] = parts["value.bias"]
    return out, unmapped


def config_windows(config: Mapping[str, Any]) -> Dict[int, StageWindow]:
    """Per-stage training windows from an HF ``config.json``: ``window_size`` clamped to each
    stage's map size at ``image_size``, with ``pretrained_window_sizes``."""
    depths = config.get("depths", (2, 2, 6, 2))
    image = config.get("image_size", 224)
    patch = config.get("patch_size", 4)
    image = image[0] if isinstance(image, (list, tuple)) else image
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    windows = clamped_windows(int(config.get("window_size", 7)), image, patch, len(depths))
    pretrained = list(config.get("pretrained_window_sizes") or [0] * len(depths))
    out = {}
    for i, stage_window in enumerate(windows):
        p = int(pretrained[i]) if i < len(pretrained) else 0
        out[i] = StageWindow(stage_window, 0 if p == stage_window else p)
    return out


def config_labels(config: Mapping[str, Any]) -> Optional[Tuple[str, ...]]:
    """Class names by index from ``config.json``'s ``id2label``; ``None`` when it is missing,
    does not cover ``0..n-1`` or holds only HF's ``LABEL_i`` placeholders."""
    id2label = config.get("id2label")
    if not isinstance(id2label, Mapping) or not id2label:
        return None
    try:
        names = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(names) != list(range(len(names))):
        return None
    labels = tuple(names[i] for i in range(len(names)))
    return None if all(_PLACEHOLDER_LABEL.match(n) for n in labels) else labels


def check_config(config: Mapping[str, Any], name: str, version: int) -> None:
    """Refuse a ``config.json`` that is not a Swin one of the weights' ``version``."""
    model_type = config.get("model_type")
    if model_type not in _MODEL_TYPES.values():
        raise CheckpointError(f"{name}: config.json has model_type {model_type!r}; only Hugging "
                              "Face SwinV2 ('swinv2') and Swin ('swin', V1) are supported")
    if model_type != _MODEL_TYPES[version]:
        raise CheckpointError(f"{name}: config.json says model_type {model_type!r}, but the weights "
                              f"are Swin V{version} ones")


def keep_heads(state: StateDict, mapped: Mapped) -> StateDict:
    """Keep the task heads next to ``swinv2.`` / ``swin.`` (classifier, MIM decoder) and the mask
    token of ``state`` as heads of ``mapped`` under their native keys; returns the encoder's entries
    (prefix stripped) and any unknown others, left for validation to report."""
    wrapper = next((w for w in _WRAPPERS if any(k.startswith(w) for k in state)), None)
    wrapped = wrapper is not None
    if wrapped:
        rest: StateDict = {}
        for key, value in state.items():
            prefix = next((p for p in _HEAD_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                rest[key] = value
            else:
                head, native = _HEAD_PREFIXES[prefix]
                mapped.keep_head(head, key, native + key[len(prefix):], value)
        encoder, others = split_prefix(rest, wrapper)
        state = {**encoder, **others}
    if _MASK_TOKEN in state:
        source_key = wrapper + _MASK_TOKEN if wrapped else _MASK_TOKEN
        mapped.keep_head(MASK_TOKEN, source_key, MASK_TOKEN_KEY, state[_MASK_TOKEN])
        state = {k: v for k, v in state.items() if k != _MASK_TOKEN}
    return state


def to_native(source: Source) -> Mapped:
    """HF -> native: strip ``swinv2.``, keep the ``classifier`` as the native ``head`` (class
    names from ``id2label``), the MIM ``decoder`` and the mask token as their heads (see
    :mod:`.keys`), merge q/k/v, drop the [CLS] slot of the position embedding; windows from
    ``config.json``."""
    mapped = Mapped()
    state = keep_heads(source.state_dict, mapped)
    for key in [k for k in state if is_buffer_key(k)]:  # Swin V1 files keep the index buffers
        mapped.drop("recomputed buffers", key)
        del state[key]
    native, unmapped = hf_to_native(state)
    for key, reason in unmapped.items():
        if reason == "SwinV2 has no key bias":
            raise CheckpointError(f"{source.name}: {key} is present but {reason}")
        if reason == UNUSED_FINAL_NORM:
            mapped.drop(reason, key)
            continue
        native[key] = state[key]  # left for validation to report
    mapped.state_dict.update(native)
    mapped.small_map = small_map_of(state, version_of(list(native), source.name))
    if source.config is not None:
        check_config(source.config, source.name, version_of(list(native), source.name))
        mapped.windows = config_windows(source.config)
        mapped.windows_from = "config.json"
        mapped.claimed = {k: source.config[c] for k, c in _CLAIMS if c in source.config}
        if CLASSIFICATION_HEAD in mapped.heads:
            mapped.labels = config_labels(source.config)
        check_encoder_stride(source.config, mapped.heads.get(MIM_HEAD), source.name)
    return mapped


def small_map_of(state: Mapping[str, Tensor], version: int) -> SmallMapSource:
    """The rule of the HF model that wrote ``state``: Swin V1's ``SwinBackbone`` (its stage norms
    ``hidden_states_norms.*``) partitions and shifts even a map of one window (``'mmdet'``); the
    other V1 models and every SwinV2 model follow HF's own rule (``'hf'``)."""
    if version == 1 and any(_STAGE_NORM.match(k) for k in state):
        return SmallMapSource("mmdet", "Hugging Face SwinBackbone", finished=True)
    return SmallMapSource("hf", f"Hugging Face {hf_class(version)}")


def check_encoder_stride(config: Mapping[str, Any], decoder: Optional[StateDict], name: str) -> None:
    """Refuse a ``config.json`` whose ``encoder_stride`` and ``num_channels`` disagree with the MIM
    decoder's output channels (``encoder_stride**2 * num_channels``, what HF builds from them)."""
    if decoder is None or "decoder.0.weight" not in decoder or "encoder_stride" not in config:
        return
    stride, channels = int(config["encoder_stride"]), int(config.get("num_channels", 3))
    found = int(decoder["decoder.0.weight"].shape[0])
    if found != stride ** 2 * channels:
        raise CheckpointError(f"{name}: config.json says encoder_stride {stride} and num_channels "
                              f"{channels} (a decoder of {stride ** 2 * channels} channels), but "
                              f"decoder.0.weight has {found} output channels")


def _hf_block_key(native_key: str) -> str:
    new = native_key
    for old, rep in _BLOCK_RENAMES:
        if rep in new:
            return "encoder." + new.replace(rep, old)
    return "encoder." + new


def from_native(state: StateDict) -> Tuple[StateDict, List[str]]:
    """Native -> HF ``Swinv2Model`` (or Swin V1 ``SwinModel``) keys, with notes on what changed.

    q/k/v are split (SwinV2: the key gets no bias; V1 splits its ``qkv.bias`` too), the [CLS] slot
    of the position embedding is added back (zeros), the last stage's output norm becomes
    ``layernorm`` (a default LayerNorm when missing); other output norms have no HF counterpart and
    are left out.
    """
    model = hf_class(version_of(list(state)))
    rest, final_norm, notes = final_norm_for_export(state, "layernorm", model, "HF's layernorm")
    out: StateDict = {}
    for key, value in rest.items():
        qkv = _NATIVE_QKV.match(key)
        if key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("patch_embed.norm."):
            out["embeddings.norm." + key.rsplit(".", 1)[1]] = value
        elif key == "absolute_pos_embed":
            out["embeddings.position_embeddings"] = torch.cat([value.new_zeros(1, 1, value.shape[2]), value], 1)
        elif qkv:
            prefix = "encoder." + qkv.group(1) + ".attention.self."
            if qkv.group(2) in ("qkv.weight", "qkv.bias"):
                suffix = qkv.group(2)[len("qkv"):]
                for part, chunk in zip(("query", "key", "value"), value.chunk(3)):
                    out[prefix + part + suffix] = chunk
            else:
                out[prefix + ("query" if qkv.group(2) == "q_bias" else "value") + ".bias"] = value
        else:
            out[_hf_block_key(key)] = value
    out.update(final_norm)
    return out, notes


def hf_config(
    embed_dims: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_sizes: Sequence[int],
    pretrained_window_sizes: Sequence[int],
    image_size: int,
    patch_size: int = 4,
    in_channels: int = 3,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    use_abs_pos_embed: bool = False,
    version: int = 2,
) -> Dict[str, Any]:
    """``config.json`` content for an HF ``Swinv2Model`` (Swin V1: ``SwinModel``) with these
    weights.

    HF has one ``window_size`` for all stages and clamps it to each stage's map size at
    ``image_size``; per-stage ``window_sizes`` that this rule cannot produce are refused.

    Args:
        embed_dims: Channels of stage 1.
        depths: Blocks per stage.
        num_heads: Heads per stage.
        window_sizes: Window of every stage.
        pretrained_window_sizes: Pretrained window of every stage (0: none; Swin V1 has none).
        image_size: Input size the HF model is built for (it fixes windows and shifts from it).
        patch_size: Patch-embedding stride.
        in_channels: Image channels.
        mlp_ratio: MLP hidden width ratio.
        qkv_bias: Whether the q and v projections have biases.
        use_abs_pos_embed: Whether the weights have an absolute position embedding.
        version: Swin version of the weights (1: ``model_type`` ``'swin'``).
    """
    window = single_window(window_sizes, image_size, patch_size, "HF Swin")
    config = {
        "model_type": _MODEL_TYPES[version],
        "architectures": [hf_class(version)],
        "image_size": image_size,
        "patch_size": patch_size,
        "num_channels": in_channels,
        "embed_dim": embed_dims,
        "depths": list(depths),
        "num_heads": list(num_heads),
        "window_size": window,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": qkv_bias,
        "use_absolute_embeddings": use_abs_pos_embed,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "encoder_stride": 32,
    }
    if version == 2:
        config["pretrained_window_sizes"] = list(pretrained_window_sizes)
    return config


def single_window(window_sizes: Sequence[int], image_size: int, patch_size: int, peer: str) -> int:
    """The one ``window_size`` of a peer that clamps it to each stage's map size at ``image_size``
    (HF, timm Swin V1) and gives ``window_sizes``; an error when no such window exists."""
    window = max(window_sizes)
    clamped = clamped_windows(window, image_size, patch_size, len(window_sizes))
    if list(window_sizes) != clamped:
        maps = map_sides(image_size, patch_size, len(window_sizes))
        raise CheckpointError(
            f"{peer} uses one window_size for all stages, clamped to the map size; windows "
            f"{tuple(window_sizes)} at image_size {image_size} (maps {tuple(maps)}) cannot be "
            f"expressed (window_size={window} gives {tuple(clamped)}); choose another image_size "
            "or windows")
    return window
