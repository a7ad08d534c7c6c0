"""Does SimMIM pre-training help the demo's compact UPerNet? Pre-train, then fine-tune twice.

    python tools/demo_simmim.py                  # everything under work_dirs/demo_simmim/

Phases (one summary line each, mmengine's logs in between):

1. generate the demo's deterministic toy dataset (``tools/demo.py``'s, same seed and sizes);
2. pre-train ``configs/simmim/simmim_swinv2-compact_toy-shapes.py`` (the compact UPerNet's backbone
   with a mask token and the SimMIM decoder) on the training images alone, labels unused;
3. draw input | masked | reconstruction for a few validation images into ``pictures/``;
4. for each fine-tuning seed (``--seeds``): fine-tune
   ``configs/demo/upernet_swinv2-compact_toy-shapes.py`` from the SimMIM checkpoint
   (``init_cfg=dict(type='Pretrained', ...)`` on the backbone: it takes the encoder and drops the
   mask token and decoder), evaluating mIoU every ``--val-interval``
   iterations, then train the same config from scratch with the same budget, seed and
   evaluations (two phases per seed);
5. write ``metrics.json``: the mIoU curves per seed, the first evaluation at which the pre-trained
   run reaches the from-scratch run's final mIoU, the SimMIM loss, the times.

Several seeds because one pair of runs says little here: which run learns the last class (the
triangles) within the budget changes with the seed, and the final mIoU with it (docs/demo.md).
A comparison, not a test: the exit status is 0 whichever run is better.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Set before torch is imported; see tools/demo.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from swinv2_backbone.cli import Phases, int_at_least  # noqa: E402
from swinv2_backbone.openmmlab.demo import demo_config, set_iterations  # noqa: E402
from swinv2_backbone.openmmlab.launch import build_runner, load_config  # noqa: E402
from swinv2_backbone.openmmlab.simmim_pictures import (load_simmim, mask_settings,  # noqa: E402
                                                       write_picture)
from swinv2_backbone.openmmlab.toy_data import write_toy_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIM_CONFIG = ROOT / "configs/simmim/simmim_swinv2-compact_toy-shapes.py"
#: The demo's compact UPerNet (``tools/demo.py`` trains it from scratch).
SEG_CONFIG = ROOT / "configs/demo/upernet_swinv2-compact_toy-shapes.py"
#: Phases besides the two fine-tuning runs per seed: data, pre-training, pictures, metrics.
FIXED_PHASES = 4
#: Iterations whose mean SimMIM loss is reported at the start and at the end of pre-training.
LOSS_WINDOW = 20

#: An mIoU curve: (iterations trained, mIoU as a fraction) per evaluation.
Curve = List[Tuple[int, float]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="work_dirs/demo_simmim", help="output directory")
    parser.add_argument("--data-dir", help="toy dataset directory (default: WORK_DIR/data)")
    parser.add_argument("--num-train", type=int, default=240, help="training images")
    parser.add_argument("--num-val", type=int, default=60, help="validation images")
    parser.add_argument("--mim-iters", type=int_at_least(1),
                        help="SimMIM iterations (default: config)")
    parser.add_argument("--norm-target-window", type=int,
                        help="pre-train on the locally normalised target of this odd window (the "
                             "official SwinV2 recipe: 47; default: the config's, the image itself)")
    parser.add_argument("--seg-iters", type=int_at_least(1), default=300,
                        help="UPerNet iterations of each fine-tuning run")
    parser.add_argument("--val-interval", type=int_at_least(1), default=50,
                        help="fine-tuning iterations between mIoU evaluations (also at the end)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="fine-tuning seeds: each runs both fine-tunings (default: 0 1)")
    parser.add_argument("--num-pictures", type=int, default=4,
                        help="validation images to draw reconstructions of")
    return parser.parse_args(argv)


class MetricCurve(Hook):
    """Records ``(iterations trained, metric)`` after every validation.

    Args:
        key: The metric's name in the evaluator's results (``'mIoU'``).
        scale: Factor applied to the value (mmseg reports percent: 0.01 gives fractions).
    """

    priority = "LOW"

    def __init__(self, key: str, scale: float = 1.0) -> None:
        self.key = key
        self.scale = scale
        self.points: Curve = []

    def after_val_epoch(self, runner: Runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Record the metric at the runner's current iteration.

        Args:
            runner: The training runner (``runner.iter``: iterations trained so far).
            metrics: The evaluator's results.
        """
        self.points.append((runner.iter, round(float(metrics[self.key]) * self.scale, 4)))


class LossRecorder(Hook):
    """Records the training loss of every iteration.

    Args:
        key: The loss's name in the model's outputs.
    """

    priority = "LOW"

    def __init__(self, key: str = "loss") -> None:
        self.key = key
        self.losses: List[float] = []

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None,
                         outputs: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """Record this iteration's loss.

        Args:
            runner: The training runner.
            batch_idx: Index of the batch.
            data_batch: The batch.
            outputs: The model's parsed losses (``outputs[key]``: the total loss).
        """
        self.losses.append(float(outputs[self.key]))


def mim_config(data_dir: Path, work_dir: Path, iters: Optional[int],
               norm_target_window: Optional[int] = None) -> Config:
    """The SimMIM demo config pointed at the toy training images and ``work_dir``.

    Args:
        data_dir: Toy dataset root (its ``images/train`` are used, nothing else).
        work_dir: Run directory.
        iters: Pre-training iterations, or None for the config's.
        norm_target_window: Locally normalised target of this window (the official SwinV2 recipe:
            47), or None for the config's target (the image itself).
    """
    cfg = load_config(MIM_CONFIG, work_dir=str(work_dir))
    cfg.train_dataloader.dataset.data_root = str(data_dir / "images/train") + "/"
    if iters is not None:
        set_iterations(cfg, iters)
    if norm_target_window is not None:
        cfg.model.norm_target_window = norm_target_window
    return cfg


def finetune_config(data_dir: Path, work_dir: Path, iters: int, val_interval: int,
                    backbone_checkpoint: Optional[Path]) -> Config:
    """The compact UPerNet config for ``iters`` iterations, evaluated on the validation split every
    ``val_interval`` iterations and at the end, its backbone initialised from
    ``backbone_checkpoint`` (or from scratch when None).

    Args:
        data_dir: Toy dataset root.
        work_dir: Run directory.
        iters: Training iterations.
        val_interval: Iterations between evaluations.
        backbone_checkpoint: The SimMIM run's checkpoint (the backbone takes its encoder and
            drops the mask token and decoder), or None.
    """
    cfg = demo_config(SEG_CONFIG, data_dir, work_dir, iters)
    cfg.val_dataloader = cfg.test_dataloader  # the demo evaluates on the val split
    cfg.val_evaluator = cfg.test_evaluator
    cfg.val_cfg = dict(type="ValLoop")
    cfg.train_cfg.val_interval = val_interval
    if backbone_checkpoint is not None:
        cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(backbone_checkpoint))
    return cfg


def train_recording(cfg: Config, *hooks: Hook) -> Path:
    """Train with extra hooks and return the final checkpoint.

    Args:
        cfg: An iteration-based config.
        *hooks: Hooks registered before training (they keep what they record).
    """
    runner = build_runner(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return Path(cfg.work_dir) / f"iter_{cfg.train_cfg.max_iters}.pth"


def compare(simmim: Curve, scratch: Curve) -> str:
    """Whether and when the curve from SimMIM reaches the final value of the one from scratch."""
    if scratch[-1][1] <= scratch[0][1]:  # no better than its first evaluation: nothing to reach
        return "but from scratch learnt nothing past its first evaluation: no comparison"
    at = first_reaching(simmim, scratch[-1][1])
    return f"reaches it after {at} of {scratch[-1][0]} iterations" if at is not None else \
        "does not reach it"


def first_reaching(curve: Curve, target: float) -> Optional[int]:
    """The iterations of the first evaluation of ``curve`` at or above ``target``, or None.

    Args:
        curve: ``(iterations, value)`` in training order.
        target: The value to reach.
    """
    return next((it for it, value in curve if value >= target), None)


def draw_reconstructions(cfg: Config, checkpoint: Path, images: Sequence[Path], out_dir: Path
                         ) -> List[str]:
    """Input | masked | reconstruction pictures of ``images`` (mask seeds 0, 1, ...).

    Args:
        cfg: The SimMIM config.
        checkpoint: Its trained checkpoint.
        images: Image files.
        out_dir: Output folder (created).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_simmim(cfg, checkpoint)
    settings = mask_settings(cfg)
    return [str(write_picture(model, settings, path, out_dir / path.name, seed))
            for seed, path in enumerate(images)]


def loss_summary(losses: Sequence[float]) -> Dict[str, float]:
    """Mean SimMIM loss over the first and the last :data:`LOSS_WINDOW` iterations.

    Args:
        losses: The loss of every iteration.
    """
    window = min(LOSS_WINDOW, len(losses))
    return {"first": round(statistics.fmean(losses[:window]), 4),
            "last": round(statistics.fmean(losses[-window:]), 4), "window": window}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the comparison; return 0.

    Args:
        argv: Command-line arguments, see :func:`parse_args`.
    """
    args = parse_args(argv)
    work_dir = Path(args.work_dir)
    data_dir = Path(args.data_dir) if args.data_dir else work_dir / "data"
    phases = Phases("demo_simmim", FIXED_PHASES + 2 * len(args.seeds))

    phases.begin(f"generating the toy dataset in {data_dir}")
    dataset = write_toy_dataset(data_dir, num_train=args.num_train, num_val=args.num_val)
    phases.end("data", f"toy dataset: {args.num_train} train + {args.num_val} val images of "
               f"{dataset.image_size} px")

    mim_cfg = mim_config(data_dir, work_dir / "simmim", args.mim_iters, args.norm_target_window)
    mim_iters = mim_cfg.train_cfg.max_iters
    phases.begin(f"SimMIM pre-training on the unlabeled training images, {mim_iters} iterations")
    loss = LossRecorder()
    mim_ckpt = train_recording(mim_cfg, loss)
    losses = loss_summary(loss.losses)
    phases.end("simmim_train", f"SimMIM loss {losses['first']:.3f} -> {losses['last']:.3f}")

    phases.begin("reconstruction pictures")
    val_images = sorted((data_dir / "images/val").glob("*.png"))[:args.num_pictures]
    pictures = draw_reconstructions(mim_cfg, mim_ckpt, val_images, work_dir / "pictures")
    phases.end("pictures", f"{len(pictures)} pictures in {work_dir / 'pictures'}")

    curves: Dict[str, Dict[str, Curve]] = {"simmim": {}, "scratch": {}}
    for seed in args.seeds:
        for name, init in (("simmim", mim_ckpt), ("scratch", None)):
            cfg = finetune_config(data_dir, work_dir / f"seg_{name}_seed{seed}", args.seg_iters,
                                  args.val_interval, init)
            cfg.randomness = dict(seed=seed)
            what = "from the SimMIM backbone" if init else "from scratch"
            phases.begin(f"training UPerNet {what} for {args.seg_iters} iterations, seed {seed}")
            curve = MetricCurve("mIoU", scale=0.01)  # mmseg reports percent
            train_recording(cfg, curve)
            curves[name][str(seed)] = curve.points
            phases.end(f"seg_{name}_seed{seed}",
                       "mIoU " + ", ".join(f"{it}: {v:.3f}" for it, v in curve.points))

    phases.begin("writing metrics.json")
    final = {name: {seed: points[-1][1] for seed, points in runs.items()}
             for name, runs in curves.items()}
    reached = {seed: first_reaching(curves["simmim"][seed], final["scratch"][seed])
               for seed in final["scratch"]}
    metrics = {
        "curves": {name: {seed: [list(point) for point in points] for seed, points in runs.items()}
                   for name, runs in curves.items()},
        "final_mIoU": final,
        "simmim_reaches_scratch_final_at": reached,
        "simmim_loss": losses,
        "iterations": {"simmim": mim_iters, "finetune": args.seg_iters,
                       "val_interval": args.val_interval},
        "seeds": args.seeds,
        "dataset": {"root": str(data_dir), "train": args.num_train, "val": args.num_val,
                    "image_size": dataset.image_size},
        "checkpoints": {"simmim": str(mim_ckpt)},
        "pictures": pictures,
        "times_s": phases.times,
    }
    phases.end("metrics", f"{work_dir / 'metrics.json'}")
    metrics["times_s"]["total"] = round(phases.elapsed(), 1)
    (work_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for seed in reached:
        verdict = compare(curves["simmim"][seed], curves["scratch"][seed])
        print(f"[demo_simmim] seed {seed}: from scratch final mIoU {final['scratch'][seed]:.3f}; "
              f"from SimMIM final mIoU {final['simmim'][seed]:.3f}, {verdict}", flush=True)
    print(f"[demo_simmim] {phases.elapsed():.0f} s -> {work_dir / 'metrics.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
