#!/usr/bin/env python
"""Export a model once for every input size: ONNX, OpenVINO IR or a torch.export archive.

    python tools/export.py CKPT --to onnx --output backbone.onnx          # the backbone's stages
    python tools/export.py CKPT --what model --to openvino --output cls.xml   # a classifier
    python tools/export.py CONFIG.py --checkpoint W.pth --what neck --to onnx --output fpn.onnx
    python tools/export.py CONFIG.py --checkpoint W.pth --what model --to onnx --output seg.onnx
    python tools/export.py RETINANET.py --checkpoint W.pth --what model --to openvino --output det.xml
    python tools/export.py CKPT --to openvino --int8 calib_images/ --output backbone_int8.xml
    python tools/export.py --check backbone.onnx --runtime onnxruntime   # run it once, print its range

SOURCE is a checkpoint of any supported format (Hugging Face directory, official / timm /
torchvision / mmpretrain / mmdet / mmseg / this project's file) or an mmdet / mmseg config (.py,
weights from --checkpoint). --what: backbone (the selected stages, NCHW), neck (backbone + FPN
levels, configs only) or model (a checkpoint's classifier logits; a config's segmentor logits at the
input size; a config's one-stage detector - RetinaNet, ATSS or FCOS (tested) - as boxes, scores
and labels after NMS, one image at a time). Every file serves every batch and input size in the
printed range (32-4096 px per side by default, raised where the backbone's small_map rule shrinks
windows on small maps; --fixed-size H W: that one size, which OpenVINO runs faster); inputs are
normalised images, as the backbone takes them. Two-stage detectors (Faster / Mask R-CNN, Cascade,
HTC: mmcv's RoIAlign) export backbone + neck only. --int8 IMAGES
(OpenVINO only; needs nncf): the file quantized to int8 by NNCF, its activation ranges measured on
those images (files, folders, globs; normalised with --mean/--std, ImageNet's by default, as
extract_features.py does); unreadable images or images outside the file's sizes are reported and
skipped. --int8-cpu: the CPUs the int8 file is for (any, the default, or vnni; see
swinv2_backbone.deploy.quantize.INT8_CPUS).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from swinv2_backbone.checkpoint import CheckpointError
from swinv2_backbone.cli import EXIT_OK, EXIT_SOME_FAILED, collect_errors, fail, int_at_least
from swinv2_backbone.deploy import (DEFAULT_MAX_BATCH, DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, OPSETS,
                                    PRECISIONS, RUNTIMES, TARGETS, WHAT, Exportable, ExportError,
                                    SizeRange, export,
                                    load_exported, load_source)
from swinv2_backbone.deploy.exporter import planned_sizes
from swinv2_backbone.deploy.quantize import INT8_CPUS, calibration_images, quantize_int8
from swinv2_backbone.deploy.targets import check_target


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("source", nargs="?", help="checkpoint or mmdet/mmseg config")
    parser.add_argument("--to", choices=tuple(TARGETS), default="onnx", help="file format")
    parser.add_argument("--output", help="the file to write (*.onnx, *.xml, *.pt2)")
    parser.add_argument("--checkpoint", help="weights for a config source")
    parser.add_argument("--what", choices=WHAT, default="backbone", help="what to export")
    parser.add_argument("--min-side", type=int_at_least(1), default=DEFAULT_MIN_SIDE,
                        help="smallest height and width to serve")
    parser.add_argument("--max-side", type=int_at_least(1), default=DEFAULT_MAX_SIDE,
                        help="largest height and width to serve")
    parser.add_argument("--max-batch", type=int_at_least(1),
                        help=f"largest batch to serve (default {DEFAULT_MAX_BATCH}; 1 for a whole "
                             "detector)")
    parser.add_argument("--fixed-size", type=int_at_least(1), nargs=2, metavar=("H", "W"),
                        help="serve this one size only (faster in OpenVINO than a range)")
    parser.add_argument("--int8", nargs="+", metavar="IMAGES",
                        help="quantize to int8 (OpenVINO), calibrated on these images")
    parser.add_argument("--mean", type=float, nargs="+",
                        help="per-channel mean of [0, 1] pixels for --int8 (default ImageNet's)")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel std for --int8")
    parser.add_argument("--int8-cpu", choices=INT8_CPUS, default="any",
                        help="the CPUs the --int8 file is for: any (7-bit weights, exact on AVX2 "
                             "too) or vnni (8-bit weights; only CPUs with AVX512-VNNI, AVX-VNNI or "
                             "AMX, on others its int8 sums saturate)")
    parser.add_argument("--opset", type=int, default=18,
                        help=f"ONNX opset ({OPSETS.start}-{OPSETS.stop - 1})")
    parser.add_argument("--check", metavar="FILE",
                        help="load an exported file, run it once at its smallest size, print its range")
    parser.add_argument("--runtime", choices=tuple(RUNTIMES), help="runtime for --check")
    parser.add_argument("--precision", choices=PRECISIONS, default="f32",
                        help="OpenVINO precision for --check")
    args = parser.parse_args(argv)
    if args.check is None and (args.source is None or args.output is None):
        parser.error("give SOURCE and --output (or --check FILE)")
    if args.int8 and args.to != "openvino":
        parser.error(f"--int8 writes an OpenVINO IR: add --to openvino (got --to {args.to})")
    if args.int8_cpu != "any" and not args.int8:
        parser.error("--int8-cpu chooses the CPUs of an --int8 file; give --int8 too")
    if (args.mean or args.std) and not args.int8:
        parser.error("--mean/--std normalise the --int8 calibration images; give --int8 too")
    return args


def export_int8(exportable: Exportable, args: argparse.Namespace,
                fixed_size: Optional[Tuple[int, int]]) -> Tuple[SizeRange, int]:
    """Export to a temporary f32 IR beside the output, then quantize it into the output (the
    calibration images that cannot be used are reported and skipped); returns the sizes served and
    the number of images skipped."""
    output = check_target("openvino", args.output, args.opset)
    options = dict(min_side=args.min_side, max_side=args.max_side, max_batch=args.max_batch,
                   fixed_size=fixed_size)
    skipped = []
    images = list(calibration_images(args.int8, planned_sizes(exportable, **options), args.mean,
                                     args.std, collect_errors(skipped)))
    if not images:
        raise ExportError(f"none of the {len(skipped)} --int8 inputs could calibrate the "
                          "quantization (each reported above)")
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        f32 = Path(tmp) / "f32.xml"
        sizes = export(exportable, f32, "openvino", opset=args.opset, **options)
        print(f"quantizing to int8, calibrated on {len(images)} image(s)"
              + (f" ({len(skipped)} skipped)" if skipped else ""))
        quantize_int8(f32, output, images, args.int8_cpu)
    return sizes, len(skipped)


def check(path: str, runtime: Optional[str], precision: str) -> None:
    model = load_exported(path, runtime, precision=precision)
    sizes = model.sizes
    outs = model(torch.zeros(1, sizes.channels, sizes.min_height, sizes.min_width))
    shapes = ", ".join(f"{name} {tuple(o.shape)}" for name, o in zip(model.outputs, outs))
    print(f"{path}: {model.runtime}, serves {sizes.describe()}; at the smallest size: {shapes}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.check is not None:
            check(args.check, args.runtime, args.precision)
            return EXIT_OK
        start = time.perf_counter()
        exportable = load_source(args.source, args.checkpoint, args.what)
        print(f"exporting {exportable.description} to {args.to}")
        fixed_size = tuple(args.fixed_size) if args.fixed_size else None
        skipped = 0
        if args.int8:
            sizes, skipped = export_int8(exportable, args, fixed_size)
        else:
            sizes = export(exportable, args.output, args.to, min_side=args.min_side,
                           max_side=args.max_side, max_batch=args.max_batch, opset=args.opset,
                           fixed_size=fixed_size)
    except (ExportError, CheckpointError, OSError, ValueError) as err:
        return fail(err)
    print(f"wrote {args.output} in {time.perf_counter() - start:.0f} s: inputs {sizes.describe()}, "
          f"outputs {', '.join(exportable.outputs)}")
    return EXIT_SOME_FAILED if skipped else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
