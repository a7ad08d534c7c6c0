"""What a checkpoint decides at load time besides its weights: the windows its position bias was
trained with, and the ``small_map`` rule of the implementation that wrote it. For each, the advice
:func:`~.load.load_pretrained` logs when the model disagrees, and what ``'checkpoint'`` applies
(``pretrained_window_sizes='checkpoint'``, ``small_map='checkpoint'``)."""
from __future__ import annotations

from typing import Optional

from ..models import SMALL_MAP_RULES, SwinBackboneBase
from .common import CheckpointError
from .convert import ConvertedCheckpoint


def window_advice(converted: ConvertedCheckpoint, model: SwinBackboneBase) -> Optional[str]:
    """A warning text when the model's coordinate normalisation differs from the checkpoint's
    (for the stages whose training windows the checkpoint records), else ``None``."""
    trained = converted.bias_windows()
    ours = model.bias_windows()
    current = model.pretrained_window_sizes[:len(ours)]
    differ = [i for i, w in enumerate(ours) if i < len(trained) and trained[i] is not None
              and trained[i] != w]
    if not differ:
        return None
    advice = tuple(trained[i] if i < len(trained) and trained[i] is not None else current[i]
                   for i in range(len(ours)))
    advice += tuple(model.pretrained_window_sizes[len(ours):])
    return (f"{converted.source}: {converted.describe_windows()}, but the model uses window_size {tuple(model.window_size)} with pretrained_window_sizes "
            f"{tuple(current)}, so the position bias of stage(s) {[i + 1 for i in differ]} is "
            f"evaluated at other coordinates. Set pretrained_window_sizes={advice} in the backbone "
            "config, or load with pretrained_window_sizes='checkpoint'.")


def apply_checkpoint_windows(converted: ConvertedCheckpoint, backbone: SwinBackboneBase) -> str:
    """Make the windows the backbone's built stages define their position bias for those the
    checkpoint was trained with (:meth:`~swinv2_backbone.models.SwinBackboneBase.set_bias_windows`:
    SwinV2's ``pretrained_window_sizes``, Swin V1's ``window_size``, so that no bias table is
    resized); returns the note for the summary."""
    trained = converted.bias_windows()
    built = backbone.num_built_stages
    setting = backbone.bias_window_argument
    unknown = [i + 1 for i in range(built) if i >= len(trained) or trained[i] is None]
    if unknown:
        raise CheckpointError(
            f"pretrained_window_sizes='checkpoint': {converted.source} does not record the training "
            f"windows of stage(s) {unknown}; set {setting} in the backbone config")
    values = tuple(trained[:built])
    backbone.set_bias_windows(values)
    return f"{setting} set from the checkpoint: {values}"


def small_map_advice(converted: ConvertedCheckpoint, backbone: SwinBackboneBase) -> Optional[str]:
    """The advice when the implementation that wrote the checkpoint has another ``small_map`` rule
    than the backbone (``None`` when they agree or the checkpoint does not tell): the rule that
    reproduces its features, and how to set it."""
    source = converted.small_map
    if source is None or source.rule == backbone.small_map:
        return None
    return (f"{converted.source}: weights of {source.writer}, whose features small_map="
            f"'{source.rule}' reproduces (the window and shift on maps not larger than the window"
            f"{', and the roll before padding' if source.rule == 'timm' else ''}); the model has "
            f"small_map='{backbone.small_map}': set small_map='{source.rule}' in the backbone config, "
            "or load with small_map='checkpoint'")


def apply_checkpoint_small_map(converted: ConvertedCheckpoint, backbone: SwinBackboneBase) -> str:
    """Give the backbone the ``small_map`` rule that reproduces the checkpoint's writer
    (:attr:`~.convert.ConvertedCheckpoint.small_map`); returns the note for the summary.

    Raises:
        CheckpointError: The checkpoint does not tell its writer's rule.
    """
    source = converted.small_map
    if source is None:
        raise CheckpointError(
            f"small_map='checkpoint': {converted.source} ({converted.format}) does not tell which "
            f"small_map rule its writer had; set small_map in the backbone config (one of "
            f"{SMALL_MAP_RULES})")
    backbone.set_small_map(source.rule)
    return f"small_map set from the checkpoint: '{source.rule}' ({source.writer})"
