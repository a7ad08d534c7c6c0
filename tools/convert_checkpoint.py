#!/usr/bin/env python
"""Convert a SwinV2 or Swin V1 checkpoint from any supported source to a Swinv2Backbone /
SwinBackbone checkpoint, or export it to Hugging Face (with its classifier or SimMIM heads) / timm.

    python tools/convert_checkpoint.py SRC DST                 # -> DST .pth or .safetensors
    python tools/convert_checkpoint.py SRC DST_DIR --to hf     # -> config.json + model.safetensors
    python tools/convert_checkpoint.py SRC DST --to timm       # -> timm SwinTransformerV2 / SwinTransformer
    python tools/convert_checkpoint.py SRC DST --in-channels 4  # RGB weights for 4-channel inputs

SRC is a file or an HF/timm directory in any supported format (see --help for the list). The tool
prints the detected format, the architecture, the training windows and the backbone dict to paste
into a config. Nothing in SRC is executed: files are read with safetensors or weights-only
torch.load.

--to hf writes the HF model for what SRC holds: Swinv2ForImageClassification with a classification
head (id2label from the checkpoint's class names), Swinv2ForMaskedImageModeling with a SimMIM mask
token and decoder, else Swinv2Model; --encoder-only writes Swinv2Model regardless (Swin V1: the Swin*
classes). The native and timm outputs hold the encoder only; the heads they leave out are named.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional, Sequence, Tuple

from swinv2_backbone.checkpoint import (
    CheckpointError,
    ConvertedCheckpoint,
    Exported,
    HeadExportError,
    convert_checkpoint,
    save_hf,
    save_native,
    save_timm,
    to_hf,
    to_hf_classifier,
    to_hf_mim,
    to_timm,
)
from swinv2_backbone.checkpoint.keys import CLASSIFICATION_HEAD, MASK_TOKEN, MIM_HEAD
from swinv2_backbone.checkpoint.registry import describe_formats
from swinv2_backbone.cli import EXIT_OK, fail, int_at_least


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
                        help="output layout (default: native Swinv2Backbone / SwinBackbone checkpoint)")
    parser.add_argument("--window-size", type=int, nargs="+", metavar="W",
                        help="training window (one, or one per stage) when the file does not record it")
    parser.add_argument("--pretrained-window-sizes", type=int, nargs="+", metavar="P",
                        help="pretrained windows (one, or one per stage; 0: none) to go with --window-size")
    parser.add_argument("--in-channels", type=int_at_least(1), metavar="N",
                        help="input channels of the output: RGB weights have their patch embedding "
                             "adapted (1: summed over RGB; N: repeated and scaled by 3/N)")
    parser.add_argument("--image-size", type=int,
                        help="--to hf/timm: input size the exported model is built for "
                             "(default: derived from the windows, else 256; Swin V1 224)")
    parser.add_argument("--encoder-only", action="store_true",
                        help="--to hf: write Swinv2Model (SwinModel) even when the checkpoint holds a classifier "
                             "or SimMIM heads")
    args = parser.parse_args(argv)
    if args.pretrained_window_sizes and not args.window_size:
        parser.error("--pretrained-window-sizes needs --window-size")
    if args.encoder_only and args.to != "hf":
        # the native and timm outputs are the encoder alone anyway: the flag would do nothing
        parser.error("--encoder-only applies to --to hf")
    return args


def report(converted: ConvertedCheckpoint, lines: List[str], taken: Sequence[str]) -> None:
    """Print what was detected and inferred, then ``lines``.

    Args:
        converted: The converted source.
        lines: What :func:`write` wrote, as lines to print.
        taken: The heads written to the output, which are therefore not called dropped.
    """
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
    dropped = converted.describe_dropped(taken)
    if dropped:
        print(f"dropped:          {dropped}")
    for line in lines:
        print(line)


def export_hf(converted: ConvertedCheckpoint, image_size: Optional[int],
              encoder_only: bool) -> Tuple[Exported, Tuple[str, ...]]:
    """The HF model for what ``converted`` holds, with the heads it takes:
    ``Swinv2ForMaskedImageModeling`` with a SimMIM decoder (and its mask token),
    ``Swinv2ForImageClassification`` with a classification head, else ``Swinv2Model``.

    Args:
        converted: The converted source, with known windows.
        image_size: Input size of the HF model (``None``: derived from the windows).
        encoder_only: Write ``Swinv2Model`` whatever heads ``converted`` holds.

    Raises:
        CheckpointError: Encoder weights HF cannot express, or heads it cannot take (both a
            classifier and a decoder, a decoder without its token or of another stride); the
            latter message names ``--encoder-only``.
    """
    heads = () if encoder_only else tuple(converted.heads)
    hint = "--encoder-only exports the encoder alone as Swinv2Model"
    if CLASSIFICATION_HEAD in heads and MIM_HEAD in heads:
        raise CheckpointError(f"{converted.source} holds both a classification head and a SimMIM "
                              f"decoder, which no HF model takes together; {hint}")
    try:
        if MIM_HEAD in heads:
            return to_hf_mim(converted, image_size), (MASK_TOKEN, MIM_HEAD)
        if CLASSIFICATION_HEAD in heads:
            return to_hf_classifier(converted, image_size), (CLASSIFICATION_HEAD,)
    except HeadExportError as exc:
        raise CheckpointError(f"{exc}; {hint}") from exc
    # a mask token alone (a use_mask_token backbone) has no decoder to reconstruct with: encoder
    return to_hf(converted, image_size), ()


def left_out(converted: ConvertedCheckpoint, taken: Sequence[str], why: str) -> List[str]:
    """One line naming the heads of ``converted`` not in ``taken`` and ``why``; none if none.

    Args:
        converted: The converted source.
        taken: The heads written to the output.
        why: Why the output has no place for the others.
    """
    names = [name for name in converted.heads if name not in taken]
    return [f"left out:         {', '.join(names)} ({why})"] if names else []


def write(converted: ConvertedCheckpoint,
          args: argparse.Namespace) -> Tuple[List[str], Tuple[str, ...]]:
    """Write ``args.dst`` in the requested layout.

    Args:
        converted: The converted source.
        args: The parsed command line (:func:`parse_args`).

    Returns:
        Lines to print, and the heads written with the encoder.
    """
    if args.to == "native":
        # the native output is a backbone checkpoint: the encoder and its metadata only
        save_native(converted, args.dst)
        cfg = converted.backbone_cfg(checkpoint=args.dst)
        return ([f"wrote:            {args.dst} ({converted.model_type} checkpoint, "
                 f"{len(converted.state_dict)} tensors)"]
                + left_out(converted, (), "a backbone checkpoint holds the encoder only; --to hf "
                                          "keeps a classifier head or the SimMIM token and decoder")
                + ["backbone config:", f"    backbone={python_literal(cfg)}"]), ()
    exported: Exported
    taken: Tuple[str, ...] = ()
    if args.to == "hf":
        exported, taken = export_hf(converted, args.image_size, args.encoder_only)
        save_hf(exported, args.dst)
        model_class = exported.config["architectures"][0]
        kind = f"hf {model_class}"
        usage = f"transformers.{model_class}.from_pretrained({args.dst!r})"
        why = "--encoder-only" if args.encoder_only else f"not part of {model_class}"
    else:
        exported = to_timm(converted, image_size=args.image_size)
        save_timm(exported, args.dst)
        kind = "timm"
        timm_class = ("swin_transformer.SwinTransformer" if converted.version == 1
                      else "swin_transformer_v2.SwinTransformerV2")
        usage = (f"timm.models.{timm_class}(**kwargs), then "
                 f"load_state_dict of {args.dst}; kwargs={python_literal(exported.config)}")
        why = "the timm export is the encoder, num_classes=0"
    lines = [f"wrote:            {args.dst} ({kind}, {len(exported.state_dict)} tensors)"]
    if CLASSIFICATION_HEAD in taken and converted.labels is None:
        lines.append("note:             the checkpoint names no classes: id2label holds HF's "
                     "LABEL_i placeholders")
    lines += [f"note:             {note}" for note in exported.notes]
    lines += left_out(converted, taken, why)
    return lines + [f"load with:        {usage}"], taken


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the conversion; returns the exit status (2 with a message on bad input, or when the
    output cannot be written: a full disk names the file and the free space, and leaves no partial
    output)."""
    args = parse_args(argv)
    try:
        converted = convert_checkpoint(args.src, format=args.format, prefix=args.prefix)
        if args.window_size:
            converted = converted.with_windows(args.window_size, args.pretrained_window_sizes or 0)
        if args.in_channels is not None:
            converted = converted.with_in_channels(args.in_channels)
        lines, taken = write(converted, args)
    except (CheckpointError, ValueError, OSError) as exc:
        return fail(exc)
    report(converted, lines, taken)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
