"""What ``tools/train.py``, ``tools/test.py`` and ``tools/demo.py`` share: reading a config, telling
detection from segmentation, CPU multi-process set-up, and building mmengine runners.

The task comes from the config's ``default_scope`` (``'mmdet'`` → ``'det'``, ``'mmseg'`` → ``'seg'``,
``'mmengine'`` → ``'mim'``: SimMIM pre-training, ``configs/simmim/``, training only),
which the mmdet / mmseg ``default_runtime`` bases set. Importing this module runs
``swinv2_backbone/__init__`` and this subpackage's first (Python imports the parents), so the backbone
is registered and mmengine checkpoints load with weights-only ``torch.load`` before any runner
touches a checkpoint.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple
from unittest import mock

import mmengine.config.config as mmengine_config
import torch
from mmengine.config import Config
from mmengine.dist import init_dist, is_distributed
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

#: ``default_scope`` of a config → task name.
TASKS: Dict[str, str] = {"mmdet": "det", "mmseg": "seg", "mmengine": "mim"}
LAUNCHERS = ("none", "pytorch", "slurm", "mpi")


def config_task(cfg: Config) -> str:
    """``'det'``, ``'seg'`` or ``'mim'`` from the config's ``default_scope``.

    Args:
        cfg: A loaded config.
    """
    scope = cfg.get("default_scope")
    if scope not in TASKS:
        raise ValueError(f"cannot tell the task of this config: default_scope is {scope!r}, expected "
                         f"one of {sorted(TASKS)} (inherit mmdet::_base_/default_runtime.py or "
                         "mmseg::_base_/default_runtime.py)")
    return TASKS[scope]


def load_config(path: "str | Path", cfg_options: Optional[Dict[str, Any]] = None,
                work_dir: Optional[str] = None) -> Config:
    """Load a config, apply ``--cfg-options`` overrides, fix the work directory and make its
    checkpoint saving crash-safe (:func:`use_atomic_checkpoints`).

    Args:
        path: Config file.
        cfg_options: ``key.sub=value`` overrides (as parsed by mmengine's ``DictAction``).
        work_dir: Output directory; default: the config's ``work_dir`` or
            ``./work_dirs/<config name>``.
    """
    cfg = Config.fromfile(str(path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / Path(path).stem)
    config_task(cfg)
    use_atomic_checkpoints(cfg)
    return cfg


def use_atomic_checkpoints(cfg: Config) -> None:
    """Save the config's checkpoints with :class:`~.checkpointing.AtomicCheckpointHook` instead of
    mmengine's ``CheckpointHook`` (same arguments): never a half-written checkpoint, never a
    ``last_checkpoint`` naming one. Other checkpoint hooks are left as they are.

    Args:
        cfg: Config, updated in place.
    """
    hook = cfg.get("default_hooks", {}).get("checkpoint")
    if hook is not None and hook.get("type") in ("CheckpointHook", CheckpointHook):
        hook["type"] = "AtomicCheckpointHook"


def enable_amp(cfg: Config) -> None:
    """Switch the config's ``OptimWrapper`` to mixed precision (``AmpOptimWrapper``, dynamic loss
    scale); already-AMP configs are left as they are."""
    wrapper = cfg.optim_wrapper.get("type", "OptimWrapper")
    if wrapper == "AmpOptimWrapper":
        print_log("AMP is already enabled in the config", logger="current")
        return
    if wrapper != "OptimWrapper":
        raise ValueError(f"--amp needs optim_wrapper.type 'OptimWrapper' (or 'AmpOptimWrapper'), "
                         f"the config has {wrapper!r}")
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.loss_scale = "dynamic"


def set_resume(cfg: Config, checkpoint: Optional[str]) -> None:
    """Resume from ``checkpoint`` (as :func:`.resume.resolve_resume` chose and checked it), or with
    ``None`` start fresh.

    Args:
        cfg: Config to update in place.
        checkpoint: A checkpoint path, or ``None``.
    """
    if checkpoint is None:
        return
    cfg.resume = True
    cfg.load_from = checkpoint


def _replace_sync_bn(node: Any) -> int:
    """Turn every ``dict(type='SyncBN')`` in a config tree into ``'BN'``; return how many."""
    count = 0
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value)
    return count


def setup_launcher(cfg: Config, launcher: str) -> None:
    """Record the launcher and, on a host without CUDA, start the process group with gloo.

    mmengine's launchers (``torchrun`` env vars, ``srun`` / SLURM env vars, MPI) are used as they
    are; only their ``torch.cuda.set_device`` call is skipped when there is no GPU, and the
    ``nccl`` backend of the default runtime becomes ``gloo``. The DDP wrapper then gets
    ``device_ids=None`` (what torch requires for CPU modules), and ``SyncBN`` layers, which torch
    only supports on GPUs, become per-process ``BN`` (with a warning).

    Args:
        cfg: Config, updated in place.
        launcher: One of :data:`LAUNCHERS`.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    cfg.launcher = launcher
    if launcher == "none" or torch.cuda.is_available():
        return
    dist_cfg = dict(cfg.get("env_cfg", {}).get("dist_cfg", {}))
    if dist_cfg.get("backend", "nccl") == "nccl":
        dist_cfg["backend"] = "gloo"
    if not is_distributed():
        with mock.patch.object(torch.cuda, "set_device", lambda device: None):
            init_dist(launcher, **dist_cfg)
    wrapper = dict(cfg.get("model_wrapper_cfg") or dict(type="MMDistributedDataParallel"))
    wrapper.update(device_ids=None)
    wrapper.setdefault("broadcast_buffers", False)
    wrapper.setdefault("find_unused_parameters", cfg.get("find_unused_parameters", False))
    cfg.model_wrapper_cfg = wrapper
    replaced = _replace_sync_bn(cfg.model)
    if replaced:
        print_log(f"CPU distributed run: {replaced} SyncBN norm config(s) became BN (torch's "
                  "SyncBatchNorm needs GPUs); batch statistics are per process",
                  logger="current", level=logging.WARNING)


def _format_once(format_code: Callable[..., Tuple[str, bool]]) -> Callable[..., Tuple[str, bool]]:
    """``format_code`` (yapf's ``FormatCode``) remembering its last results: the formatted text
    depends only on the text and the options."""
    @functools.lru_cache(maxsize=8)
    def formatted(text: str, options: str) -> Tuple[str, bool]:
        return format_code(text, **json.loads(options))

    @functools.wraps(format_code)
    def format_once(text: str, **options: Any) -> Tuple[str, bool]:
        return formatted(text, json.dumps(options, sort_keys=True))

    format_once.formats_once = True
    return format_once


def format_configs_once() -> None:
    """Make mmengine format a config's text once per process instead of at every use.

    A runner formats its whole config with yapf (``Config.pretty_text``, 0.3-0.6 s each on a 2-core
    CPU) when it logs it, dumps it, starts its hooks and saves each checkpoint: five or more times
    per run for the same text (about 3 s of a two-iteration ``tools/train.py``, 2026-12-07). The
    result is the same text, once computed. Idempotent; changes nothing else of mmengine.
    """
    if not getattr(mmengine_config.FormatCode, "formats_once", False):
        mmengine_config.FormatCode = _format_once(mmengine_config.FormatCode)


def build_runner(cfg: Config) -> Runner:
    """Build the runner the config asks for (``runner_type``) or mmengine's default ``Runner``
    (configs formatted once: :func:`format_configs_once`)."""
    format_configs_once()
    if "runner_type" in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def shutdown_distributed() -> None:
    """Wait for every process, then destroy the process group. Without it the processes tear gloo
    down at exit while a peer may still be saving its checkpoint, which can abort one of them
    ("terminate called without an active exception") after a successful run."""
    if is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Make the test loop draw its predictions into ``show_dir`` (relative to the run's
    timestamped log directory, as mmdet and mmseg do).

    Args:
        cfg: Config, updated in place.
        show_dir: Output directory for the drawings.
    """
    hook = cfg.get("default_hooks", {}).get("visualization")
    if hook is None:
        raise ValueError("the config has no default_hooks.visualization to draw predictions with")
    hook["draw"] = True
    if config_task(cfg) == "det":
        hook["test_out_dir"] = show_dir
    else:
        hook["interval"] = 1
        cfg.visualizer["save_dir"] = show_dir


def add_prediction_dump(cfg: Config, out: str) -> None:
    """Keep raw test predictions: detection results as a pickle (``out`` ends in ``.pkl``),
    segmentation label maps as PNGs in directory ``out``.

    Args:
        cfg: Config, updated in place (before the runner is built).
        out: Output file (det) or directory (seg).
    """
    if config_task(cfg) == "det":
        if not out.endswith((".pkl", ".pickle")):
            raise ValueError(f"--out for detection must be a .pkl/.pickle file, got {out!r}")
        metrics = cfg.test_evaluator
        metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
        cfg.test_evaluator = metrics + [dict(type="DumpDetResults", out_file_path=out)]
    else:
        cfg.test_evaluator["output_dir"] = out
        cfg.test_evaluator["keep_results"] = True
