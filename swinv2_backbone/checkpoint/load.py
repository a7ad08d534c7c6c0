"""Load any supported checkpoint into a :class:`~swinv2_backbone.Swinv2Backbone` or a Swin V1
:class:`~swinv2_backbone.SwinBackbone` (weights of the other version are refused, naming the class
that takes them; a V1 checkpoint's bias tables are resized to the model's windows with a warning).

Policy when fitting the converted weights to the model:

* Stages the model does not build (they come after its last ``out_indices``), and the patch merging
  that would feed them, are dropped and named in the summary.
* Output norms: a checkpoint's ``norm{i}`` that the model does not have (``out_norm=False`` or stage
  not returned) is dropped; a model ``norm{i}`` the checkpoint lacks (classification checkpoints
  only hold the last stage's) keeps its default initialisation (weight 1, bias 0). Both are named
  in the summary.
* Input channels: RGB weights load into a model with another ``in_channels``, the patch
  embedding adapted (:mod:`.channels`: summed for one channel, else repeated and scaled by
  ``3 / in_channels``) and the summary saying so; other channel counts are refused.
* Everything else is strict: a missing, unexpected or wrongly shaped key is an error listing them.
* A ``SwinClassifier`` also takes the checkpoint's classification head (strictly, class count
  included) unless it was built with ``new_head=True``; a backbone leaves the head out, and the
  summary names it among the dropped parts.
* Masked image modeling: a SimMIM model (:class:`~swinv2_backbone.models.SimMIM`, and mmengine's
  ``SwinSimMIM``) takes the encoder, the mask token and the decoder, all strictly, to continue
  pre-training. A backbone built with ``use_mask_token=True`` takes the checkpoint's mask token and
  says so, or keeps its initial token when the checkpoint has none (named in the summary); a plain
  backbone leaves token and decoder out (named among the dropped parts).

One summary line is logged (mmengine's current logger when mmengine is installed, and the
``swinv2_backbone`` logger), naming the format, the architecture and the training windows. If the
model normalises its position-bias coordinates with other windows than the checkpoint was trained
with, a warning gives the ``pretrained_window_sizes`` to set; ``pretrained_window_sizes='checkpoint'``
applies them instead.

Likewise for the ``small_map`` rule: where the checkpoint tells which implementation wrote it
(:attr:`~.convert.ConvertedCheckpoint.small_map`) and that one's rule differs from the model's,
the summary names the rule that reproduces its features, and for a finished dense-prediction
model's weights (an mmdet/mmseg detector or segmentor, HF ``SwinBackbone``) a warning does;
``small_map='checkpoint'`` applies it instead.
"""
from __future__ import annotations

import logging
from importlib.util import find_spec
from typing import List, Mapping, Optional, Tuple, Union

from torch import nn

from ..models import SwinBackboneBase, SwinClassifier
from ..models.attention import resize_bias_table
from ..models.simmim import SimMIMDecoder
from .channels import fit_input_channels
from .common import CheckpointError, StateDict, format_keys
from .convert import ConvertedCheckpoint, convert_checkpoint
from .decisions import (apply_checkpoint_small_map, apply_checkpoint_windows, small_map_advice,
                        window_advice)
from .io import PathLike
from .keys import (BIAS_TABLE, CLASSIFICATION_HEAD, MASK_TOKEN, MASK_TOKEN_KEY, MIM_HEAD, OUT_NORM,
                   split_prefix, stage_of)
from .native import describe_mismatch

LOGGER_NAME = "swinv2_backbone"


def log(level: int, message: str) -> None:
    """Log ``message`` to mmengine's current logger when mmengine is installed, and to the
    ``swinv2_backbone`` logger (always without mmengine; with it, only if that logger has
    handlers somewhere up its hierarchy, so that nothing is printed twice)."""
    package_logger = logging.getLogger(LOGGER_NAME)
    if find_spec("mmengine") is None:
        package_logger.log(level, message)
        return
    from mmengine.logging import print_log

    print_log(message, logger="current", level=level)
    if package_logger.hasHandlers():
        package_logger.log(level, message)


def _unbuilt(state: StateDict, model: nn.Module) -> List[str]:
    """Keys of stages that the model is configured with but does not build (after its last
    output), plus the patch merging that would feed them."""
    built = model.num_built_stages
    if built >= model.num_stages:
        return []
    keys = [k for k in state if (s := stage_of(k)) is not None and built <= s < model.num_stages]
    return keys + [k for k in state if k.startswith(f"layers.{built - 1}.downsample.")]


def _arch_hint(converted: ConvertedCheckpoint, model: nn.Module) -> str:
    ours = (model.embed_dims, tuple(model.depths), tuple(model.num_heads))
    theirs = (converted.embed_dims, converted.depths, converted.num_heads)
    built = model.num_built_stages
    hint = ""
    if ours[0] != theirs[0] or ours[2][:built] != theirs[2][:built] or ours[1][:built] != theirs[1][:built]:
        hint += (f" The checkpoint is {converted.describe_arch()}; the model has embed_dims {ours[0]}, "
                 f"depths {ours[1]}, num_heads {ours[2]}.")
    grid = converted.structure.pos_embed_grid
    if grid is not None and getattr(model, "pretrain_grid", grid) != grid:
        hint += (f" The checkpoint's absolute position embedding covers a {grid}x{grid} patch grid: "
                 f"set use_abs_pos_embed=True, pretrain_img_size={grid * converted.structure.patch_size}.")
    return hint


def check_version(converted: ConvertedCheckpoint, backbone: SwinBackboneBase) -> None:
    """Refuse weights of the other Swin version, naming the class that takes them."""
    if converted.version != backbone.version:
        raise CheckpointError(
            f"{converted.source}: this is a Swin V{converted.version} checkpoint "
            f"({converted.format}), the model a {type(backbone).__name__} (Swin "
            f"V{backbone.version}); use {converted.model_type} / type='{converted.model_type}' "
            f"(build_backbone(checkpoint=...) picks it)")


def resize_bias_tables(converted: ConvertedCheckpoint, backbone: SwinBackboneBase
                       ) -> Tuple[StateDict, Optional[str]]:
    """The checkpoint's weights with every bias table (Swin V1) of a stage whose window differs from
    the model's resized to it (:func:`~swinv2_backbone.models.attention.resize_bias_table`), and a
    warning naming the stages and windows (``None`` when nothing was resized)."""
    state = dict(converted.state_dict)
    tabled = {stage_of(key) for key in state if key.endswith(BIAS_TABLE)}
    changed = {i: (old, new) for i, (old, new) in enumerate(zip(converted.window_sizes,
                                                                backbone.window_size))
               if i < backbone.num_built_stages and i in tabled and old != new}
    for key, value in state.items():
        stage = stage_of(key)
        if key.endswith(BIAS_TABLE) and stage in changed:
            state[key] = resize_bias_table(value, changed[stage][1])
    if not changed:
        return state, None
    windows = ", ".join(f"stage {i + 1}: {old} -> {new}" for i, (old, new) in changed.items())
    return state, (f"{converted.source}: Swin V1 bias tables trained with other windows than the "
                   f"model's were resized bicubically ({windows}); set window_size to the "
                   f"checkpoint's {tuple(converted.window_sizes)}, or load with "
                   "pretrained_window_sizes='checkpoint', to use them as trained")


def fit_state_dict(converted: ConvertedCheckpoint, model: nn.Module,
                   state: Optional[StateDict] = None) -> Tuple[StateDict, List[str]]:
    """Fit converted weights to ``model`` following the module policy.

    Returns the state dict to load (every model key except output norms that keep their default
    initialisation) and the notes for the summary. Raises :class:`CheckpointError` listing missing,
    unexpected and wrongly shaped keys otherwise. ``state``: the converted weights as adjusted for
    the model (:func:`resize_bias_tables`); by default the converted weights themselves.
    """
    # the mask token is fitted apart (fit_mask_token): converted weights never hold it
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != MASK_TOKEN_KEY}
    state = dict(converted.state_dict if state is None else state)
    notes: List[str] = []
    unbuilt = _unbuilt(state, model)
    if unbuilt:
        stages = sorted({stage_of(k) + 1 for k in unbuilt} - {model.num_built_stages})
        notes.append(f"skipped stage(s) {stages} and the patch merging before them ({len(unbuilt)} "
                     f"tensors): not built by the model (out_indices {tuple(model.out_indices)})")
        state = {k: v for k, v in state.items() if k not in unbuilt}
    unused = sorted({f"norm{m.group(1)}" for k in state if (m := OUT_NORM.match(k)) and k not in expected})
    if unused:
        notes.append(f"left out output norm(s) {unused}: the model has none there "
                     f"(out_norm={model.out_norm}, out_indices {tuple(model.out_indices)})")
        state = {k: v for k, v in state.items() if not (OUT_NORM.match(k) and k not in expected)}
    defaults = sorted({f"norm{m.group(1)}" for k in expected if (m := OUT_NORM.match(k)) and k not in state})
    if defaults:
        notes.append(f"output norm(s) {defaults} not in the checkpoint: kept their default "
                     "initialisation (weight 1, bias 0)")
    required = {k: v for k, v in expected.items() if not (OUT_NORM.match(k) and k not in state)}
    problems = describe_mismatch(state, required, "checkpoint", "model", "unexpected keys")
    if problems:
        raise CheckpointError(f"{converted.source} ({converted.format}) does not fit the model: "
                              + "; ".join(problems) + "." + _arch_hint(converted, model))
    return state, notes


def fit_classifier_head(
    converted: ConvertedCheckpoint, model: SwinClassifier
) -> Tuple[Optional[StateDict], List[str]]:
    """The checkpoint's classification head for ``model`` (native ``head.*`` keys) and the notes
    for the summary; ``None`` when the model keeps a fresh head (``model.new_head``).

    Raises:
        CheckpointError: The checkpoint has no classifier, or one of another size (another class
            count names both and the fix), unless ``model.new_head``.
    """
    head = converted.heads.get(CLASSIFICATION_HEAD)
    if model.new_head:
        found = (f"the checkpoint's {head['head.weight'].shape[0]}-class classifier left out"
                 if head is not None and "head.weight" in head else "the checkpoint has no classifier")
        return None, [f"new_head=True: head ({model.num_classes} classes) keeps its initialisation, "
                      f"{found}"]
    if head is None:
        raise CheckpointError(
            f"{converted.source} ({converted.format}) has no classification head, which "
            f"SwinClassifier loads; set new_head=True to train a fresh {model.num_classes}-class "
            "head on these backbone weights")
    expected = {f"head.{k}": tuple(v.shape) for k, v in model.head.state_dict().items()}
    weight = head.get("head.weight")
    if weight is not None and weight.ndim == 2 and weight.shape[1] == model.num_features \
            and weight.shape[0] != model.num_classes:
        raise CheckpointError(
            f"{converted.source}: the checkpoint's classifier has {weight.shape[0]} classes, the model "
            f"num_classes={model.num_classes}; set num_classes={weight.shape[0]}, or new_head=True to "
            f"fine-tune a fresh {model.num_classes}-class head")
    problems = describe_mismatch(head, expected, "checkpoint", "model", "unexpected keys")
    if problems:
        raise CheckpointError(f"{converted.source}: the classification head does not fit the model: "
                              + "; ".join(problems))
    named = ", class names from the checkpoint" if converted.labels is not None else ""
    return head, [f"loaded the classification head ({model.num_classes} classes{named})"]


def is_simmim(model: nn.Module) -> bool:
    """Whether ``model`` is a SimMIM model: a ``Swinv2Backbone`` or ``SwinBackbone`` as ``backbone``
    and a :class:`~swinv2_backbone.models.simmim.SimMIMDecoder` as ``decoder`` (``SimMIM`` and the mmengine
    ``SwinSimMIM``, which this package layer cannot import)."""
    return (isinstance(getattr(model, "backbone", None), SwinBackboneBase)
            and isinstance(getattr(model, "decoder", None), SimMIMDecoder))


def backbone_of(model: nn.Module) -> SwinBackboneBase:
    """The backbone of ``model`` that takes the encoder weights: the model itself (a
    ``Swinv2Backbone`` or Swin V1 ``SwinBackbone``), or the ``backbone`` of a ``SwinClassifier``
    or SimMIM model.

    Raises:
        TypeError: Any other model.
    """
    if isinstance(model, SwinBackboneBase):
        return model
    if isinstance(model, SwinClassifier) or is_simmim(model):
        return model.backbone
    raise TypeError(f"load_pretrained loads a Swinv2Backbone, SwinBackbone, SwinClassifier, SimMIM or "
                    f"SwinSimMIM, got {type(model).__name__}")


def fit_mask_token(
    converted: ConvertedCheckpoint, backbone: SwinBackboneBase, required: bool
) -> Tuple[StateDict, List[str]]:
    """The checkpoint's mask token for ``backbone`` (``{'mask_token': tensor}``, empty when the
    backbone has none or keeps its own) and the notes for the summary.

    Args:
        converted: The converted checkpoint.
        backbone: The backbone to load.
        required: Refuse a checkpoint without a mask token (SimMIM models) instead of keeping the
            backbone's initial token.

    Raises:
        CheckpointError: A token of the wrong shape, or none when ``required``.
    """
    if backbone.mask_token is None:
        return {}, []
    token = converted.heads.get(MASK_TOKEN, {}).get(MASK_TOKEN_KEY)
    if token is None:
        if required:
            raise CheckpointError(
                f"{converted.source} ({converted.format}) has no mask token, which a SimMIM model "
                "loads to continue pre-training; to start pre-training from these encoder weights "
                "load them into model.backbone (a fresh token and decoder)")
        return {}, ["the checkpoint has no mask token: use_mask_token=True keeps its initial token"]
    if tuple(token.shape) != tuple(backbone.mask_token.shape):
        raise CheckpointError(f"{converted.source}: mask token of shape {tuple(token.shape)}, the "
                              f"model's is {tuple(backbone.mask_token.shape)}")
    return {MASK_TOKEN_KEY: token}, ["loaded the mask token (use_mask_token=True)"]


def fit_mim_decoder(converted: ConvertedCheckpoint, decoder: nn.Module) -> Tuple[StateDict, List[str]]:
    """The checkpoint's SimMIM decoder for ``decoder`` (native ``decoder.*`` keys), strictly, and
    the notes for the summary.

    Raises:
        CheckpointError: The checkpoint has no decoder, or one of other keys or shapes (another
            stride or image channel count).
    """
    head = converted.heads.get(MIM_HEAD)
    if head is None:
        raise CheckpointError(
            f"{converted.source} ({converted.format}) has no masked-image-modeling decoder "
            "(decoder.0.*), which a SimMIM model loads; to start pre-training from these encoder "
            "weights load them into model.backbone")
    expected = {f"decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()}
    problems = describe_mismatch(head, expected, "checkpoint", "model", "unexpected keys")
    if problems:
        raise CheckpointError(f"{converted.source}: the masked-image-modeling decoder does not fit "
                              "the model: " + "; ".join(problems))
    return head, ["loaded the masked-image-modeling decoder"]


def load_pretrained(
    model: nn.Module,
    checkpoint: Union[PathLike, Mapping, ConvertedCheckpoint],
    prefix: Optional[str] = None,
    pretrained_window_sizes: Optional[str] = None,
    map_location: str = "cpu",
    format: Optional[str] = None,
    small_map: Optional[str] = None,
) -> ConvertedCheckpoint:
    """Convert ``checkpoint`` (any supported format) and load it into ``model``.

    Args:
        model: A ``Swinv2Backbone`` (with ``use_mask_token=True`` it takes the mask token, see
            :func:`fit_mask_token`), a ``SwinClassifier``: its backbone takes the encoder and
            its ``head`` the classification head (see :func:`fit_classifier_head`), or a SimMIM
            model (:func:`is_simmim`): its backbone takes the encoder and the mask token, its
            ``decoder`` the masked-image-modeling decoder (:func:`fit_mim_decoder`).
        checkpoint: Path, HF/timm directory, an already loaded checkpoint dict, or a
            :class:`ConvertedCheckpoint` (not converted again; ``prefix`` and ``format`` must then
            be unset).
        prefix: Take only keys under this prefix (e.g. ``'backbone.'``).
        pretrained_window_sizes: ``None`` (keep the model's, warn if they disagree with the
            checkpoint) or ``'checkpoint'`` (take them from the checkpoint). For a Swin V1 model,
            whose windows size its bias tables: ``None`` resizes tables trained with other
            windows to the model's (with a warning), ``'checkpoint'`` sets the model's windows to
            the checkpoint's instead (nothing resized; the tables become new parameters, so build
            the optimizer afterwards, as mmengine's runner does).
        map_location: Device for tensors read from disk.
        format: Force a source format instead of detecting it.
        small_map: ``None`` (keep the model's rule; say when the checkpoint's writer has another,
            see :func:`small_map_advice`) or ``'checkpoint'`` (take the rule that reproduces the
            writer's features: :func:`apply_checkpoint_small_map`).

    Returns:
        The :class:`ConvertedCheckpoint`, for inspection.

    Raises:
        CheckpointError: Unreadable or unrecognised checkpoint, or weights that do not fit the
            model (the message lists the keys).
        ValueError: Invalid ``pretrained_window_sizes`` or ``small_map``.
        TypeError: A model of another kind.
    """
    if pretrained_window_sizes not in (None, "checkpoint"):
        raise ValueError(f"pretrained_window_sizes must be None or 'checkpoint', got "
                         f"{pretrained_window_sizes!r}; explicit values belong in the model config")
    if small_map not in (None, "checkpoint"):
        raise ValueError(f"small_map must be None or 'checkpoint', got {small_map!r}; a rule of "
                         "your own belongs in the model config")
    if isinstance(checkpoint, ConvertedCheckpoint):
        if prefix is not None or format is not None:
            raise ValueError("prefix and format apply to converting a checkpoint; this one is "
                             "converted already")
        converted = checkpoint
    else:
        converted = convert_checkpoint(checkpoint, format=format, prefix=prefix,
                                       map_location=map_location)
    backbone = backbone_of(model)
    check_version(converted, backbone)
    windows_note = (apply_checkpoint_windows(converted, backbone)
                    if pretrained_window_sizes == "checkpoint" else None)
    rule_note = apply_checkpoint_small_map(converted, backbone) if small_map == "checkpoint" else None
    resized, table_warning = resize_bias_tables(converted, backbone)
    resized, channels_note = fit_input_channels(resized, backbone.in_channels, converted.source)
    state, notes = fit_state_dict(converted, backbone, resized)
    if channels_note:
        notes.append(channels_note)
    token, token_notes = fit_mask_token(converted, backbone, required=is_simmim(model))
    state.update(token)
    notes += token_notes
    # (head name, module, its state dict) of the heads the model takes
    heads: List[Tuple[str, nn.Module, StateDict]] = []
    if isinstance(model, SwinClassifier):
        head, head_notes = fit_classifier_head(converted, model)
        notes += head_notes
        if head is not None:
            heads.append((CLASSIFICATION_HEAD, model.head, split_prefix(head, "head.")[0]))
    if is_simmim(model):
        decoder, decoder_notes = fit_mim_decoder(converted, model.decoder)
        notes += decoder_notes
        heads.append((MIM_HEAD, model.decoder, split_prefix(decoder, "decoder.")[0]))
    result = backbone.load_state_dict(state, strict=False)
    may_miss = {k for k in backbone.state_dict() if OUT_NORM.match(k)} | (
        set() if token else {MASK_TOKEN_KEY})
    if result.unexpected_keys or set(result.missing_keys) - may_miss:
        raise CheckpointError(f"{converted.source}: load_state_dict disagreed: missing "
                              f"{format_keys(result.missing_keys)}, unexpected "
                              f"{format_keys(result.unexpected_keys)}")
    for _, module, head_state in heads:
        module.load_state_dict(head_state)
    if isinstance(model, SwinClassifier) and heads and converted.labels is not None:
        model.set_class_names(converted.labels)
    if windows_note:
        notes.append(windows_note)
    if rule_note:
        notes.append(rule_note)
    rule_advice = small_map_advice(converted, backbone)
    if rule_advice and not converted.small_map.finished:
        notes.append(rule_advice)
    taken = [name for name, _, _ in heads] + ([MASK_TOKEN] if token else [])
    log(logging.INFO, "load_pretrained: " + "; ".join([converted.summary(taken)] + notes))
    # one warning about the windows: the resize's (bias tables) or the advice (continuous bias)
    advice = table_warning or (window_advice(converted, backbone)
                               if pretrained_window_sizes is None else None)
    if advice:
        log(logging.WARNING, advice)
    if rule_advice and converted.small_map.finished:
        log(logging.WARNING, rule_advice)
    return converted
