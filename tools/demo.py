"""End-to-end demo: toy data → train a compact SwinV2 Mask R-CNN and UPerNet from scratch through
mmdet's and mmseg's runners → evaluate the saved checkpoints → metrics JSON and prediction images.

    python tools/demo.py                      # everything under work_dirs/demo/

Phases (one summary line each, mmengine's logs in between):

1. generate the deterministic toy dataset (COCO json + ADE20K-style label maps of the same scenes);
2. train ``configs/demo/mask-rcnn_swinv2-compact_fpn_toy-shapes.py``;
3. evaluate its checkpoint (COCO bbox / segm mAP), as ``tools/test.py`` does: a fresh runner loads
   the checkpoint with weights-only ``torch.load``;
4. train ``configs/demo/upernet_swinv2-compact_toy-shapes.py``;
5. evaluate it (mIoU);
6. draw ground truth | prediction for a few validation images into ``predictions/{det,seg}/``,
   write ``metrics.json``.

Exits with status 1 if bbox mAP or mIoU stays below its target (``--min-bbox-map``,
``--min-miou``).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other work, spinning threads
# of torch's thread pool take the cores the training needs; on an idle machine it makes no difference.
# Must be set before torch is imported (an explicit setting of the caller wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import mmcv  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from swinv2_backbone.cli import EXIT_OK, EXIT_SOME_FAILED, Phases, int_at_least  # noqa: E402
from swinv2_backbone.openmmlab.demo import demo_config  # noqa: E402
from swinv2_backbone.openmmlab.launch import build_runner  # noqa: E402
from swinv2_backbone.openmmlab.toy_data import write_toy_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = ROOT / "configs/demo/mask-rcnn_swinv2-compact_fpn_toy-shapes.py"
SEG_CONFIG = ROOT / "configs/demo/upernet_swinv2-compact_toy-shapes.py"
PHASES = 6


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="work_dirs/demo", help="output directory")
    parser.add_argument("--data-dir", help="toy dataset directory (default: WORK_DIR/data)")
    parser.add_argument("--num-train", type=int, default=240, help="training images")
    parser.add_argument("--num-val", type=int, default=60, help="validation images")
    parser.add_argument("--det-iters", type=int_at_least(1),
                        help="Mask R-CNN iterations (default: config)")
    parser.add_argument("--seg-iters", type=int_at_least(1),
                        help="UPerNet iterations (default: config)")
    parser.add_argument("--num-pictures", type=int, default=6,
                        help="validation images to draw per task")
    parser.add_argument("--min-bbox-map", type=float, default=0.5, help="bbox mAP target")
    parser.add_argument("--min-miou", type=float, default=0.7, help="mIoU target (fraction)")
    return parser.parse_args(argv)


def train(cfg: Config) -> Path:
    """Train and return the final checkpoint.

    Args:
        cfg: Config from :func:`demo_config`.
    """
    runner = build_runner(cfg)
    runner.train()
    return Path(cfg.work_dir) / f"iter_{cfg.train_cfg.max_iters}.pth"


def test(cfg: Config, checkpoint: Path) -> Tuple[Runner, Dict[str, float]]:
    """Evaluate ``checkpoint`` with a fresh runner, as ``tools/test.py`` does.

    Args:
        cfg: Config from :func:`demo_config`.
        checkpoint: Checkpoint written by :func:`train`.

    Returns:
        The runner (its model holds the checkpoint's weights) and the metrics.
    """
    cfg = cfg.copy()
    cfg.load_from = str(checkpoint)
    runner = build_runner(cfg)
    return runner, runner.test()


def draw_predictions(runner: Runner, out_dir: Path, count: int) -> List[str]:
    """Draw ground truth (left) and prediction (right) of the first ``count`` test images.

    Args:
        runner: A runner whose ``test()`` has run (model loaded, visualizer has the classes).
        out_dir: Output directory.
        count: Number of images.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = runner.test_dataloader.dataset
    model = runner.model
    model.eval()
    files = []
    for index in range(min(count, len(dataset))):
        with torch.no_grad():  # test_step leaves grad mode alone; the drawing needs plain arrays
            sample = model.test_step(pseudo_collate([dataset[index]]))[0]
        image = mmcv.imread(sample.img_path, channel_order="rgb")
        out_file = out_dir / Path(sample.img_path).name
        runner.visualizer.add_datasample(out_file.stem, image, sample, draw_gt=True,
                                         draw_pred=True, out_file=str(out_file))
        files.append(str(out_file))
    return files


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo; return the exit status (0: targets met).

    Args:
        argv: Command-line arguments, see :func:`parse_args`.
    """
    args = parse_args(argv)
    work_dir = Path(args.work_dir)
    data_dir = Path(args.data_dir) if args.data_dir else work_dir / "data"
    phases = Phases("demo", PHASES)

    phases.begin(f"generating the toy dataset in {data_dir}")
    dataset = write_toy_dataset(data_dir, num_train=args.num_train, num_val=args.num_val)
    phases.end("data", f"toy dataset: {args.num_train} train + {args.num_val} val images of "
               f"{dataset.image_size} px")

    det_cfg = demo_config(DET_CONFIG, data_dir, work_dir / "det", args.det_iters)
    phases.begin(f"training Mask R-CNN for {det_cfg.train_cfg.max_iters} iterations")
    det_ckpt = train(det_cfg)
    phases.end("det_train", f"Mask R-CNN trained: {det_ckpt}")

    phases.begin("evaluating the Mask R-CNN checkpoint (COCO mAP)")
    det_runner, det_metrics = test(det_cfg, det_ckpt)
    bbox_map = float(det_metrics["coco/bbox_mAP"])
    segm_map = float(det_metrics["coco/segm_mAP"])
    phases.end("det_test", f"bbox mAP {bbox_map:.3f}, segm mAP {segm_map:.3f}")

    seg_cfg = demo_config(SEG_CONFIG, data_dir, work_dir / "seg", args.seg_iters)
    phases.begin(f"training UPerNet for {seg_cfg.train_cfg.max_iters} iterations")
    seg_ckpt = train(seg_cfg)
    phases.end("seg_train", f"UPerNet trained: {seg_ckpt}")

    phases.begin("evaluating the UPerNet checkpoint (mIoU)")
    seg_runner, seg_metrics = test(seg_cfg, seg_ckpt)
    miou = float(seg_metrics["mIoU"]) / 100.0  # mmseg reports percent
    phases.end("seg_test", f"mIoU {miou:.3f}")

    phases.begin("drawing predictions and writing metrics.json")
    pictures = {
        "det": draw_predictions(det_runner, work_dir / "predictions/det", args.num_pictures),
        "seg": draw_predictions(seg_runner, work_dir / "predictions/seg", args.num_pictures),
    }
    passed = bbox_map >= args.min_bbox_map and miou >= args.min_miou
    metrics = {
        "bbox_mAP": bbox_map,
        "segm_mAP": segm_map,
        "bbox_mAP_50": float(det_metrics["coco/bbox_mAP_50"]),
        "segm_mAP_50": float(det_metrics["coco/segm_mAP_50"]),
        "mIoU": miou,
        "aAcc": float(seg_metrics["aAcc"]) / 100.0,
        "targets": {"bbox_mAP": args.min_bbox_map, "mIoU": args.min_miou, "met": passed},
        "iterations": {"det": det_cfg.train_cfg.max_iters, "seg": seg_cfg.train_cfg.max_iters},
        "dataset": {"root": str(data_dir), "train": args.num_train, "val": args.num_val,
                    "image_size": dataset.image_size},
        "checkpoints": {"det": str(det_ckpt), "seg": str(seg_ckpt)},
        "pictures": pictures,
        "times_s": phases.times,
    }
    phases.end("pictures", f"{len(pictures['det']) + len(pictures['seg'])} pictures in "
               f"{work_dir / 'predictions'}")
    metrics["times_s"]["total"] = round(phases.elapsed(), 1)
    (work_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"[demo] bbox mAP {bbox_map:.3f} (target {args.min_bbox_map}), segm mAP {segm_map:.3f}, "
          f"mIoU {miou:.3f} (target {args.min_miou}) in {phases.elapsed():.0f} s -> "
          f"{work_dir / 'metrics.json'}: {'PASS' if passed else 'FAIL: below target'}", flush=True)
    return EXIT_OK if passed else EXIT_SOME_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
