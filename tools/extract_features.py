"""Extract multi-scale SwinV2 features of images into .safetensors files (and PCA pictures).

    python tools/extract_features.py INPUT... --out DIR [--checkpoint PATH] [--arch tiny]
        [--window-size W ...] [--stages stage1 stage3] [--batch-size N] [--device cpu|cuda]
        [--dtype fp32|bf16|fp16] [--pca] [--size H W | --short-side N] [--mean R G B --std R G B]
        [--max-pixels N] [--overwrite]

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

Every output file is written crash-safely (complete or absent under its name). A rerun skips the
images whose ``.safetensors`` (and, with ``--pca``, pictures) are complete and were written with
the same source, stages, checkpoint, dtype, normalisation and input size; ``--overwrite`` recomputes
them all. Temporary files of a killed run are removed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from swinv2_backbone import ARCH_SETTINGS
from swinv2_backbone.checkpoint import remove_partial_files
from swinv2_backbone.features import (IMAGENET_MEAN, IMAGENET_STD, MAX_PIXELS, FeatureExtractor,
                                      ImageFeatures, ImageReadError, dtype_name, find_images,
                                      image_size, is_complete, pca_rgb, save_features, save_png,
                                      target_size, upsample_to_image)


def stem_clashes(paths: Sequence[Path]) -> Optional[str]:
    """An error text if two inputs would write the same output files, else ``None``.

    Args:
        paths: The input images.
    """
    owner: Dict[str, Path] = {}
    for p in paths:
        if p.stem in owner:
            return (f"inputs {str(owner[p.stem])!r} and {str(p)!r} would both write "
                    f"{p.stem}.safetensors; rename one or run them separately")
        owner[p.stem] = p
    return None


def write_outputs(result: ImageFeatures, extractor: FeatureExtractor, out_dir: Path, pca: bool) -> None:
    """Write one image's PCA pictures (with ``pca``) and then its ``.safetensors``, each
    crash-safely: the features file, written last, marks the image done for a rerun.

    Args:
        result: The image's features.
        extractor: The extractor that computed them.
        out_dir: Output folder.
        pca: Also write ``<stem>_<stage>_pca.png`` per stage.
    """
    stem = result.path.stem
    if pca:
        for name, feature in result.features.items():
            picture = upsample_to_image(pca_rgb(feature), extractor.strides[name], result.input_size,
                                        result.original_size)
            save_png(picture, out_dir / f"{stem}_{name}_pca.png")
    save_features(result, extractor, out_dir / f"{stem}.safetensors")


def already_done(path: Path, extractor: FeatureExtractor, args: argparse.Namespace) -> bool:
    """Whether a previous run wrote ``path``'s outputs completely with these settings.

    Args:
        path: The input image.
        extractor: This run's extractor.
        args: Parsed arguments (output folder, resizing, ``--pca``).
    """
    try:
        original = image_size(path, args.max_pixels)
    except ImageReadError:
        return False  # processed (and reported) with the others
    size = tuple(args.size) if args.size is not None else None
    expected = dict(source=str(path), stages=list(extractor.out_features),
                    checkpoint=extractor.checkpoint, dtype=dtype_name(extractor.dtype),
                    mean=list(extractor.mean), std=list(extractor.std),
                    input_size=list(target_size(original, size=size, short_side=args.short_side)))
    pictures = [args.out / f"{path.stem}_{n}_pca.png" for n in extractor.out_features] if args.pca else []
    return is_complete(args.out / f"{path.stem}.safetensors", expected) and \
        all(p.is_file() for p in pictures)


class LineProgress:
    """Fallback progress report without tqdm: one line per update on stderr.

    Args:
        total: Number of images.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.perf_counter()

    def update(self, n: int) -> None:
        """Count ``n`` more images and print the state."""
        self.done += n
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        print(f"{self.done}/{self.total} images ({rate:.2f} img/s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing to release; present for tqdm compatibility."""


class _Silent:
    """No-op progress report."""

    def update(self, n: int) -> None:
        """Ignore ``n``: reporting is disabled."""

    def close(self) -> None:
        """Nothing to release."""


def progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar over ``total`` images if tqdm is installed, else :class:`LineProgress`.

    Args:
        total: Number of images.
        enabled: ``False`` disables the report.
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return LineProgress(total) if enabled else _Silent()
    return tqdm(total=total, unit="img", disable=not enabled, file=sys.stderr)


def run(results: Iterable[ImageFeatures], extractor: FeatureExtractor, out_dir: Path, pca: bool,
        bar: Any) -> int:
    """Write the outputs of every result while advancing ``bar``; returns the number of images.

    Args:
        results: Features as computed.
        extractor: The extractor.
        out_dir: Output folder.
        pca: Write PCA pictures.
        bar: Progress report with ``update(n)``.
    """
    count = 0
    for result in results:
        write_outputs(result, extractor, out_dir, pca)
        bar.update(1)
        count += 1
    return count


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
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
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
    parser.add_argument("--mean", nargs=3, type=float, default=IMAGENET_MEAN, metavar=("R", "G", "B"),
                        help="normalisation mean for pixels in [0, 1] (default: ImageNet)")
    parser.add_argument("--std", nargs=3, type=float, default=IMAGENET_STD, metavar=("R", "G", "B"),
                        help="normalisation std for pixels in [0, 1] (default: ImageNet)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse images with more pixels, checked before decoding (default "
                             f"{MAX_PIXELS}, Pillow's decompression-bomb limit)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute images whose outputs a previous run already wrote")
    parser.add_argument("--no-progress", action="store_true", help="no progress report")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_pixels < 1:
        parser.error(f"--max-pixels must be >= 1, got {args.max_pixels}")
    return args


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
    return cfg


def reporter(failed: List[str]) -> Callable[[ImageReadError], None]:
    """A per-image error handler that prints the error on stderr and records it in ``failed``.

    Args:
        failed: Collects the error texts.
    """
    def report(err: ImageReadError) -> None:
        failed.append(str(err))
        print(f"error: {err}", file=sys.stderr, flush=True)

    return report


def main(argv: Sequence[str]) -> int:
    """Extract features; returns the exit status: 0, 1 when some images could not be read (each
    reported), 2 after a set-up error (message on stderr).

    Args:
        argv: Arguments without the program name.
    """
    args = parse_args(argv)
    failed: List[str] = []
    try:
        images = find_images(args.inputs)
        clash = stem_clashes(images)
        if clash:
            raise ValueError(clash)
        extractor = FeatureExtractor(model_config(args), checkpoint=args.checkpoint,
                                     out_features=args.stages, device=args.device, dtype=args.dtype,
                                     mean=args.mean, std=args.std)
        args.out.mkdir(parents=True, exist_ok=True)
        remove_partial_files(args.out)
        todo = images if args.overwrite else [p for p in images if not already_done(p, extractor, args)]
        count = 0
        if todo:
            size = tuple(args.size) if args.size is not None else None
            results = extractor.iter_files(todo, batch_size=args.batch_size, size=size,
                                           short_side=args.short_side, on_error=reporter(failed),
                                           max_pixels=args.max_pixels)
            bar = progress_bar(len(todo), not args.no_progress)
            try:
                count = run(results, extractor, args.out, args.pca, bar)
            finally:
                bar.close()
    except (ValueError, OSError) as err:  # per-image errors go to the handler, not here
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote features of {count} image(s) ({', '.join(extractor.out_features)}) to {args.out}; "
          f"{len(images) - len(todo)} already complete, skipped; {len(failed)} could not be read")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
