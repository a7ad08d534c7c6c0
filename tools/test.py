"""Evaluate a checkpoint of a detector (mmdet), segmentor (mmseg) or SimMIM model with a
Swinv2Backbone.

The task is taken from the config's ``default_scope``; the metrics are the config's
``test_evaluator`` (COCO bbox/segm mAP, mIoU, the SimMIM held-out reconstruction loss, ...)::

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl | --out pred_dir] [--show-dir vis]

Multi-process: ``bash tools/dist_test.sh CONFIG CHECKPOINT NPROC`` (``--launcher pytorch``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mmengine.config import DictAction

from swinv2_backbone.checkpoint import CheckpointError, load_checkpoint_file
from swinv2_backbone.cli import fail
from swinv2_backbone.openmmlab.launch import (LAUNCHERS, add_prediction_dump,
                                              build_runner, enable_visualization, load_config,
                                              setup_launcher, shutdown_distributed)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="config file (mmdet, mmseg or SimMIM)")
    parser.add_argument("checkpoint", help="checkpoint file (mmengine training checkpoint)")
    parser.add_argument("--work-dir", help="directory for logs and metrics "
                        "(default: ./work_dirs/<config name>)")
    parser.add_argument("--out", help="detection: dump raw results to this .pkl file; "
                        "segmentation: write predicted label maps into this directory")
    parser.add_argument("--show-dir", help="draw predictions into this directory (relative to "
                        "the run's log directory)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config entries, e.g. test_dataloader.batch_size=2")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none", help="job launcher")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0,
                        help="set by torch.distributed.launch (torchrun uses LOCAL_RANK)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    """Evaluate and return the metrics.

    Args:
        argv: Command-line arguments, see :func:`parse_args`.
    """
    args = parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    missing = [key for key in ("test_dataloader", "test_cfg", "test_evaluator") if not cfg.get(key)]
    if missing:
        sys.exit(fail(f"{args.config} has no {', '.join(missing)}: it defines no evaluation "
                      "(add them, e.g. as "
                      "configs/simmim/simmim_swinv2-t-p4-w6_100e_image-folder-192px.py does)"))
    try:  # mmengine's load_from unpickles anything on torch < 2.6: read it weights-only first
        load_checkpoint_file(args.checkpoint)
    except (CheckpointError, OSError) as err:
        sys.exit(fail(err))
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.out:
        add_prediction_dump(cfg, args.out)
    setup_launcher(cfg, args.launcher)
    metrics = build_runner(cfg).test()
    shutdown_distributed()
    return metrics


if __name__ == "__main__":
    main()
