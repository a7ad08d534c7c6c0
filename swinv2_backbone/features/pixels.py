"""Any input file as the ``(C, H, W)`` pixels of a model with ``C`` input channels.

* Images Pillow reads (:mod:`.images`): for a 3-channel model as 8-bit RGB (grey expanded, alpha
  dropped, see :func:`~.images.read_image`); for any other ``C`` with their own channels kept: grey
  (1; 16-bit grey scaled to 8 bits), grey + alpha (2), RGB (3), RGBA (4; a palette with
  transparency too). A palette without transparency reads as RGB, CMYK and YCbCr as RGB.
* ``.npy`` arrays (read without pickles): ``(H, W)`` is one channel; a 3-D array has its channels
  on the axis whose length is the model's ``C``, first ``(C, H, W)`` or last ``(H, W, C)``: an
  array where both fit (``(4, H, 4)`` for ``C = 4``) is refused as ambiguous, one where neither
  does as a channel mismatch.
* ``.tif``/``.tiff`` for a model of other than 3 channels: with ``tifffile`` installed, as arrays
  of any channel count (the file names its channel axis, contiguous or planar samples); without
  it, through Pillow (1, 2 or 4 channels; more needs ``pip install tifffile``).

Array values: ``uint8`` as they are (0-255), ``uint16`` divided by 65535, floating point as they
are, which must lie in [0, 1]; other types are refused. Arrays are resized with torch's antialiased
bilinear (Pillow filter 2, the default) or bicubic (3) interpolation, or nearest neighbours (0), in
float32, and come back as float32 in [0, 1]; uint8 arrays at their own size stay uint8.

An image whose channels are not the model's is refused with an :class:`~.images.ImageReadError`
naming both, so a batch tool reports it and goes on with the other files.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

from .images import (MAX_PIXELS, ImageReadError, PathLike, Size, image_size, load_pillow,
                     open_image, read_image, sixteen_bit)

ARRAY_EXTENSIONS = (".npy",)
TIFF_EXTENSIONS = (".tif", ".tiff")
#: Pillow modes read with their channels kept -> (mode converted to, description).
_KEPT_MODES = {"1": ("L", "grey"), "L": ("L", "grey"), "LA": ("LA", "grey + alpha"),
               "La": ("LA", "grey + alpha"), "RGBA": ("RGBA", "RGBA"), "RGBa": ("RGBA", "RGBA"),
               "PA": ("RGBA", "RGBA")}
#: Pillow filter numbers -> torch interpolation modes for arrays.
_ARRAY_FILTERS = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _kind(path: PathLike, channels: int) -> str:
    """How ``path`` is read: ``'array'`` (.npy), ``'tiff'`` (tifffile) or ``'image'`` (Pillow)."""
    suffix = Path(path).suffix.lower()
    if suffix in ARRAY_EXTENSIONS:
        return "array"
    if suffix in TIFF_EXTENSIONS and channels != 3 and importlib.util.find_spec("tifffile"):
        return "tiff"
    return "image"


def mismatch(name: str, found: int, what: str, channels: int) -> ImageReadError:
    """The one-line error of an input whose channels are not the model's."""
    return ImageReadError(f"{name}: the image has {found} channel(s) ({what}), the model "
                          f"in_channels={channels}")


def channel_axis(shape: Tuple[int, ...], channels: int, name: str) -> Optional[int]:
    """The channel axis of an array of ``shape`` for a model of ``channels`` channels: ``None`` for
    a 2-D ``(H, W)`` array (one channel), else 0 ``(C, H, W)`` or 2 ``(H, W, C)`` by the rule of
    this module.

    Raises:
        ImageReadError: Another number of dimensions, an ambiguous layout or a channel mismatch.
    """
    if len(shape) == 2:
        if channels != 1:
            raise mismatch(name, 1, f"an (H, W) array of shape {shape}", channels)
        return None
    if len(shape) != 3:
        raise ImageReadError(f"{name}: an array of shape {shape}; expected (H, W), (C, H, W) or "
                             "(H, W, C)")
    first, last = shape[0] == channels, shape[2] == channels
    if first and last:
        raise ImageReadError(f"{name}: shape {shape} is (C, H, W) or (H, W, C) with {channels} "
                             "channels: ambiguous; save it with the channels first and a height "
                             "other than the channel count, or as (H, W, C) with another width")
    if not (first or last):
        raise ImageReadError(f"{name}: shape {shape} has {shape[0]} channels first (C, H, W) or "
                             f"{shape[2]} last (H, W, C), the model in_channels={channels}")
    return 0 if first else 2


def _array_header(path: PathLike) -> Tuple[Tuple[int, ...], Optional[str]]:
    """Shape and axes (tifffile's letters, ``None`` for .npy) of an array file, without reading
    its data."""
    name = os.fspath(path)
    try:
        if Path(path).suffix.lower() in ARRAY_EXTENSIONS:
            import numpy as np

            return tuple(np.load(name, mmap_mode="r", allow_pickle=False).shape), None
        import tifffile

        with tifffile.TiffFile(name) as tif:
            series = tif.series[0]
            return tuple(series.shape), series.axes
    except (OSError, ValueError, IndexError, EOFError) as err:
        raise ImageReadError(f"cannot read {name!r}: {err}") from None


def _tiff_axis(shape: Tuple[int, ...], axes: str, channels: int, name: str) -> Optional[int]:
    """The channel axis a TIFF names (``S`` samples or ``C`` channels), checked against the
    model's channels; ``None`` for a grey ``YX`` image."""
    if axes == "YX":
        found = 1
        axis = None
    elif len(axes) == 3 and axes.replace("S", "C") in ("CYX", "YXC"):
        axis = axes.replace("S", "C").index("C")
        found = shape[axis]
    else:
        raise ImageReadError(f"{name}: a TIFF of axes {axes!r} (shape {shape}); expected one image "
                             "of axes YX, YXS or SYX")
    if found != channels:
        raise mismatch(name, found, f"TIFF axes {axes}", channels)
    return axis


def _layout(path: PathLike, channels: int, max_pixels: Optional[int]
            ) -> Tuple[Tuple[int, ...], Optional[int]]:
    """Shape and channel axis of an array file, its pixel count checked against ``max_pixels``."""
    name = os.fspath(path)
    shape, axes = _array_header(path)
    axis = channel_axis(shape, channels, name) if axes is None else _tiff_axis(shape, axes, channels,
                                                                               name)
    rows, cols = [n for i, n in enumerate(shape) if i != axis]
    if max_pixels is not None and rows * cols > max_pixels:
        raise ImageReadError(f"cannot read {name!r}: {cols}x{rows} is {rows * cols} pixels, more "
                             f"than max_pixels={max_pixels} (a guard against oversized inputs; "
                             "raise it to read larger images)")
    return shape, axis


def _as_tensor(array: Any, axis: Optional[int], name: str) -> torch.Tensor:
    """An array as ``(C, H, W)``: uint8 kept, uint16 / 65535 and floats in [0, 1] as float32."""
    import numpy as np

    if array.dtype == np.uint8:
        data = torch.from_numpy(np.array(array))
    elif array.dtype == np.uint16:
        data = torch.from_numpy(array.astype(np.float32)) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        data = torch.from_numpy(np.array(array, dtype=np.float32))
        if not bool(torch.isfinite(data).all()) or data.numel() and not (
                0.0 <= float(data.min()) and float(data.max()) <= 1.0):
            raise ImageReadError(f"{name}: floating-point pixels must be finite and in [0, 1], got "
                                 f"{float(data.min()):g}..{float(data.max()):g}")
    else:
        raise ImageReadError(f"{name}: pixels of type {array.dtype} have no defined range; save "
                             "uint8 (0-255), uint16 (0-65535) or floats in [0, 1]")
    if axis is None:
        return data.unsqueeze(0).contiguous()
    return (data if axis == 0 else data.permute(2, 0, 1)).contiguous()


def _resize(pixels: torch.Tensor, size: Size, resample: Optional[int], name: str) -> torch.Tensor:
    """``pixels`` resized to ``size`` as float32 in [0, 1] (see the module docstring)."""
    mode = _ARRAY_FILTERS.get(2 if resample is None else resample)
    if mode is None:
        raise ImageReadError(f"{name}: arrays are resized with Pillow filters 0 (nearest), 2 "
                             f"(bilinear) or 3 (bicubic), not {resample}")
    x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels
    options = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    out = F.interpolate(x.unsqueeze(0), size=tuple(size), mode=mode, **options)[0]
    return out.clamp_(0.0, 1.0)


def _read_array(path: PathLike, channels: int, size: Optional[Size], resample: Optional[int],
                max_pixels: Optional[int]) -> torch.Tensor:
    name = os.fspath(path)
    shape, axis = _layout(path, channels, max_pixels)
    try:
        if Path(path).suffix.lower() in ARRAY_EXTENSIONS:
            import numpy as np

            array = np.load(name, allow_pickle=False)
        else:
            import tifffile

            array = tifffile.imread(name, series=0)
    except (OSError, ValueError, EOFError) as err:
        raise ImageReadError(f"cannot read {name!r}: {err}") from None
    if tuple(array.shape) != shape:
        raise ImageReadError(f"cannot read {name!r}: its shape changed while reading")
    pixels = _as_tensor(array, axis, name)
    if size is not None and tuple(pixels.shape[1:]) != tuple(size):
        pixels = _resize(pixels, size, resample, name)
    return pixels


def _read_kept(path: PathLike, channels: int, size: Optional[Size], resample: Optional[int],
               max_pixels: Optional[int]) -> torch.Tensor:
    """A Pillow image with its own channels (see the module docstring), as ``(C, H, W)`` uint8."""
    pil_image, pil_ops = load_pillow()
    name = os.fspath(path)
    with open_image(path, max_pixels) as img:
        img = pil_ops.exif_transpose(img)
        if sixteen_bit(img):
            kept, what = read_image(path, size, resample, max_pixels)[:1], "16-bit grey"
            if channels != 1:
                raise mismatch(name, 1, what, channels)
            return kept
        mode, what = _KEPT_MODES.get(img.mode, ("RGB", "RGB" if img.mode == "RGB"
                                                else f"{img.mode} read as RGB"))
        if img.mode == "P" and "transparency" in img.info:
            mode, what = "RGBA", "palette with transparency"
        if img.mode in ("I", "F"):
            return read_image(path, size, resample, max_pixels)  # refused there, with the reason
        found = len(mode)
        if found != channels:
            hint = "" if Path(name).suffix.lower() not in TIFF_EXTENSIONS else (
                " (tifffile reads TIFFs of any channel count: pip install tifffile)")
            raise ImageReadError(str(mismatch(name, found, what, channels)) + hint)
        img = img.convert(mode)
        if size is not None and (img.height, img.width) != tuple(size):
            img = img.resize((size[1], size[0]), pil_image.Resampling(
                pil_image.Resampling.BILINEAR if resample is None else resample))
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        return data.view(img.height, img.width, found).permute(2, 0, 1).contiguous()


def read_pixels(path: PathLike, channels: int = 3, size: Optional[Size] = None,
                resample: Optional[int] = None, max_pixels: Optional[int] = MAX_PIXELS
                ) -> torch.Tensor:
    """The ``(channels, H, W)`` pixels of an input file (see the module docstring): ``uint8`` in
    0-255, or ``float32`` in [0, 1] for arrays of other types or resized arrays.

    Args:
        path: An image, ``.npy`` or TIFF file.
        channels: The model's input channels.
        size: Output (rows, columns), or ``None`` for the file's own size.
        resample: Pillow's filter number (see :func:`~.images.read_image`), or ``None`` for
            bilinear.
        max_pixels: Refuse inputs with more pixels before decoding them (``None``: no limit).

    Raises:
        ImageReadError: An unreadable file, or one whose channels are not ``channels``.
    """
    kind = _kind(path, channels)
    if kind != "image":
        return _read_array(path, channels, size, resample, max_pixels)
    if channels == 3:
        return read_image(path, size, resample, max_pixels)
    return _read_kept(path, channels, size, resample, max_pixels)


def pixels_size(path: PathLike, channels: int = 3, max_pixels: Optional[int] = MAX_PIXELS) -> Size:
    """(rows, columns) of an input file (after EXIF orientation for images), from its header.

    Args:
        path: An image, ``.npy`` or TIFF file.
        channels: The model's input channels (they decide an array's layout).
        max_pixels: Refuse inputs with more pixels (``None``: no limit).

    Raises:
        ImageReadError: An unreadable file; for arrays also a layout that does not fit
            ``channels``.
    """
    if _kind(path, channels) == "image":
        return image_size(path, max_pixels)
    shape, axis = _layout(path, channels, max_pixels)
    rows, cols = [n for i, n in enumerate(shape) if i != axis]
    return rows, cols


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """``pixels`` as float32 in [0, 1] (uint8 divided by 255)."""
    return pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
