"""Hugging Face ``transformers`` SwinV2 (``Swinv2Model`` and friends) <-> native key layout."""
from __future__ import annotations

import re
from typing import Dict, Tuple

import torch

Tensor = torch.Tensor

#: HF sub-module names inside a block -> native names.
_BLOCK_RENAMES = (
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.self.continuous_position_bias_mlp.", "attn.cpb_mlp."),
    ("attention.self.logit_scale", "attn.logit_scale"),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_QKV = re.compile(r"^(encoder\.layers\.\d+\.blocks\.\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def hf_to_native(state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """Map an HF ``Swinv2Model`` state dict (no ``swinv2.`` prefix) to native keys.

    Returns ``(native, unmapped)`` where ``unmapped`` names the HF keys that have no native
    counterpart, each with the reason, for the caller to report or refuse.
    """
    out: Dict[str, Tensor] = {}
    unmapped: Dict[str, str] = {}
    qkv: Dict[str, Dict[str, Tensor]] = {}
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
        elif key.startswith("layernorm."):
            out["norm3." + key.rsplit(".", 1)[1]] = value
        else:
            unmapped[key] = "not part of the SwinV2 encoder"
    for prefix, parts in qkv.items():
        new = prefix[len("encoder."):] + ".attn."
        missing = {"query.weight", "key.weight", "value.weight"} - set(parts)
        if missing:
            raise KeyError(f"{prefix}.attention.self is missing {sorted(missing)}")
        out[new + "qkv.weight"] = torch.cat(
            [parts["query.weight"], parts["key.weight"], parts["value.weight"]])
        if "query.bias" in parts:
            out[new + "q_bias"] = parts["query.bias"]
        if "value.bias" in parts:
            out[new + "v_bias"] = parts["value.bias"]
    return out, unmapped
