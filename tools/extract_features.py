"""Extract multi-scale SwinV2 features of images into .safetensors files (and PCA pictures).

    python tools/extract_features.py INPUT... --out DIR [--checkpoint PATH] [--arch tiny]
        [--window-size W ...] [--stages stage1 stage3] [--batch-size N] [--device cpu|cuda]
        [--dtype fp32|bf16|fp16] [--pca] [--size H W | --short-side N] [--in-channels N]
        [--mean M... --std S...] [--max-pixels N] [--prefetch N] [--overwrite]
        [--runtime torch|onnxruntime|openvino [--precision f32|bf16] [--exported FILE]]

INPUT: image files, folders (their images, not recursive) or glob patterns (quote them; ``**``
recurses). For every image, ``DIR/<stem>.safetensors`` holds one tensor per stage, ``(C, h, w)``
with ``h = ceil(H / stride)``, in the chosen dtype, and metadata (JSON strings): stages, strides,
channels, input_size, original_size, padded_size, source, checkpoint, dtype, mean, std. With
``--pca``, ``DIR/<stem>_<stage>_pca.png`` shows each stage's 3 leading principal components as RGB at
the image's original size.

Images are batched only with images of the same (resized) size, so every image's features equal
those of a batch of one; ``--size`` makes all sizes equal. The architecture comes from the checkpoint
(any supported format); without one, ``--arch`` (default tiny) gets random weights. Errors in the
set-up (no images for a pattern, unknown stage, unavailable device, an unusable checkpoint, two inputs
with the same stem) stop the run with exit status 2 before any image is processed.

An image that cannot be read (truncated, empty, not an image, 32-bit or float pixels, more than
``--max-pixels`` pixels) is reported on stderr with the reason and left out; every other image is
processed, the summary counts both, and the exit status is 1. 16-bit greyscale is scaled to 8 bits,
alpha dropped, CMYK and palettes converted (see ``swinv2_backbone.features.images``).

``--in-channels N`` (or a checkpoint of N channels) reads every input with N channels: grey (1),
grey + alpha (2) and RGBA (4) images keep theirs, ``.npy`` arrays ((H, W), (C, H, W) or (H, W, C))
and TIFFs of any channel count are read as arrays (``swinv2_backbone.features.pixels``); an RGB
checkpoint's patch embedding is adapted to N. ``--mean``/``--std`` then take N values each (no
default for N != 3). An input of other channels than the model's is reported and skipped like an
unreadable one.

Every output file is written crash-safely (complete or absent under its name). A rerun skips the
images whose ``.safetensors`` (and, with ``--pca``, pictures) are complete and were written with
the same source, stages, checkpoint, dtype, normalisation and input size; ``--overwrite`` recomputes
them all. Temporary files of a killed run are removed.

``--runtime onnxruntime`` or ``openvino`` computes the features with an exported copy of the model
(exported on the fly into a temporary directory, for the run's one input size when all inputs
have it, as with ``--size H W``, else for every size; or ``--exported FILE`` from
``tools/export.py``; fp32 on the CPU, equal to eager PyTorch within 1e-4), OpenVINO
in bf16 with ``--precision bf16`` where the CPU computes bf16 natively. Every input size is checked
against the file's range before the first image is computed.

The model runs in the main thread: a background thread decodes, resizes and normalises up to
``--prefetch`` batches ahead of it, and another writes the outputs (PCA pictures, then the features
file, image by image in the order computed) with up to ``--prefetch`` batches of finished features
queued. ``--prefetch 0`` does everything in the main thread, one step after the other; the output
files are the same bytes either way. The default, ``auto``, runs the threads (depth 2) only where
they have a core of their own: with the model on a GPU, or with more CPUs than the model's threads
(:func:`swinv2_backbone.features.auto_depth` says why; the CPUs are counted by
:func:`~swinv2_backbone.features.usable_cpus`, which honours a container's CPU quota). An error in
either thread (other than an unreadable image, which is reported and skipped) stops the run in the
main thread; the outputs written before it stay complete. At the end the tool prints the throughput
end to end (from the first header read to the last output written; building the model and the
rerun check not counted) and that of the model forward alone (summed over batches), e.g.
``200 images in 66.1 s: 3.03 images/s end to end; model forward alone 3.10 images/s (end to end
97.7 % of it); prefetch 2 (auto: the model runs on cuda)``; :func:`extract` returns them as a
:class:`RunSummary`.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple, Union

import torch

from swinv2_backbone import ARCH_SETTINGS
from swinv2_backbone.cli import (EXIT_OK, EXIT_SOME_FAILED, Progress, add_channel_options,
                                 collect_errors, fail, int_at_least)
from swinv2_backbone.deploy import add_runtime_arguments, runtime_forward
from swinv2_backbone.features import (AUTO_DEPTH, MAX_PIXELS, BackgroundConsumer, FeatureExtractor,
                                      ForwardTiming, ImageFeatures, auto_depth, find_images,
                                      input_sizes, usable_cpus)
from swinv2_backbone.features.resume import (OutputSettings, pending, prepare_output_dir,
                                             stem_clashes, write_outputs)


def run(results: Iterable[ImageFeatures], extractor: FeatureExtractor, settings: OutputSettings,
        progress: Progress, depth: int) -> int:
    """Write the outputs of every result while advancing ``bar``; returns the number of images.
    With ``depth`` > 0 a background thread writes them (in order) while the next results are
    computed, with at most ``depth`` results waiting; its first error is raised here and stops the
    run (the results queued after it are not written). An error in this thread (computing the
    results) lets the writer finish the results queued before it.

    Args:
        results: Features as computed.
        extractor: The extractor.
        settings: Where and what to write.
        progress: Advanced as each image's outputs are written.
        depth: Results queued for the writer thread; 0 writes in this thread.
    """
    written = [0]

    def write(result: ImageFeatures) -> None:
        write_outputs(result, extractor, settings)
        written[0] += 1
        progress.advance(1, "images written")

    with BackgroundConsumer(write, depth, name="swinv2-feature-writer") as writer:
        for result in results:
            writer.submit(result)
    return written[0]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: Arguments without the program name.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="any supported checkpoint file or HF directory (default: random weights)")
    parser.add_argument("--arch", default=None, choices=list(ARCH_SETTINGS),
                        help="preset; default: the checkpoint's, or tiny without a checkpoint")
    parser.add_argument("--window-size", nargs="+", type=int, default=None, metavar="W",
                        help="attention window, one or one per stage (default: the checkpoint's, else 8)")
    parser.add_argument("--stages", nargs="+", default=None, metavar="NAME",
                        help="outputs: stem, stage1..stage4 (default: stage1..stage4)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=4, metavar="N",
                        help="most images of one size per forward pass (default: 4)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="compute and storage dtype (default: fp32; fp16 works on CPU but slowly)")
    parser.add_argument("--pca", action="store_true", help="also write PCA-to-RGB pictures per stage")
    resize = parser.add_mutually_exclusive_group()
    resize.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="resize every image to H x W")
    resize.add_argument("--short-side", type=int, default=None, metavar="N",
                        help="resize keeping the aspect ratio, shorter side N")
    add_channel_options(parser, "ImageNet's")
    parser.add_argument("--max-pixels", type=int_at_least(1), default=MAX_PIXELS, metavar="N",
                        help=f"refuse images with more pixels, checked before decoding (default "
                             f"{MAX_PIXELS}, Pillow's decompression-bomb limit)")
    parser.add_argument("--prefetch", type=_prefetch, default="auto", metavar="N",
                        help="batches decoded ahead of the model and batches of outputs queued for "
                             "writing, each in a background thread; 0: no threads, everything in "
                             f"turn in the main thread; auto (default): {AUTO_DEPTH} where the "
                             "threads have a core of their own (a GPU model, or more CPUs than "
                             "the model's threads), else 0")
    add_runtime_arguments(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute images whose outputs a previous run already wrote")
    parser.add_argument("--no-progress", action="store_true", help="no progress report")
    return parser.parse_args(argv)


def _prefetch(text: str) -> Union[int, str]:
    """``--prefetch``: ``'auto'`` or an int >= 0."""
    if text == "auto":
        return text
    try:
        depth = int(text)
    except ValueError:
        depth = -1
    if depth < 0:
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or an int >= 0 (0: no background threads), got {text!r}")
    return depth


def resolve_prefetch(prefetch: Union[int, str], device: torch.device) -> Tuple[int, str]:
    """The depth of the background queues and how it was chosen, for the summary line.

    Args:
        prefetch: ``--prefetch``: an int >= 0, or ``'auto'`` (:func:`auto_depth`).
        device: The model's device.
    """
    if prefetch != "auto":
        return int(prefetch), f"prefetch {prefetch}"
    depth, why = auto_depth(device.type, torch.get_num_threads(), usable_cpus())
    return depth, f"prefetch {depth} (auto: {why})"


def model_config(args: argparse.Namespace) -> Dict[str, Any]:
    """``Swinv2Backbone`` overrides from the arguments (empty: everything from the checkpoint).

    Args:
        args: Parsed arguments.
    """
    cfg: Dict[str, Any] = {}
    if args.arch is not None or args.checkpoint is None:
        cfg["arch"] = args.arch or "tiny"
    if args.window_size is not None:
        cfg["window_size"] = args.window_size[0] if len(args.window_size) == 1 else tuple(args.window_size)
    if args.in_channels is not None:
        cfg["in_channels"] = args.in_channels
    return cfg


def output_settings(args: argparse.Namespace) -> OutputSettings:
    """Where and how the run writes each image's outputs, from the arguments.

    Args:
        args: Parsed arguments.
    """
    return OutputSettings(args.out, pca=args.pca,
                          size=tuple(args.size) if args.size is not None else None,
                          short_side=args.short_side, max_pixels=args.max_pixels)


@dataclass
class RunSummary:
    """What a run did, and how fast.

    Args:
        found: Images the inputs named.
        written: Images whose outputs this run wrote.
        skipped: Images a previous run had completed (not recomputed).
        failed: Error texts of the images that could not be read.
        out_features: The stages written.
        seconds: Wall-clock seconds from the first header read to the last output written (building
            the model and the rerun check not counted); 0 when nothing was to do.
        forward: Time and images of the model forward alone, summed over batches.
        prefetch: The background queues' depth, and with ``--prefetch auto`` why that one.
    """

    found: int
    written: int = 0
    skipped: int = 0
    failed: List[str] = field(default_factory=list)
    out_features: Sequence[str] = ()
    seconds: float = 0.0
    forward: ForwardTiming = field(default_factory=ForwardTiming)
    prefetch: str = "prefetch 0"

    @property
    def images_per_second(self) -> float:
        """Written images per second end to end (0 when none were written)."""
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def throughput(self) -> str:
        """One line: images and seconds, images/s end to end and in the model forward alone, and
        the first as a percentage of the second."""
        forward = self.forward.images_per_second
        share = 100 * self.images_per_second / forward if forward > 0 else 0.0
        return (f"{self.written} images in {self.seconds:.1f} s: {self.images_per_second:.2f} images/s "
                f"end to end; model forward alone {forward:.2f} images/s (end to end {share:.1f} % "
                f"of it); {self.prefetch}")


def extract(args: argparse.Namespace) -> RunSummary:
    """Run the extraction the arguments describe.

    Args:
        args: Parsed arguments (:func:`parse_args`).

    Raises:
        ValueError, OSError: A set-up error (no images, a bad checkpoint, ...) or a failed write.
    """
    images = find_images(args.inputs)
    clash = stem_clashes(images)
    if clash:
        raise ValueError(clash)
    extractor = FeatureExtractor(model_config(args), checkpoint=args.checkpoint,
                                 out_features=args.stages, device=args.device, dtype=args.dtype,
                                 mean=args.mean, std=args.std)
    settings = output_settings(args)
    extractor.run_with(runtime_forward(
        extractor.model, args.runtime, args.precision, args.exported, torch.get_num_threads(),
        input_sizes(images, settings.size, args.short_side, args.max_pixels), args.batch_size))
    summary = RunSummary(found=len(images), out_features=extractor.out_features)
    prepare_output_dir(settings.out_dir)
    todo = pending(images, extractor, settings, overwrite=args.overwrite)
    summary.skipped = len(images) - len(todo)
    depth, summary.prefetch = resolve_prefetch(args.prefetch, extractor.device)
    if todo:
        start = time.perf_counter()
        results = extractor.iter_files(todo, batch_size=args.batch_size, size=settings.size,
                                       short_side=args.short_side, on_error=collect_errors(summary.failed),
                                       max_pixels=args.max_pixels, prefetch=depth,
                                       timing=summary.forward)
        progress = Progress("extract_features", len(todo), unit="images",
                            enabled=not args.no_progress)
        # closing() stops the loader thread at once when the run ends early (an error)
        with contextlib.closing(results):
            summary.written = run(results, extractor, settings, progress,
                                  depth=depth * args.batch_size)
        summary.seconds = time.perf_counter() - start
    return summary


def main(argv: Sequence[str]) -> int:
    """Extract features; returns the exit status: 0, 1 when some images could not be read (each
    reported), 2 after a set-up error or a failed write (message on stderr).

    Args:
        argv: Arguments without the program name.
    """
    args = parse_args(argv)
    try:
        summary = extract(args)
    except (ValueError, OSError) as err:  # per-image errors go to the handler, not here
        return fail(err)
    print(f"wrote features of {summary.written} image(s) ({', '.join(summary.out_features)}) to "
          f"{args.out}; {summary.skipped} already complete, skipped; {len(summary.failed)} could not "
          "be read")
    if summary.written:
        print(summary.throughput())
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
