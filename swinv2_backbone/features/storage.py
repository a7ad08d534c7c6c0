"""One image's features on disk: a ``.safetensors`` file with a tensor per stage and the geometry
(strides, sizes), source, checkpoint, dtype and normalisation as JSON metadata, written crash-safely
(a file under its name is complete), and the test a rerun uses to skip what is already done
(:func:`is_complete`)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Tuple, Union

import torch

from ..checkpoint.atomic import write_atomic
from .extractor import FeatureExtractor, ImageFeatures, dtype_name


def feature_metadata(result: ImageFeatures, extractor: FeatureExtractor) -> Dict[str, str]:
    """The ``str -> str`` safetensors metadata of one image's features (JSON values).

    Keys: ``stages`` (order), ``strides`` and ``channels`` (per stage), ``input_size``,
    ``original_size``, ``padded_size`` ([rows, columns]), ``source`` (image path), ``checkpoint``
    (path, or ``null`` for random weights), ``dtype`` and ``mean``/``std``.

    Args:
        result: The image's features.
        extractor: The extractor that computed them.
    """
    values = {
        "stages": list(result.features),
        "strides": {n: extractor.strides[n] for n in result.features},
        "channels": {n: extractor.channels[n] for n in result.features},
        "input_size": list(result.input_size),
        "original_size": list(result.original_size),
        "padded_size": list(result.padded_size),
        "source": os.fspath(result.path),
        "checkpoint": extractor.checkpoint,
        "dtype": dtype_name(extractor.dtype),
        "mean": list(extractor.mean),
        "std": list(extractor.std),
    }
    return {k: json.dumps(v) for k, v in values.items()}


def save_features(result: ImageFeatures, extractor: FeatureExtractor,
                  path: Union[str, os.PathLike]) -> None:
    """Write one image's features (one tensor per stage) and :func:`feature_metadata` as
    ``.safetensors``, crash-safely (:func:`swinv2_backbone.checkpoint.write_atomic`).

    Args:
        result: The image's features.
        extractor: The extractor that computed them.
        path: Output file.
    """
    from safetensors.torch import save

    tensors = {n: t.contiguous() for n, t in result.features.items()}
    # streamed: a run writes gigabytes that stay on disk rather than in the page cache
    write_atomic(path, save(tensors, metadata=feature_metadata(result, extractor)), keep_cached=False)


def load_features(path: Union[str, os.PathLike]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a file written by :func:`save_features`: the tensors (in the saved stage order) and the
    decoded metadata.

    Args:
        path: The ``.safetensors`` file.
    """
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return {n: tensors[n] for n in meta.get("stages", sorted(tensors))}, meta


def is_complete(path: Union[str, os.PathLike], expected: Mapping[str, Any]) -> bool:
    """Whether ``path`` is a complete features file (safetensors checks that its header is whole and
    its tensors cover the file exactly) whose metadata holds ``expected`` (decoded JSON values,
    e.g. ``source``, ``stages``, ``checkpoint``, ``dtype``, ``input_size``): what a rerun may skip.
    A missing, truncated or unreadable file, or one written with other settings, is not.

    Args:
        path: The ``.safetensors`` file.
        expected: Metadata keys and the values they must have.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            stored = f.metadata() or {}
            names = set(f.keys())
        meta = {k: json.loads(v) for k, v in stored.items()}
    except (SafetensorError, OSError, ValueError):
        return False
    return set(meta.get("stages", ())) == names and all(meta.get(k) == v for k, v in expected.items())
