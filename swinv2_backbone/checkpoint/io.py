"""Reading and writing checkpoint files without ever running code from them.

``.safetensors`` files are read with ``safetensors``; everything else goes through
``torch.load(..., weights_only=True)``, which refuses pickles that reference arbitrary Python
objects (a malicious ``__reduce__`` included). mmengine training checkpoints load because
``import swinv2_backbone`` allow-lists the few harmless types they hold. Directories are read as
Hugging Face / timm hub snapshots: ``config.json`` plus ``model.safetensors`` or
``pytorch_model.bin``.

Checkpoints written by this project are ``{'state_dict': ..., 'meta': {'swinv2_backbone': {...}}}``
(``.pth``) or ``.safetensors`` with the same metadata as JSON under the ``swinv2_backbone`` key,
written crash-safely (:mod:`.atomic`).
"""
from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

import torch

from ..compat import load_weights_only, refused_global
from .atomic import write_atomic
from .common import CheckpointError, StateDict

PathLike = Union[str, os.PathLike]

#: Weight files looked for, in order, inside a checkpoint directory.
DIRECTORY_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
META_KEY = "swinv2_backbone"


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint as read from disk.

    Args:
        path: The file (or directory) read.
        data: Its top-level content: a state dict, or a container holding one.
        config: ``config.json`` of a checkpoint directory, if any.
        meta: This project's metadata, if the file was written by it.
    """

    path: str
    data: Mapping[str, Any]
    config: Optional[Dict[str, Any]] = None
    meta: Optional[Dict[str, Any]] = None


def _read_safetensors(path: str, map_location: str) -> CheckpointFile:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        data = load_file(path, device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file, it may be "
                              f"truncated or corrupt ({exc})") from exc
    meta = None
    if META_KEY in metadata:
        try:
            meta = json.loads(metadata[META_KEY])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: corrupt '{META_KEY}' metadata ({exc})") from exc
    return CheckpointFile(path, data, meta=meta)


def _read_torch(path: str, map_location: str) -> CheckpointFile:
    try:
        data = load_weights_only(path, map_location=map_location)
    except pickle.UnpicklingError as exc:
        refused = refused_global(str(exc))
        if refused:
            raise CheckpointError(
                f"refusing to load {path}: it references the Python object {refused}, which "
                "a weights-only load does not allow, and unpickling it could run code from the file. "
                "Re-save the weights from a trusted environment as a plain state dict "
                "(torch.save(model.state_dict())) or as .safetensors.") from exc
        raise CheckpointError(f"cannot read {path}: the file is truncated or corrupt (not a "
                              f"loadable pickle: {str(exc).splitlines()[-1] if str(exc) else exc})") from exc
    except Exception as exc:  # arbitrary bytes fail in many ways (torch 2.1 reads a zeroed file as
        # a legacy checkpoint and raises KeyError); each of them means an unusable file
        raise CheckpointError(f"cannot read {path}: the file is truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a dict of tensors")
    return CheckpointFile(path, data, meta=project_meta(data))


def project_meta(data: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """This project's metadata in a loaded ``torch.save`` checkpoint (``meta.swinv2_backbone``)."""
    meta = data.get("meta")
    meta = meta.get(META_KEY) if isinstance(meta, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else None


def _read_directory(path: str, map_location: str) -> CheckpointFile:
    config_path = os.path.join(path, "config.json")
    weights = [os.path.join(path, n) for n in DIRECTORY_WEIGHTS if os.path.isfile(os.path.join(path, n))]
    if not os.path.isfile(config_path) or not weights:
        raise CheckpointError(
            f"{path} is a directory but not a Hugging Face / timm checkpoint: expected config.json "
            f"and one of {list(DIRECTORY_WEIGHTS)} (found {sorted(os.listdir(path))})")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {config_path}: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} holds a {type(config).__name__}, not a JSON object")
    inner = _read_file(weights[0], map_location)
    return CheckpointFile(weights[0], inner.data, config=config, meta=inner.meta)


def _read_file(path: str, map_location: str) -> CheckpointFile:
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"cannot read {path}: the file is empty")
    if path.endswith(".safetensors"):
        return _read_safetensors(path, map_location)
    return _read_torch(path, map_location)


def load_checkpoint_file(path: PathLike, map_location: str = "cpu") -> CheckpointFile:
    """Read a checkpoint safely: ``.safetensors`` via safetensors, anything else via
    ``torch.load(weights_only=True)``, a directory as an HF/timm snapshot (``config.json`` +
    weights).

    Args:
        path: File or directory.
        map_location: Device the tensors are loaded to.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file is empty, truncated, corrupt, not a dict, or would need
            unpickling arbitrary Python objects; the message names the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        return _read_directory(path, map_location)
    return _read_file(path, map_location)


def save_state_dict(state: StateDict, path: PathLike, meta: Optional[Dict[str, Any]] = None) -> None:
    """Write a backbone checkpoint: ``.safetensors`` (metadata as JSON) or anything else as a
    ``torch.save`` of ``{'state_dict': ..., 'meta': {'swinv2_backbone': meta}}``.

    Args:
        state: Tensors to write (made contiguous).
        path: Destination file; its suffix picks the format.
        meta: JSON-serialisable facts about the weights (format, architecture, windows).

    Raises:
        AtomicWriteError: The file could not be written (a full disk: the message names the file
            and the free space); ``path`` is then unchanged (:func:`.atomic.write_atomic`).
    """
    path = os.fspath(path)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save

        data = save(state, metadata={META_KEY: json.dumps(meta or {})})
    else:
        buffer = io.BytesIO()
        torch.save({"state_dict": state, "meta": {META_KEY: meta or {}}}, buffer)
        data = buffer.getvalue()
    write_atomic(path, data)
