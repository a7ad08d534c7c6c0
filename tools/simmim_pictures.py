"""Draw SimMIM reconstructions: input | masked input | reconstruction, one PNG per image.

    python tools/simmim_pictures.py CONFIG CHECKPOINT IMAGE... --out DIR [--seed 0] [--size H [W]]

CONFIG is a SimMIM config (``configs/simmim/``), CHECKPOINT a checkpoint its runner saved. IMAGE:
image files, folders (their images, not recursive) or glob patterns (quote them). Each image is
resized to the training crop size (or ``--size``), masked as the training pipeline masks (its
``SimMIMMaskGenerator`` arguments) with a mask seeded by ``--seed`` plus the image's position in the
list, and written to ``DIR/<name>.png``. The third panel holds the input's visible pixels and the
reconstruction where the input was masked; for a model trained on the locally normalised target the
reconstruction is de-normalised with the input's own local statistics (labelled so; see
:mod:`swinv2_backbone.openmmlab.simmim_pictures`).

An image that cannot be read is reported and skipped; the exit status is then 1 after all the others
are drawn. Bad arguments or an unusable config or checkpoint stop the run with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Set

from swinv2_backbone.cli import EXIT_OK, EXIT_SOME_FAILED, collect_errors, fail
from swinv2_backbone.features import ImageReadError, each_image, parse_device
from swinv2_backbone.openmmlab.launch import load_config
from swinv2_backbone.openmmlab.simmim_pictures import load_simmim, mask_settings, write_picture


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="SimMIM config")
    parser.add_argument("checkpoint", help="checkpoint of that config's model")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="mask seed of the first image")
    parser.add_argument("--size", type=int, nargs="+", metavar="N",
                        help="input size H [W] (default: the training crop size)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    args = parser.parse_args(argv)
    if args.size is not None and (len(args.size) > 2 or min(args.size) < 1):
        parser.error(f"--size takes one or two positive ints, got {args.size}")
    try:
        args.device = parse_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    return args


def unique_name(path: Path, taken: Set[str]) -> str:
    """``<stem>.png``, or ``<stem>_<k>.png`` with the smallest k not yet ``taken`` when images of
    the same name come from different folders; the name is added to ``taken``.

    Args:
        path: The image file.
        taken: Output names used so far.
    """
    name, k = f"{path.stem}.png", 1
    while name in taken:
        name, k = f"{path.stem}_{k}.png", k + 1
    taken.add(name)
    return name


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Draw the pictures; return the exit status (0: all drawn, 1: some images unreadable,
    2: unusable config or checkpoint).

    Args:
        argv: Command-line arguments, see :func:`parse_args`.
    """
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        size = None if args.size is None else (args.size[0], args.size[-1])  # H [W]: W = H alone
        settings = mask_settings(cfg, size)
        model = load_simmim(cfg, args.checkpoint).to(args.device)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        return fail(err)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed: List[str] = []
    report = collect_errors(failed)
    taken: Set[str] = set()
    for index, path in enumerate(each_image(args.images, report)):
        seed = args.seed + index
        try:
            written = write_picture(model, settings, path, out_dir / unique_name(path, taken), seed)
        except ImageReadError as err:
            report(err)
            continue
        print(f"{path} -> {written} (mask seed {seed})")
    if failed:
        print(f"{len(failed)} input(s) could not be drawn", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
