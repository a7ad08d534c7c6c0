"""Convert any supported checkpoint to the native layout and say what was inferred."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import torch

from ..models.backbone import SwinBackboneBase
from ..models.presets import ARCH_SETTINGS
from ..models.versions import BACKBONE_TYPES
from .channels import fit_input_channels
from .common import CheckpointError, Mapped, SmallMapSource, Source, format_keys, windows_from_name
from .io import PathLike, load_checkpoint_file, project_meta
from .keys import StateDict, per_stage, split_prefix
from .native import Structure, infer_structure
from .registry import detect_format, get_format

#: Containers that hold the state dict in training checkpoints, in the order they are tried.
CONTAINERS = ("state_dict", "model")


@dataclass
class ConvertedCheckpoint:
    """A checkpoint converted to native keys, with what was inferred from it.

    Args:
        state_dict: Native-layout tensors (validated against :attr:`structure`).
        format: Detected (or forced) source format name.
        source: Path of the file read, or ``'<state dict>'``.
        structure: Architecture read from the tensors.
        window_sizes: Training window of every stage (``None`` where the file does not tell).
        pretrained_window_sizes: Pretrained window of every stage (0: none; ``None`` where the file
            does not tell).
        windows_from: What told the windows (``'config.json'``, ``'relative-coordinate buffers'``,
            ``'file name'``, ``'checkpoint metadata'``), or ``None``.
        dropped: Reason -> source keys deliberately left out of :attr:`state_dict` (buffers,
            heads, other modules).
        notes: Further facts for the summary (containers and prefixes that were unwrapped).
        heads: Head name -> its tensors under native head keys, apart from the encoder weights
            (``'classification head'`` -> ``head.weight``/``head.bias``; ``'mask token'`` ->
            ``mask_token``; ``'masked-image-modeling head'`` -> ``decoder.0.weight``/``bias``). Each head's source keys
            are also listed in :attr:`dropped` under its name: a backbone drops it, a model with
            that head takes it (:meth:`summary` with ``taken``).
        labels: Class names by index of the classification head, where the file names them.
        small_map: The ``small_map`` rule that reproduces the features of the implementation that
            wrote the weights, where the file tells (its layout, or this project's metadata).
    """

    state_dict: StateDict
    format: str
    source: str
    structure: Structure
    window_sizes: Tuple[Optional[int], ...]
    pretrained_window_sizes: Tuple[Optional[int], ...]
    windows_from: Optional[str] = None
    dropped: Dict[str, List[str]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    heads: Dict[str, StateDict] = field(default_factory=dict)
    labels: Optional[Tuple[str, ...]] = None
    small_map: Optional[SmallMapSource] = None

    @property
    def version(self) -> int:
        """Swin version of the weights: 1 (bias tables) or 2 (continuous position bias)."""
        return self.structure.version

    @property
    def model_type(self) -> str:
        """The backbone class (and registry ``type``) these weights are for."""
        return "SwinBackbone" if self.version == 1 else "Swinv2Backbone"

    @property
    def backbone_class(self) -> Type[SwinBackboneBase]:
        """The backbone class these weights are for (:attr:`model_type`)."""
        return BACKBONE_TYPES[self.model_type]

    @property
    def embed_dims(self) -> int:
        """Channels of stage 1."""
        return self.structure.embed_dims

    @property
    def depths(self) -> Tuple[int, ...]:
        """Blocks per stage."""
        return self.structure.depths

    @property
    def num_heads(self) -> Tuple[int, ...]:
        """Heads per stage."""
        return self.structure.num_heads

    @property
    def arch(self) -> Optional[str]:
        """The preset (``'tiny'``, ...) these weights are, or ``None`` for a custom architecture."""
        for name, preset in ARCH_SETTINGS.items():
            if (preset.embed_dims, preset.depths, preset.num_heads) == (
                    self.embed_dims, self.depths, self.num_heads):
                return name
        return None

    @property
    def windows_known(self) -> bool:
        """Whether the file told the training window of every stage."""
        return all(w is not None for w in self.window_sizes)

    def bias_windows(self) -> Tuple[Optional[int], ...]:
        """Per stage, the window that normalised the position-bias coordinates during training
        (the pretrained window, or the training window when there was none); what a model's
        ``pretrained_window_sizes`` must say to reproduce the trained bias."""
        return tuple(p or w if w is not None else None
                     for w, p in zip(self.window_sizes, self.pretrained_window_sizes))

    def describe_arch(self) -> str:
        """``Swin V1, arch 'tiny'`` (``SwinV2`` ...) or the explicit widths, depths and heads."""
        version = "Swin V1" if self.version == 1 else "SwinV2"
        if self.arch:
            return f"{version}, arch '{self.arch}'"
        return (f"{version}, custom arch (embed_dims {self.embed_dims}, depths {self.depths}, "
                f"num_heads {self.num_heads})")

    def describe_windows(self) -> str:
        """Training and pretrained windows as text, or why they are unknown."""
        if not self.windows_known:
            return "training windows unknown (the file does not record them)"
        text = f"training windows {self.window_sizes}"
        if any(self.pretrained_window_sizes):
            text += f", pretrained windows {self.pretrained_window_sizes}"
        return f"{text} (from {self.windows_from})"

    def describe_dropped(self, taken: Sequence[str] = ()) -> str:
        """What was left out, one phrase per reason, except the heads named in ``taken``."""
        return "; ".join(f"{reason} ({len(keys)} keys)" for reason, keys in self.dropped.items()
                         if reason not in taken)

    def summary(self, taken: Sequence[str] = ()) -> str:
        """One line: source, format, architecture, windows and what was dropped; the heads named in
        ``taken`` (loaded by the caller's model) are not called dropped."""
        parts = [f"{self.source}: {self.format} checkpoint, {self.describe_arch()}",
                 self.describe_windows()]
        parts += self.notes
        dropped = self.describe_dropped(taken)
        if dropped:
            parts.append("dropped " + dropped)
        return "; ".join(parts)

    def backbone_cfg(self, checkpoint: Optional[str] = None) -> Dict[str, Any]:
        """The ``Swinv2Backbone`` (SwinV2) or ``SwinBackbone`` (Swin V1) config dict matching these
        weights, to paste into a config.

        Args:
            checkpoint: Path for ``init_cfg=dict(type='Pretrained', checkpoint=...)``; left out if
                ``None``.
        """
        s = self.structure
        cfg: Dict[str, Any] = {"type": self.model_type}
        if self.arch:
            cfg["arch"] = self.arch
        else:
            cfg.update(arch=None, embed_dims=s.embed_dims, depths=s.depths, num_heads=s.num_heads)
        if s.patch_size != 4:
            cfg["patch_size"] = s.patch_size
        if s.in_channels != 3:
            cfg["in_channels"] = s.in_channels
        if s.mlp_ratio != 4.0:
            cfg["mlp_ratio"] = s.mlp_ratio
        if not s.qkv_bias:
            cfg["qkv_bias"] = False
        if not s.patch_norm:
            cfg["patch_norm"] = False
        if s.pos_embed_grid is not None:
            cfg.update(use_abs_pos_embed=True, pretrain_img_size=s.pos_embed_grid * s.patch_size)
        if self.windows_known:
            cfg["window_size"] = _one_if_all_equal(self.window_sizes)
            if any(self.pretrained_window_sizes):
                cfg["pretrained_window_sizes"] = _one_if_all_equal(self.pretrained_window_sizes)
        if checkpoint is not None:
            cfg["init_cfg"] = {"type": "Pretrained", "checkpoint": checkpoint}
        return cfg

    def with_windows(
        self,
        window_sizes: Union[int, Sequence[int]],
        pretrained_window_sizes: Union[int, Sequence[int]] = 0,
    ) -> "ConvertedCheckpoint":
        """A copy with the training windows given explicitly (for files that do not record them).

        Args:
            window_sizes: One window for all stages, or one per stage.
            pretrained_window_sizes: One pretrained window (0: none) for all stages, or one per
                stage.
        """
        stages = self.structure.num_stages
        windows = per_stage(window_sizes, stages, "window_sizes")
        pretrained = per_stage(pretrained_window_sizes, stages, "pretrained_window_sizes")
        return replace(self, window_sizes=windows, pretrained_window_sizes=pretrained,
                       windows_from="given explicitly")

    def with_in_channels(self, channels: int) -> "ConvertedCheckpoint":
        """A copy whose patch embedding takes ``channels`` input channels: RGB weights adapted as
        the loader adapts them (:func:`~.channels.fit_input_channels`, the note added), weights of
        ``channels`` already returned as they are.

        Raises:
            CheckpointError: Weights of neither 3 nor ``channels`` channels.
        """
        state, note = fit_input_channels(self.state_dict, channels, self.source)
        if note is None:
            return self
        return replace(self, state_dict=state, notes=self.notes + [note],
                       structure=replace(self.structure, in_channels=channels))

    def meta(self) -> Dict[str, Any]:
        """JSON-serialisable facts stored with a converted checkpoint (read back as windows)."""
        meta: Dict[str, Any] = {"source_format": self.format, "arch": self.arch,
                                "embed_dims": self.embed_dims, "depths": list(self.depths),
                                "num_heads": list(self.num_heads)}
        if self.windows_known:
            meta.update(window_size=list(self.window_sizes),
                        pretrained_window_sizes=list(self.pretrained_window_sizes))
        if self.small_map is not None:
            meta.update(small_map=self.small_map.rule, small_map_writer=self.small_map.writer,
                        small_map_finished=self.small_map.finished)
        return meta


def _one_if_all_equal(values: Tuple[Optional[int], ...]) -> Union[int, Tuple[Optional[int], ...]]:
    """The shorter config value: one int when every stage has the same."""
    return values[0] if len(set(values)) == 1 else values


def _all_tensors(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap(data: Mapping[str, Any], name: str) -> Tuple[StateDict, Optional[str]]:
    """The state dict inside ``data``: ``data`` itself when it is a dict of tensors, else its
    ``state_dict`` or ``model`` entry. Returns it with the container key used (or ``None``)."""
    if _all_tensors(data):
        return dict(data), None
    for key in CONTAINERS:
        inner = data.get(key)
        if _all_tensors(inner):
            return dict(inner), key
        if isinstance(inner, Mapping) and inner:
            bad = [k for k, v in inner.items() if not isinstance(v, torch.Tensor)]
            raise CheckpointError(f"{name}: '{key}' holds non-tensor entries {format_keys(bad)}")
    raise CheckpointError(
        f"{name}: no state dict found; top-level keys {format_keys(list(data))}. Expected a dict of "
        f"tensors, or one under {list(CONTAINERS)} ('state_dict': mmengine/mmpretrain/mmdet/mmseg, "
        "'model': official release, timm training)")


def _take_prefix(state: StateDict, prefix: str, name: str) -> Tuple[StateDict, List[str]]:
    """The entries under the ``prefix`` the caller named (prefix removed) and the other keys; an
    error when nothing is under it."""
    inner, rest = split_prefix(state, prefix)
    if not inner:
        raise CheckpointError(f"{name}: no key starts with prefix {prefix!r}; first keys "
                              f"{format_keys(list(state)[:8])}")
    return inner, list(rest)


def _name_hint(path: str, config: Optional[Mapping[str, Any]]) -> str:
    """The release name of a file: timm's ``architecture`` from a hub ``config.json``, else the
    file name (the directory name for a directory's weights)."""
    arch = (config or {}).get("architecture")
    if isinstance(arch, str):
        return arch
    return os.path.basename(os.path.dirname(path) if config is not None else path)


def _stage_windows(
    mapped: Mapped, structure: Structure, name_hint: Optional[str]
) -> Tuple[Tuple[Optional[int], ...], Tuple[Optional[int], ...], Optional[str]]:
    """Per-stage training and pretrained windows and their origin: Swin V1's bias-table windows;
    for SwinV2 what the mapping read from the file, else what the release name says
    (``name_hint``), else unknown (``None`` entries)."""
    if structure.version == 1:  # the bias tables are defined for the training window
        return structure.table_windows, (0,) * structure.num_stages, "bias-table shapes"
    windows, origin = mapped.windows, mapped.windows_from
    if not windows and name_hint:
        windows = windows_from_name(name_hint, structure.num_stages, structure.patch_size)
        origin = "file name"
    found = [windows.get(i) for i in range(structure.num_stages)]
    if all(w is None for w in found):
        origin = None
    return (tuple(w.window if w else None for w in found),
            tuple(w.pretrained if w else None for w in found), origin)


def check_claims(claimed: Mapping[str, Any], structure: Structure, name: str) -> None:
    """Refuse a file whose metadata (e.g. HF ``config.json``) describes another architecture than
    its tensors."""
    found = {"embed_dims": structure.embed_dims, "depths": list(structure.depths),
             "num_heads": list(structure.num_heads),
             "use_abs_pos_embed": structure.pos_embed_grid is not None}
    wrong = {k: (v, found[k]) for k, v in claimed.items()
             if (list(v) if isinstance(v, (list, tuple)) else v) != found[k]}
    if wrong:
        raise CheckpointError(f"{name}: the metadata disagrees with the weights: " + ", ".join(
            f"{k} {said!r} in the metadata vs {got!r} in the tensors" for k, (said, got) in wrong.items()))


def convert_checkpoint(
    checkpoint: Union[PathLike, Mapping[str, Any]],
    format: Optional[str] = None,
    prefix: Optional[str] = None,
    map_location: str = "cpu",
) -> ConvertedCheckpoint:
    """Read ``checkpoint`` (a path, an HF/timm directory, or an in-memory dict), detect its format
    (or use ``format``), map it to native keys and validate it.

    Args:
        checkpoint: File, directory, or an already loaded checkpoint dict.
        format: Force a source format (see :data:`~swinv2_backbone.checkpoint.registry.FORMATS`).
        prefix: Take only the keys under this prefix (stripped), e.g. ``'backbone.'``; the rest is
            reported as dropped.
        map_location: Device for tensors read from disk.

    Raises:
        CheckpointError: Unreadable file, unrecognised layout, or weights that do not form a SwinV2
            encoder (unknown/missing keys, wrong shapes); the message lists the offending keys.
    """
    fmt = get_format(format) if format is not None else None
    config = meta = None
    if isinstance(checkpoint, Mapping):
        name, data, meta = "<state dict>", checkpoint, project_meta(checkpoint)
    else:
        read = load_checkpoint_file(checkpoint, map_location)
        name, data, config, meta = read.path, read.data, read.config, read.meta
    state, container = unwrap(data, name)
    notes = [f"state dict taken from '{container}'"] if container else []
    outside: List[str] = []
    if prefix:
        state, outside = _take_prefix(state, prefix, name)
        notes.append(f"took keys under prefix {prefix!r}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("stripped the DataParallel 'module.' prefix")
    fmt = fmt or detect_format(list(state), name, hint=notes[0] if notes else None)
    mapped = fmt.to_native(Source(state, name, config, meta))
    structure = infer_structure(mapped.state_dict, f"{name} (read as {fmt.name})")
    check_claims(mapped.claimed, structure, name)
    hint = None if isinstance(checkpoint, Mapping) else _name_hint(name, config)
    window_sizes, pretrained, windows_from = _stage_windows(mapped, structure, hint)
    dropped = dict(mapped.dropped)
    if outside:
        dropped[f"keys outside prefix {prefix!r}"] = outside
    return ConvertedCheckpoint(
        state_dict=mapped.state_dict, format=fmt.name, source=name, structure=structure,
        window_sizes=window_sizes, pretrained_window_sizes=pretrained, windows_from=windows_from,
        dropped=dropped, notes=notes + mapped.notes, heads=mapped.heads, labels=mapped.labels,
        small_map=mapped.small_map)
