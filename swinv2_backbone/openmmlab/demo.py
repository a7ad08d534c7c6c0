"""The demos' runs (``tools/demo.py``, ``tools/demo_simmim.py``): a demo config pointed at the toy
data and a run directory, and trained for another number of iterations with its schedule along."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from mmengine.config import Config

from .launch import load_config


def demo_config(path: Path, data_dir: Path, work_dir: Path, iters: Optional[int]) -> Config:
    """Load a demo config pointed at ``data_dir`` and ``work_dir``, optionally with another
    number of training iterations (the schedule's end moves along). Validation during training is
    switched off: the demo evaluates once, on the saved checkpoint.

    Args:
        path: Config file.
        data_dir: Toy dataset root.
        work_dir: Run directory.
        iters: Training iterations, or None for the config's.
    """
    cfg = load_config(path, work_dir=str(work_dir))
    root = str(data_dir) + "/"
    for loader in ("train_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = root
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    if cfg.default_scope == "mmdet":
        cfg.test_evaluator.ann_file = root + "annotations/instances_val.json"
    if iters is not None:
        set_iterations(cfg, iters)
    return cfg


def set_iterations(cfg: Config, iters: int) -> None:
    """Train an iteration-based config for ``iters`` iterations: the schedule's end moves along
    (a warm-up keeps its length unless it would not fit), and the one checkpoint is saved at the
    end.

    Args:
        cfg: Config, updated in place.
        iters: Training iterations, >= 1.
    """
    if iters < 1:
        raise ValueError(f"iterations must be >= 1, got {iters}")
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = iters
    cfg.default_hooks.checkpoint.interval = iters
    for scheduler in cfg.param_scheduler:  # stretch the schedule: warm-up kept, end moved
        scheduler.end = iters if scheduler.end == old else min(scheduler.end, iters)
        scheduler.begin = min(scheduler.begin, scheduler.end - 1)
