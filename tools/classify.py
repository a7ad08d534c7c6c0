"""Classify images with a SwinV2 classification checkpoint of any supported format.

    python tools/classify.py IMAGE... --checkpoint CKPT [--topk 5] [--device cpu|cuda]
        [--window-size W... [--pretrained-window-sizes W...]] [--in-channels N --mean M... --std S...]
        [--runtime torch|onnxruntime|openvino [--precision f32|bf16] [--exported FILE]]

IMAGE: image files, folders (their images, not recursive) or glob patterns (quote them). For every
image the top-k classes are printed with their softmax probabilities, by name when the checkpoint
names its classes (HF ``config.json`` ``id2label``), by index otherwise. Preprocessing follows the
checkpoint's ``preprocessor_config.json`` (HF directories) when there is one, else: RGB, resized to
the checkpoint's image size, ImageNet mean/std. The training windows come from the checkpoint;
``--window-size`` states them for a file that does not record them (a timm state dict).
``--runtime onnxruntime`` or ``openvino`` runs an exported copy of the classifier (exported on the
fly for the images' sizes, or ``--exported FILE`` from ``tools/export.py --what model``), fp32 on the
CPU, or OpenVINO bf16 with ``--precision bf16`` where the CPU computes bf16 natively.

``--in-channels N`` classifies N-channel inputs with an RGB checkpoint (its patch embedding
adapted): grey, grey + alpha and RGBA images keep their channels, ``.npy`` and TIFF files are read as
arrays (``swinv2_backbone.features.pixels``); ``--mean``/``--std`` take N values (required for
N != 3). An image of other channels than the model's is reported and skipped.

An image that cannot be read is reported and skipped; the exit status is then 1 after all the others
are classified. Bad arguments or an unusable checkpoint stop the run with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence, Tuple, Union

import torch

from swinv2_backbone.checkpoint import CheckpointError
from swinv2_backbone.cli import (EXIT_OK, EXIT_SOME_FAILED, add_channel_options, collect_errors, fail,
                                 int_at_least)
from swinv2_backbone.deploy import add_runtime_arguments, runtime_forward
from swinv2_backbone.features import ImageReadError, each_image, input_sizes, parse_device
from swinv2_backbone.features.classify import load_classifier, preprocessing_for, top_k


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    parser.add_argument("--checkpoint", required=True,
                        help="classification checkpoint: HF directory, official/timm/torchvision/"
                             "mmpretrain file, or this project's classifier")
    parser.add_argument("--topk", type=int_at_least(1), default=5,
                        help="classes to print per image (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--window-size", type=int, nargs="+", metavar="W",
                        help="training window(s) of a checkpoint that does not record them (one, "
                             "or one per stage), e.g. 8 for a timm swinv2_*_window8_256 state dict")
    add_channel_options(parser, "the checkpoint's preprocessing")
    parser.add_argument("--pretrained-window-sizes", type=int, nargs="+", metavar="W", default=[0],
                        help="with --window-size: the windows that normalised the position bias "
                             "in training (0: none; 12 12 12 6 for the *window12to16/24* files)")
    add_runtime_arguments(parser)
    args = parser.parse_args(argv)
    if args.pretrained_window_sizes != [0] and args.window_size is None:
        parser.error("--pretrained-window-sizes needs --window-size")
    if (args.mean is None) != (args.std is None):
        parser.error("give --mean and --std together")
    try:
        args.device = parse_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    return args


def one_or_all(values: Optional[List[int]]) -> Union[None, int, Tuple[int, ...]]:
    """A ``nargs='+'`` option as the model wants it: one int, or one per stage."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def format_prediction(rank: int, index: int, name: Optional[str], prob: float) -> str:
    """One line of a prediction: ``  1. tabby cat (281)  0.4231`` or ``  1. class 281  0.4231``."""
    label = f"{name} ({index})" if name is not None else f"class {index}"
    return f"  {rank}. {label}  {prob:.4f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        model, converted = load_classifier(args.checkpoint, one_or_all(args.window_size),
                                           one_or_all(args.pretrained_window_sizes),
                                           args.in_channels)
        preprocessing = preprocessing_for(args.checkpoint, converted,
                                          model.backbone.in_channels, args.mean, args.std)
    except (CheckpointError, ValueError, OSError) as err:
        return fail(err)
    model.to(args.device)
    if args.topk > model.num_classes:
        return fail(f"--topk {args.topk} exceeds the checkpoint's {model.num_classes} classes")
    failed: List[str] = []
    report = collect_errors(failed)
    paths = list(each_image(args.images, report))
    try:
        forward = runtime_forward(model, args.runtime, args.precision, args.exported,
                                  torch.get_num_threads(),
                                  input_sizes(paths, preprocessing.size, preprocessing.short_side))
    except (ValueError, OSError) as err:
        return fail(err)
    print(f"{converted.source}: {converted.format}, {model.num_classes} classes"
          f"{', named' if model.class_names else ''}; preprocessing {preprocessing.describe()}")
    if converted.windows_known:
        print(converted.describe_windows())
    else:
        print(f"training windows unknown (the file does not record them): using window "
              f"{model.backbone.window_size[0]}; pass --window-size if it was trained with another")
    for path in paths:
        try:
            x = preprocessing.load(path).unsqueeze(0).to(args.device)
        except ImageReadError as err:
            report(err)
            continue
        with torch.no_grad():
            logits = forward(x)[0]
        print(str(path))
        for rank, (index, name, prob) in enumerate(top_k(logits, args.topk, model.class_names), 1):
            print(format_prediction(rank, index, name, prob))
    if failed:
        print(f"{len(failed)} input(s) could not be classified", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
