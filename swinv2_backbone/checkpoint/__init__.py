"""Checkpoint adapters: load SwinV2 weights from Hugging Face, the official Microsoft release (and
SimMIM), timm, torchvision, mmpretrain, this project and whole mmdet/mmseg models into
``Swinv2Backbone``, and export them back to Hugging Face and timm.

* :func:`load_checkpoint_file` reads files and HF/timm directories without running code from them.
* :func:`convert_checkpoint` detects the format, maps it to native keys, validates it and reports
  what it inferred (:class:`ConvertedCheckpoint`).
* :func:`load_pretrained` fits the result to a model; importing this package registers it as the
  backbone's ``init_cfg=dict(type='Pretrained')`` / ``pretrained=`` loader, and
  :func:`~.state_hook.adapt_foreign_state` as the backbone's ``load_state_dict`` adapter (a whole
  mmdet/mmseg checkpoint whose backbone was their own Swin loads into a model with ours).
* :func:`write_atomic` writes a file crash-safely (complete or absent under its name), and
  :class:`AtomicWriteError` names the file and the free space when that fails.
* :func:`to_hf` / :func:`to_timm` (with :func:`save_hf` / :func:`save_timm`) export;
  :func:`to_hf_classifier` exports a classifier and :func:`to_hf_mim` a SimMIM model
  (:func:`from_model` of a built model).

One module per source layout (``hf``, ``official``, ``timm``, ``torchvision``, ``mmpretrain``,
``native``) holds only that layout's renames; the native key patterns and the rules they share are
in :mod:`.keys`, the mapping result and window reading in :mod:`.common`.
"""
from .atomic import AtomicWriteError, remove_partial_files, write_atomic
from .common import CheckpointError
from .convert import ConvertedCheckpoint, convert_checkpoint
from .export import (Exported, HeadExportError, from_model, save_hf, save_native, save_timm, to_hf,
                     to_hf_classifier, to_hf_mim, to_timm)
from .io import CheckpointFile, load_checkpoint_file, save_state_dict
from .load import load_pretrained
from .registry import FORMATS, CheckpointFormat, detect_format
from .state_hook import adapt_foreign_state
from ..models import STATE_DICT_ADAPTERS, WEIGHT_LOADERS

WEIGHT_LOADERS["Pretrained"] = load_pretrained
if adapt_foreign_state not in STATE_DICT_ADAPTERS:
    STATE_DICT_ADAPTERS.append(adapt_foreign_state)

__all__ = [
    "FORMATS",
    "AtomicWriteError",
    "CheckpointError",
    "CheckpointFile",
    "CheckpointFormat",
    "ConvertedCheckpoint",
    "Exported",
    "HeadExportError",
    "convert_checkpoint",
    "detect_format",
    "from_model",
    "load_checkpoint_file",
    "load_pretrained",
    "remove_partial_files",
    "save_hf",
    "save_native",
    "save_state_dict",
    "save_timm",
    "to_hf",
    "to_hf_classifier",
    "to_hf_mim",
    "to_timm",
    "write_atomic",
]
