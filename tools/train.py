"""Train a detector (mmdet) or segmentor (mmseg) with a Swinv2Backbone from a config.

The task is taken from the config's ``default_scope``. Single process::

    python tools/train.py configs/det/mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py

Multi-process (GPUs with NCCL, or CPU with gloo): ``bash tools/dist_train.sh CONFIG NPROC`` /
``bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR``, which run this script with
``--launcher pytorch`` / ``--launcher slurm``.

Checkpoints are saved crash-safely (``AtomicCheckpointHook``): a run killed at any moment resumes
with ``--resume`` from its last complete checkpoint. ``--resume`` reads that checkpoint with the
weights-only loader before training starts; an unusable one (truncated, zeroed, refused) stops the
run with a message naming it and the newest complete older checkpoint, which ``--resume-fallback``
takes instead. Exit status 2 with an ``error:`` line for that and for a checkpoint that cannot be
written (a full disk: the message names the file and the free space).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mmengine.config import DictAction

from swinv2_backbone.checkpoint import AtomicWriteError
from swinv2_backbone.cli import EXIT_OK, fail
from swinv2_backbone.openmmlab.launch import (LAUNCHERS, build_runner, enable_amp, load_config,
                                              set_resume, setup_launcher, shutdown_distributed)
from swinv2_backbone.openmmlab.resume import ResumeError, resolve_resume


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="config file (mmdet or mmseg)")
    parser.add_argument("--work-dir", help="directory for logs and checkpoints "
                        "(default: ./work_dirs/<config name>)")
    parser.add_argument("--amp", action="store_true", help="mixed-precision training")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr by total batch / auto_scale_lr.base_batch_size")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or without a value from the latest "
                             "complete checkpoint in the work directory")
    parser.add_argument("--resume-fallback", action="store_true",
                        help="with --resume: if the newest checkpoint is unusable (truncated, "
                             "corrupt), resume from the newest complete one before it (logged)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config entries, e.g. train_cfg.max_iters=100")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none", help="job launcher")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0,
                        help="set by torch.distributed.launch (torchrun uses LOCAL_RANK)")
    args = parser.parse_args(argv)
    if args.resume_fallback and args.resume is None:
        parser.error("--resume-fallback needs --resume")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Train; returns the exit status (2 after an ``error:`` line on stderr).

    Args:
        argv: Command-line arguments, see :func:`parse_args`.
    """
    args = parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg or "base_batch_size" not in cfg.auto_scale_lr:
            return fail(f"--auto-scale-lr needs auto_scale_lr.base_batch_size in {args.config}")
        cfg.auto_scale_lr.enable = True
    try:
        set_resume(cfg, resolve_resume(cfg.work_dir, args.resume, args.resume_fallback))
        setup_launcher(cfg, args.launcher)
        build_runner(cfg).train()
    except (ResumeError, AtomicWriteError) as err:
        return fail(err)
    shutdown_distributed()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
