#!/usr/bin/env python
"""Convert a SwinV2 checkpoint from any supported source to a Swinv2Backbone checkpoint, or export
backbone weights to Hugging Face / timm.

    python tools/convert_checkpoint.py SRC DST                 # -> DST .pth or .safetensors
    python tools/convert_checkpoint.py SRC DST_DIR --to hf     # -> config.json + model.safetensors
    python tools/convert_checkpoint.py SRC DST --to timm       # -> timm SwinTransformerV2 weights

SRC is a file or an HF/timm directory in any supported format (see --help for the list). The tool
prints the detected format, the architecture, the training windows and the backbone dict to paste
into a config. Nothing in SRC is executed: files are read with safetensors or weights-only
torch.load.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from swinv2_backbone.checkpoint import (  # noqa: E402  (after the path set-up)
    CheckpointError,
    ConvertedCheckpoint,
    Exported,
    convert_checkpoint,
    save_hf,
    save_native,
    save_timm,
    to_hf,
    to_timm,
)
from swinv2_backbone.checkpoint.registry import describe_formats  # noqa: E402


def python_literal(value: Any) -> str:
    """``value`` as Python config source: dicts as ``dict(key=...)``, tuples and lists as is."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={python_literal(v)}" for k, v in value.items()) + ")"
    if isinstance(value, tuple):
        return "(" + ", ".join(python_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    return repr(value)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="source formats:\n" + describe_formats(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint file or HF/timm directory")
    parser.add_argument("dst", help="output: .pth or .safetensors file (--to hf: a directory)")
    parser.add_argument("--format", help="source format instead of detecting it")
    parser.add_argument("--prefix", help="take only keys under this prefix, e.g. 'backbone.'")
    parser.add_argument("--to", choices=("native", "hf", "timm"), default="native",
                        help="output layout (default: native Swinv2Backbone checkpoint)")
    parser.add_argument("--window-size", type=int, nargs="+", metavar="W",
                        help="training window (one, or one per stage) when the file does not record it")
    parser.add_argument("--pretrained-window-sizes", type=int, nargs="+", metavar="P",
                        help="pretrained windows (one, or one per stage; 0: none) to go with --window-size")
    parser.add_argument("--image-size", type=int,
                        help="--to hf/timm: input size the exported model is built for "
                             "(default: derived from the windows, else 256)")
    args = parser.parse_args(argv)
    if args.pretrained_window_sizes and not args.window_size:
        parser.error("--pretrained-window-sizes needs --window-size")
    return args


def report(converted: ConvertedCheckpoint, lines: List[str]) -> None:
    """Print what was detected and inferred."""
    print(f"source:           {converted.source}")
    print(f"detected format:  {converted.format}")
    arch = converted.describe_arch()
    if converted.arch:
        arch += (f" (embed_dims {converted.embed_dims}, depths {converted.depths}, "
                 f"num_heads {converted.num_heads})")
    print(f"architecture:     {arch}")
    print(f"windows:          {converted.describe_windows()}")
    for note in converted.notes:
        print(f"note:             {note}")
    if converted.dropped:
        print(f"dropped:          {converted.describe_dropped()}")
    for line in lines:
        print(line)


def write(converted: ConvertedCheckpoint, args: argparse.Namespace) -> List[str]:
    """Write ``args.dst`` in the requested layout; returns lines to print."""
    if args.to == "native":
        save_native(converted, args.dst)
        cfg = converted.backbone_cfg(checkpoint=args.dst)
        return [f"wrote:            {args.dst} (Swinv2Backbone checkpoint, "
                f"{len(converted.state_dict)} tensors)",
                "backbone config:", f"    backbone={python_literal(cfg)}"]
    exported: Exported
    if args.to == "hf":
        exported = to_hf(converted, image_size=args.image_size)
        save_hf(exported, args.dst)
        usage = f"transformers.Swinv2Model.from_pretrained({args.dst!r})"
    else:
        exported = to_timm(converted, image_size=args.image_size)
        save_timm(exported, args.dst)
        usage = ("timm.models.swin_transformer_v2.SwinTransformerV2(**kwargs), then "
                 f"load_state_dict of {args.dst}; kwargs={python_literal(exported.config)}")
    lines = [f"wrote:            {args.dst} ({args.to}, {len(exported.state_dict)} tensors)"]
    lines += [f"note:             {note}" for note in exported.notes]
    return lines + [f"load with:        {usage}"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the conversion; returns the exit status (2 with a message on bad input)."""
    args = parse_args(argv)
    try:
        converted = convert_checkpoint(args.src, format=args.format, prefix=args.prefix)
        if args.window_size:
            converted = converted.with_windows(args.window_size, args.pretrained_window_sizes or 0)
        lines = write(converted, args)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(converted, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
