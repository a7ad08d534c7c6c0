"""int8 OpenVINO files: NNCF's post-training quantization of an exported OpenVINO IR.

The quantized file keeps everything the exported one records (the sizes it serves, its outputs) and
adds ``"precision": "int8"`` and the number of calibration images; it serves the same sizes (the
quantization statistics are per channel, not per position, so one calibration at any sizes holds
for all). The Linear layers and attention products run in int8 (the rest in the precision
``load_exported(..., precision=...)`` sets); NNCF's transformer preset keeps the softmax, the norms
and the GELU in floating point. Which CPUs a file is made for: :data:`INT8_CPUS`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

from ..features.extractor import channel_stats
from ..features.images import ImageReadError, each_image
from ..features.pixels import as_float, read_pixels
from .targets import METADATA_KEY, read_metadata, require, save_openvino
from .tracing import ExportError, SizeRange

#: What quantization needs installed, for the messages.
NNCF_PURPOSE = "int8 quantization"
#: The CPUs an int8 file can be made for. ``'any'`` (the default) quantizes the weights to 7 bits in
#: every layer (NNCF's overflow fix): a CPU without int8 dot-product instructions (AVX2, AVX-512
#: without VNNI) adds pairs of int8 products into 16 bits, which 8-bit weights can saturate.
#: ``'vnni'`` keeps 8-bit weights, for CPUs with AVX512-VNNI, AVX-VNNI or AMX only. On the AVX2-only
#: EPYC (2026-12-07; tests/test_deploy_int8.py's model) a ``'vnni'`` file's stage-1 features were
#: 0.14 off f32 (mean relative), an ``'any'`` file's 0.029.
INT8_CPUS = ("any", "vnni")


def _calibration_arrays(images: Iterable[Union[np.ndarray, torch.Tensor]], sizes: SizeRange
                        ) -> List[np.ndarray]:
    arrays = []
    for i, image in enumerate(images):
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3:
            array = array[None]
        try:
            sizes.check(tuple(array.shape))
        except ExportError as err:
            raise ExportError(f"calibration input {i}: {err}") from err
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise ExportError(f"calibration input {i}: expected finite floating-point images "
                              "(normalised as the model takes them)")
        arrays.append(np.ascontiguousarray(array, dtype=np.float32))
    if not arrays:
        raise ExportError("int8 quantization needs at least one calibration image")
    return arrays


def quantize_int8(source: Union[str, os.PathLike], output: Union[str, os.PathLike],
                  calibration: Iterable[Union[np.ndarray, torch.Tensor]], cpu: str = "any"
                  ) -> SizeRange:
    """Quantize an exported OpenVINO IR to int8 and write it to ``output``.

    Args:
        source: An OpenVINO IR (``.xml``) written by :func:`~swinv2_backbone.deploy.export`.
        output: The int8 IR to write (``.xml``, with its ``.bin``; both written atomically, the
            weights first). May not be ``source``.
        calibration: Inputs as the model takes them (normalised ``(C, H, W)`` or ``(N, C, H, W)``
            floats, inside the file's sizes): the activation ranges are measured on them, so they
            should look like the images it will serve. Each is used once.
        cpu: The CPUs the file is for, one of :data:`INT8_CPUS` (recorded in the file as
            ``int8_cpu``; :func:`~swinv2_backbone.deploy.load_exported` warns where a ``'vnni'``
            file runs on a CPU without int8 dot products).

    Returns:
        The sizes the file serves (those of ``source``).

    Raises:
        ExportError: ``source`` is not such a file, ``output`` is not a new ``.xml`` in an existing
            directory, a calibration input the file does not serve, an unknown ``cpu``, or NNCF /
            OpenVINO missing (the message names the install command).
    """
    if cpu not in INT8_CPUS:
        raise ExportError(f"cpu must be one of {', '.join(INT8_CPUS)} (the CPUs the int8 file is "
                          f"for), got {cpu!r}")
    source, output = Path(source), Path(output)
    if source.suffix != ".xml" or not source.is_file():
        raise ExportError(f"int8 quantization takes an exported OpenVINO IR (*.xml), got {str(source)!r}")
    if output.suffix != ".xml":
        raise ExportError(f"the int8 file is an OpenVINO IR named *.xml, got {str(output)!r}")
    if output.resolve() == source.resolve():
        raise ExportError("write the int8 file beside the exported one, not over it")
    if not output.parent.is_dir():
        raise ExportError(f"the output's directory {str(output.parent)!r} does not exist")
    ov = require("openvino", NNCF_PURPOSE)
    nncf = require("nncf", NNCF_PURPOSE)
    model = ov.Core().read_model(str(source))
    if not model.has_rt_info(METADATA_KEY):
        raise ExportError(f"{str(source)!r} has no {METADATA_KEY} metadata: export it with "
                          "tools/export.py (or swinv2_backbone.deploy.export)")
    text = model.get_rt_info(METADATA_KEY).astype(str)
    sizes = read_metadata(text)["sizes"]
    arrays = _calibration_arrays(calibration, sizes)
    overflow = nncf.OverflowFix.ENABLE if cpu == "any" else nncf.OverflowFix.FIRST_LAYER
    quantized = nncf.quantize(model, nncf.Dataset(arrays), subset_size=len(arrays),
                              model_type=nncf.ModelType.TRANSFORMER,
                              advanced_parameters=nncf.AdvancedQuantizationParameters(
                                  overflow_fix=overflow))
    save_openvino(quantized, output, {**json.loads(text), "precision": "int8", "int8_cpu": cpu,
                                      "calibration_inputs": len(arrays)})
    return sizes


def calibration_images(inputs: Sequence[Union[str, os.PathLike]], sizes: SizeRange,
                       mean: Optional[Sequence[float]], std: Optional[Sequence[float]],
                       on_error: Callable[[Exception], None]) -> Iterator[np.ndarray]:
    """Calibration inputs for a file serving ``sizes`` from image files, folders and globs (any
    format the feature tools read: images, ``.npy``, TIFF): each read with the file's channels,
    scaled to [0, 1], normalised with ``mean`` / ``std`` (ImageNet's by default for 3 channels,
    as the tools do), resized to the file's size if it serves one size, and yielded as a
    ``(1, C, H, W)`` array. An input that cannot be read or is outside the file's sizes goes to
    ``on_error`` and the others still yield.

    Raises:
        ValueError: ``mean`` / ``std`` that do not fit the channels (or none for channels != 3).
    """
    mean_t, std_t = (torch.tensor(v).view(-1, 1, 1) for v in channel_stats(mean, std, sizes.channels))
    size = (sizes.min_height, sizes.min_width) if sizes.fixed else None
    for path in each_image(inputs, on_error):
        try:
            pixels = read_pixels(path, sizes.channels, size)
            array = ((as_float(pixels) - mean_t) / std_t)[None].numpy()
            sizes.check(tuple(array.shape))
        except (ImageReadError, ExportError) as err:
            on_error(ImageReadError(f"{path}: {err}") if isinstance(err, ExportError) else err)
            continue
        yield array
