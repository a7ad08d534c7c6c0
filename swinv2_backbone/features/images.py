"""Image files for feature extraction: finding them, their sizes, decoding, and batching by size.

Sizes are ``(rows, columns)`` after the EXIF orientation is applied, so a photo taken upright reads
upright. What is decoded: any mode Pillow reads, as 8-bit RGB (alpha dropped, palette, greyscale and
CMYK converted, 16-bit greyscale scaled to 8 bits); refused with the reason: truncated or
undecodable files, 32-bit integer and floating-point pixels, and images of more than
:data:`MAX_PIXELS` pixels (checked from the header, before decoding). :func:`batches_by_size` groups only images of equal size: padding to a common size would
change the features (see :mod:`swinv2_backbone.features.extractor`).
"""
from __future__ import annotations

import contextlib
import glob
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import torch

#: File endings taken from folders and globs (explicitly named files are read whatever their ending);
#: ``.npy`` arrays are read by :mod:`.pixels`.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".npy")

#: Default limit on an image's pixels, checked from its header before decoding: Pillow's own
#: decompression-bomb threshold (a 9459 x 9459 image; 256 MiB as 8-bit RGB).
MAX_PIXELS = 89_478_485

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height

#: An image or map size, (rows, columns).
Size = Tuple[int, int]
PathLike = Union[str, os.PathLike]


class ImageReadError(ValueError):
    """An input image is missing, not an image, or cannot be decoded."""


def load_pillow() -> Tuple[ModuleType, ModuleType]:
    """Pillow's ``Image`` and ``ImageOps`` modules, imported on first use so that the rest of the
    package works without Pillow."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError("reading images needs Pillow: pip install pillow") from None
    return Image, ImageOps


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _expand(text: str) -> List[Path]:
    """The image files one input names: itself, a folder's, or a pattern's matches (sorted)."""
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        matches = sorted(p for p in path.iterdir() if p.is_file() and _is_image_name(p))
        if not matches:
            raise ImageReadError(f"no images found in folder {text!r} (looked for "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
        return matches
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True)
                         if Path(p).is_file() and _is_image_name(Path(p)))
        if not matches:
            raise ImageReadError(f"no images found for pattern {text!r} (image files ending in "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
        return matches
    raise ImageReadError(f"no such file or folder: {text!r}")


def _first_occurrences(paths: Sequence[Path]) -> List[Path]:
    """``paths`` without the files already listed under another spelling (same resolved path)."""
    seen: Set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def find_images(inputs: Sequence[PathLike]) -> List[Path]:
    """Expand image files, folders (their image files, sorted, not recursive) and glob patterns
    (matching image files, sorted; ``**`` recurses) into a list of files; a file reached twice is
    listed once.

    Args:
        inputs: Files, folders and patterns.

    Raises:
        ImageReadError: A path does not exist, or a folder or pattern holds no image files.
    """
    return _first_occurrences([p for item in inputs for p in _expand(os.fspath(item))])


def each_image(inputs: Sequence[PathLike], on_error: Callable[[ImageReadError], None]
               ) -> Iterator[Path]:
    """:func:`find_images` input by input, for batch tools: an input that names no image is passed
    to ``on_error`` and the others still yield (one bad item never costs the good ones).

    Args:
        inputs: Files, folders and patterns.
        on_error: Called with the error of each input that names no image.
    """
    for item in inputs:
        try:
            paths = find_images([item])
        except ImageReadError as err:
            on_error(err)
            continue
        yield from paths


@contextlib.contextmanager
def open_image(path: PathLike, max_pixels: Optional[int]) -> Iterator[Any]:
    """Pillow's image of ``path``, its header read and checked; every failure, on opening or while
    the caller decodes, becomes an :class:`ImageReadError` naming the file and the reason."""
    pil_image, _ = load_pillow()
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():  # the pixel limit is checked here, below
            warnings.simplefilter("ignore", pil_image.DecompressionBombWarning)
            with pil_image.open(path) as img:
                if max_pixels is not None and img.width * img.height > max_pixels:
                    raise ImageReadError(
                        f"cannot read image {name!r}: {img.width}x{img.height} is "
                        f"{img.width * img.height} pixels, more than max_pixels={max_pixels} (a guard "
                        "against decompression bombs; raise it to read larger images)")
                yield img
    except ImageReadError:
        raise
    except pil_image.DecompressionBombError as err:
        raise ImageReadError(f"cannot read image {name!r}: {err}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"cannot read image {name!r}: {err}") from None


def sixteen_bit(img: Any) -> bool:
    """Whether ``img`` holds one channel of 16-bit values (PNG greyscale opens as ``I;16*``, or as
    32-bit ``I`` in older Pillow)."""
    return img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG")


def _as_rgb(img: Any, name: str) -> Any:
    """``img`` as 8-bit RGB: 16-bit greyscale scaled to 0-255 (``round(v / 257)``; Pillow's own
    conversion clips every value above 255 to white), alpha dropped, palette/greyscale/CMYK
    converted by Pillow. 32-bit integer and floating-point pixels have no defined 0-255 scale and
    are refused."""
    if sixteen_bit(img):
        img = img.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    elif img.mode in ("I", "F"):
        raise ImageReadError(f"cannot read image {name!r}: mode {img.mode!r} ("
                             f"{'32-bit integer' if img.mode == 'I' else 'floating-point'} pixels) has "
                             "no defined 0-255 range; save it with 8 or 16 bits per channel")
    return img.convert("RGB")


def image_size(path: PathLike, max_pixels: Optional[int] = MAX_PIXELS) -> Size:
    """(rows, columns) of an image file after EXIF orientation, from its header only.

    Args:
        path: The image file.
        max_pixels: Refuse images with more pixels (``None``: no limit).

    Raises:
        ImageReadError: Missing file, unrecognised format, or more than ``max_pixels`` pixels.
    """
    with open_image(path, max_pixels) as img:
        w, h = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    return (w, h) if orientation in _TRANSPOSED_ORIENTATIONS else (h, w)


def read_image(path: PathLike, size: Optional[Size] = None, resample: Optional[int] = None,
               max_pixels: Optional[int] = MAX_PIXELS) -> torch.Tensor:
    """Decode an image as ``(3, H, W)`` uint8 RGB (EXIF orientation applied, alpha dropped, grey
    expanded, 16-bit greyscale scaled to 8 bits), resized with Pillow's antialiased bilinear filter
    (or ``resample``) to ``size`` if given.

    Args:
        path: The image file.
        size: Output (rows, columns), or ``None`` for the image's own size.
        resample: Pillow's filter number (2 bilinear, 3 bicubic, ...: what HF preprocessor
            configs store), or ``None`` for bilinear.
        max_pixels: Refuse images with more pixels before decoding them (``None``: no limit).

    Raises:
        ImageReadError: Missing, truncated or undecodable file, 32-bit or floating-point pixels,
            or more than ``max_pixels`` pixels.
    """
    pil_image, pil_ops = load_pillow()
    with open_image(path, max_pixels) as img:
        rgb = _as_rgb(pil_ops.exif_transpose(img), os.fspath(path))
        if size is not None and (rgb.height, rgb.width) != tuple(size):
            rgb = rgb.resize((size[1], size[0]), pil_image.Resampling(
                pil_image.Resampling.BILINEAR if resample is None else resample))
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def target_size(original: Size, size: Optional[Size] = None, short_side: Optional[int] = None) -> Size:
    """Model input size for an image of ``original`` size.

    Args:
        original: Image size (rows, columns).
        size: Fixed output (rows, columns), or ``None``.
        short_side: Scale keeping the aspect ratio so the shorter side is this long (the other side
            rounded to the nearest pixel, at least 1), or ``None``.
    """
    if size is not None and short_side is not None:
        raise ValueError("give either size or short_side, not both")
    if size is not None:
        if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"size must be two positive ints (rows, columns), got {size!r}")
        return int(size[0]), int(size[1])
    if short_side is not None:
        if not isinstance(short_side, int) or short_side < 1:
            raise ValueError(f"short_side must be a positive int, got {short_side!r}")
        scale = short_side / min(original)
        return tuple(short_side if s == min(original) else max(1, round(s * scale))
                     for s in original)
    return original


def input_sizes(paths: Sequence[PathLike], size: Optional[Size] = None,
                short_side: Optional[int] = None, max_pixels: Optional[int] = MAX_PIXELS
                ) -> Iterator[Size]:
    """The model input size (:func:`target_size`) of every readable image among ``paths``, from
    the headers only, read as iterated; an unreadable image is left out (reading it later reports
    why).

    Args:
        paths: Image files.
        size: Fixed output (rows, columns), or ``None``.
        short_side: Shorter side after resizing, or ``None``.
        max_pixels: Leave out images with more pixels (``None``: no limit).
    """
    for path in paths:
        try:
            yield target_size(image_size(path, max_pixels), size, short_side)
        except ImageReadError:
            continue


def batches_by_size(sizes: Sequence[Size], batch_size: int) -> List[List[int]]:
    """Indices grouped by equal size (sizes in order of first appearance, indices in order), cut
    into batches of at most ``batch_size``.

    Args:
        sizes: Size of every image.
        batch_size: Most images per batch.
    """
    groups: Dict[Size, List[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault(tuple(s), []).append(i)
    return [idx[k:k + batch_size] for idx in groups.values() for k in range(0, len(idx), batch_size)]
