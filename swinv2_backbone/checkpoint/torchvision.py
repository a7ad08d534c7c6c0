"""torchvision ``swin_v2_t/s/b`` and Swin V1 ``swin_t/s/b`` state dicts -> native.

torchvision keeps everything in ``features``: ``features.0`` is the patch embedding (conv ``0``,
LayerNorm ``2``), ``features.{2i+1}.{j}`` is block j of stage i, ``features.{2i+2}`` the patch merging
after stage i. Its ``mlp`` is a ``Sequential`` (``0`` = fc1, ``3`` = fc2) and ``attn.qkv.bias`` holds
q, k and v biases in one ``3C`` vector whose k third SwinV2 zeroes at every forward (Swin V1 uses all
three: the vector is its native ``qkv.bias``). It has no pretrained-window setting: its SwinV2
coordinate tables are always normalised by its own window. The version is told by the attention's
``logit_scale`` (SwinV2) or ``relative_position_bias_table`` (V1).
"""
from __future__ import annotations

import re
from typing import Collection

from .common import Mapped, SmallMapSource, Source
from .keys import CLASSIFICATION_HEAD, StateDict, final_norm_to_native, is_buffer_key, num_stages

NAME = "torchvision"
DESCRIPTION = ("torchvision swin_v2_t/s/b and swin_t/s/b (V1) ('features.N', one 'qkv.bias', its k third "
               "unused by SwinV2)")

_EMBED = re.compile(r"^features\.0\.(0|2)\.(weight|bias)$")
_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.(.+)$")
_MERGE = re.compile(r"^features\.(\d+)\.(reduction\.weight|norm\.(?:weight|bias))$")
_RENAMES = (("mlp.0.", "mlp.fc1."), ("mlp.3.", "mlp.fc2."))
#: A block's attention parameter that tells the version: SwinV2's ``logit_scale``, V1's bias table.
_ATTENTION = re.compile(r"^features\.\d+\.\d+\.attn\.(logit_scale|relative_position_bias_table)$")


def detect(keys: Collection[str]) -> bool:
    """``features.0.0.weight`` plus Swin attention (``features.N.M.attn.logit_scale`` or
    ``relative_position_bias_table``)."""
    return "features.0.0.weight" in keys and any(map(_ATTENTION.match, keys))


def to_native(source: Source) -> Mapped:
    """torchvision -> native: rename, split a SwinV2 ``qkv.bias`` into ``q_bias``/``v_bias`` (the k
    third is unused and dropped; V1 keeps it whole), final ``norm`` -> ``norm{last}``, drop buffers, keep ``head`` as the
    classification head."""
    mapped = Mapped(small_map=SmallMapSource("pad", "torchvision"))
    buffers: StateDict = {}
    last = num_stages(source.state_dict, r"^features\.(\d+)\.\d+\.") // 2 - 1
    v2 = any(k.endswith(".attn.logit_scale") for k in source.state_dict)
    for key, value in source.state_dict.items():
        embed, block, merge = _EMBED.match(key), _BLOCK.match(key), _MERGE.match(key)
        if embed:
            part = "proj" if embed.group(1) == "0" else "norm"
            mapped.state_dict[f"patch_embed.{part}.{embed.group(2)}"] = value
        elif merge and int(merge.group(1)) % 2 == 0:
            stage = int(merge.group(1)) // 2 - 1
            mapped.state_dict[f"layers.{stage}.downsample.{merge.group(2)}"] = value
        elif block and int(block.group(1)) % 2 == 1:
            stage, rest = (int(block.group(1)) - 1) // 2, block.group(3)
            prefix = f"layers.{stage}.blocks.{block.group(2)}."
            if is_buffer_key(rest):
                mapped.drop("recomputed buffers", key)
                buffers[prefix + rest] = value
            elif rest == "attn.qkv.bias" and v2:
                q, _, v = value.chunk(3)
                mapped.state_dict[prefix + "attn.q_bias"] = q
                mapped.state_dict[prefix + "attn.v_bias"] = v
                mapped.drop("unused k third of qkv.bias", key)
            else:
                for old, new in _RENAMES:
                    rest = rest.replace(old, new) if rest.startswith(old) else rest
                mapped.state_dict[prefix + rest] = value
        elif (native := final_norm_to_native(key, last)) is not None:
            mapped.state_dict[native] = value
        elif key.startswith("head."):
            mapped.keep_head(CLASSIFICATION_HEAD, key, key, value)
        else:
            mapped.state_dict[key] = value  # left for validation to report
    mapped.read_tables(buffers)
    return mapped
