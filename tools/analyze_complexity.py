"""Parameters and FLOPs of Swinv2Backbone variants at given input sizes, as a markdown table.

    python tools/analyze_complexity.py [--arch tiny small base large] [--sizes 256 512x512 800x1344]
        [--window-size 8 | 16 16 16 8] [--out-features stage1 ... stage4] [--no-out-norm]
        [--breakdown] [--measure] [--json PATH]

FLOPs = 2 x multiply-accumulates of the matrix products and convolutions, counted analytically
(see :mod:`swinv2_backbone.complexity` for what is and is not counted). ``--measure`` adds the count
of :class:`torch.utils.flop_counter.FlopCounterMode` over a forward pass on the ``'meta'`` device
(no memory, no real compute) as a cross-check.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from swinv2_backbone import ARCH_SETTINGS, Swinv2Backbone
from swinv2_backbone.cli import EXIT_OK, fail
from swinv2_backbone.complexity import OPERATIONS, ArchSpec, analyze

DEFAULT_SIZES = ("256x256", "512x512", "800x1344")
_SIZE = re.compile(r"^(\d+)(?:x(\d+))?$")


def parse_size(text: str) -> Tuple[int, int]:
    """``'512'`` -> ``(512, 512)``; ``'800x1344'`` -> ``(800, 1344)`` (rows x columns).

    Args:
        text: The size as given on the command line.
    """
    match = _SIZE.match(text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: give HxW with positive integers (e.g. 800x1344) or one "
            "integer for a square")
    h = int(match.group(1))
    return h, int(match.group(2) or h)


def measure_flops(model: Swinv2Backbone, image_hw: Tuple[int, int]) -> int:
    """FLOPs that :class:`FlopCounterMode` counts over one forward pass of a single image.

    Args:
        model: The backbone (on the ``'meta'`` device for a free count); its position-bias cache
            must be empty for the position-bias MLP to be counted.
        image_hw: Input size (rows, columns).
    """
    param = next(model.parameters())
    x = torch.empty(1, model.in_channels, *image_hw, device=param.device, dtype=param.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def analyze_variant(arch: str, sizes: Sequence[Tuple[int, int]], backbone_kwargs: Dict[str, Any],
                    measure: bool) -> List[Dict[str, Any]]:
    """One result row per input size for one variant.

    Args:
        arch: Preset name.
        sizes: Input sizes (rows, columns).
        backbone_kwargs: Further ``Swinv2Backbone`` arguments (window size, outputs).
        measure: Also run :func:`measure_flops` on a fresh ``'meta'`` model per size.
    """
    def build() -> Swinv2Backbone:
        with torch.device("meta"):
            return Swinv2Backbone(arch=arch, **backbone_kwargs).eval()

    spec = ArchSpec.from_model(build())
    rows = []
    for hw in sizes:
        result = analyze(spec, hw)
        row: Dict[str, Any] = {"arch": arch, "input": list(hw), "params": result.params,
                               "macs": result.total_macs, "flops": result.flops,
                               "macs_per_op": dict(result.macs)}
        if measure:
            row["measured_flops"] = measure_flops(build(), hw)
        rows.append(row)
    return rows


def markdown(rows: Sequence[Dict[str, Any]], breakdown: bool) -> str:
    """The rows as a markdown table (params in millions, compute in G).

    Args:
        rows: Results of :func:`analyze_variant`.
        breakdown: Add one GFLOPs column per operation.
    """
    header = ["Variant", "Input (HxW)", "Params (M)", "GMACs", "GFLOPs"]
    measured = any("measured_flops" in r for r in rows)
    if measured:
        header.append("GFLOPs (FlopCounterMode)")
    if breakdown:
        header += [f"{op} GFLOPs" for op in OPERATIONS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["arch"], f"{r['input'][0]}x{r['input'][1]}", f"{r['params'] / 1e6:.2f}",
                 f"{r['macs'] / 1e9:.2f}", f"{r['flops'] / 1e9:.2f}"]
        if measured:
            cells.append(f"{r['measured_flops'] / 1e9:.2f}")
        if breakdown:
            cells += [f"{2 * r['macs_per_op'][op] / 1e9:.3f}" for op in OPERATIONS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: Arguments without the program name.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=list(ARCH_SETTINGS), choices=list(ARCH_SETTINGS),
                        help="variants (default: all)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="HxW",
                        help=f"input sizes, HxW or one int for a square (default: {' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--window-size", nargs="+", type=int, default=[8], metavar="W",
                        help="attention window, one for all stages or one per stage (default: 8)")
    parser.add_argument("--out-features", nargs="+", default=None, metavar="NAME",
                        help="outputs (stem, stage1..stage4); stages after the last are not built "
                             "and not counted (default: all stages)")
    parser.add_argument("--no-out-norm", action="store_true", help="no output LayerNorms")
    parser.add_argument("--breakdown", action="store_true", help="one GFLOPs column per operation")
    parser.add_argument("--measure", action="store_true",
                        help="cross-check with torch FlopCounterMode on the meta device")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the rows as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Run the analysis and print the table; returns the exit status.

    Args:
        argv: Arguments without the program name.
    """
    args = parse_args(argv)
    sizes = args.sizes or [parse_size(s) for s in DEFAULT_SIZES]
    window = args.window_size[0] if len(args.window_size) == 1 else tuple(args.window_size)
    kwargs: Dict[str, Any] = {"window_size": window, "out_norm": not args.no_out_norm}
    if args.out_features is not None:
        kwargs["out_features"] = tuple(args.out_features)
    try:
        rows = [row for arch in args.arch
                for row in analyze_variant(arch, sizes, kwargs, args.measure)]
    except ValueError as err:
        return fail(err)
    print(markdown(rows, args.breakdown))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
