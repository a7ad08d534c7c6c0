"""Feature extraction for downstream heads: multi-scale SwinV2 features of tensors or image files.

:class:`FeatureExtractor` wraps a :class:`~swinv2_backbone.Swinv2Backbone` (given, or built from a
config and/or any supported checkpoint) with ImageNet normalisation, a device and a dtype, and maps
a batch to ``{stage name: (N, C, ceil(H / stride), ceil(W / stride))}``.

For files, :meth:`FeatureExtractor.iter_files` reads images (Pillow, EXIF orientation applied, RGB),
optionally resizes them, and **batches images of equal size only**. Padding different sizes to a
common one would change the features: padded pixels pass through the patch embedding (conv bias,
LayerNorm) and then take part in window attention and in the shifted-window regions, so the result
of an image would depend on its batch neighbours. Batching by size keeps every image's features equal
to those of a batch of one.

:func:`pca_rgb` and :func:`upsample_to_image` turn a feature map into a picture, :func:`save_features`
writes one image's features with their geometry as ``.safetensors``.
"""
from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .models import Swinv2Backbone

#: ImageNet mean and std of RGB values in [0, 1] (the SwinV2 checkpoints were trained with them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Accepted dtype names (short and torch spellings).
DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}

#: File endings taken from folders and globs (explicitly named files are read whatever their ending).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height

Size = Tuple[int, int]
ModelOrCfg = Union[Swinv2Backbone, Mapping[str, Any], None]


class ImageReadError(ValueError):
    """An input image is missing, not an image, or cannot be decoded."""


# ---------------------------------------------------------------------------------------- options
def parse_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """``'fp32' | 'bf16' | 'fp16'`` (or ``float32``/``bfloat16``/``float16``, or the torch dtype)
    -> torch dtype. All three are allowed on every device, fp16 on CPU included (slower than fp32
    there, but supported by every op of the model).

    Args:
        dtype: The requested dtype.
    """
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"unsupported dtype {dtype!r}: choose from 'fp32', 'bf16', 'fp16' (or "
                     "torch.float32, torch.bfloat16, torch.float16)")


def dtype_name(dtype: torch.dtype) -> str:
    """Short name (``'fp32'``, ``'bf16'``, ``'fp16'``) of a supported dtype.

    Args:
        dtype: A dtype accepted by :func:`parse_dtype`.
    """
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[parse_dtype(dtype)]


def parse_device(device: Union[str, torch.device]) -> torch.device:
    """Validate a device: it must parse, and CUDA must be available for ``cuda`` devices.

    Args:
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` or a ``torch.device``.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: use 'cpu', 'cuda' or 'cuda:N' ({err})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here "
                             "(torch.cuda.is_available() is False); use device 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} "
                             "CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return dev


def _channel_stats(values: Sequence[float], name: str) -> torch.Tensor:
    stats = torch.as_tensor(values, dtype=torch.float32)
    if stats.shape != (3,) or not torch.isfinite(stats).all():
        raise ValueError(f"{name} must be 3 finite numbers (R, G, B, for pixel values in [0, 1]), "
                         f"got {values!r}")
    return stats


# ---------------------------------------------------------------------------------------- model
def _backbone_kwargs(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    kwargs = dict(cfg)
    kind = kwargs.pop("type", "Swinv2Backbone")
    if kind != "Swinv2Backbone":
        raise ValueError(f"model config type must be 'Swinv2Backbone', got {kind!r}")
    return kwargs


def _with_outputs(kwargs: Dict[str, Any], out_features: Optional[Sequence[str]]) -> Dict[str, Any]:
    if out_features is None:
        return kwargs
    given = [k for k in ("out_indices", "out_features") if kwargs.get(k) is not None]
    if given:
        raise ValueError(f"the outputs are given twice: out_features={tuple(out_features)!r} and "
                         f"{given[0]} in the model config; give them once")
    return {**kwargs, "out_features": tuple(out_features)}


def _check_subset(model: Swinv2Backbone, out_features: Optional[Sequence[str]]) -> None:
    if out_features is None:
        return
    if isinstance(out_features, str):
        raise ValueError(f"out_features must be a sequence of names, got the string {out_features!r}")
    missing = [n for n in out_features if n not in model.out_features]
    if missing:
        raise ValueError(f"out_features {missing} are not outputs of the given model: it returns "
                         f"{list(model.out_features)}")


def build_backbone(
    model: ModelOrCfg = None,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    out_features: Optional[Sequence[str]] = None,
) -> Swinv2Backbone:
    """A backbone with its weights, from a model, a config and/or a checkpoint.

    Args:
        model: A built ``Swinv2Backbone`` (used as is), a config dict of ``Swinv2Backbone`` keyword
            arguments (``type='Swinv2Backbone'`` allowed), or ``None`` (needs ``checkpoint``).
        checkpoint: Any supported checkpoint (HF directory, official, timm, torchvision,
            mmpretrain, mmdet/mmseg or native file). With a config or ``None``, the architecture is
            read from the checkpoint (:meth:`~swinv2_backbone.checkpoint.ConvertedCheckpoint.backbone_cfg`)
            and the config's entries override it; when the config sets other windows than the
            checkpoint's but no ``pretrained_window_sizes``, the position bias keeps the
            checkpoint's coordinate normalisation.
        out_features: Outputs (``'stem'``, ``'stage1'``...). With a built model they must be
            among its outputs (checked here; :class:`FeatureExtractor` returns only them); with a
            config they are passed to the constructor (the config must not also select outputs).

    Without a checkpoint, a config gets the default random initialisation unless its ``init_cfg``
    or ``pretrained`` names one.
    """
    if isinstance(model, Swinv2Backbone):
        _check_subset(model, out_features)
        if checkpoint is not None:
            from .checkpoint import load_pretrained

            load_pretrained(model, checkpoint=os.fspath(checkpoint))
        return model
    if model is not None and not isinstance(model, Mapping):
        raise TypeError(f"model must be a Swinv2Backbone, a config dict or None, got {type(model).__name__}")
    kwargs = _with_outputs(_backbone_kwargs(model or {}), out_features)
    if checkpoint is None:
        if model is None:
            raise ValueError("give a model, a model config (e.g. dict(arch='tiny') for random "
                             "weights) or a checkpoint")
        backbone = Swinv2Backbone(**kwargs)
        if backbone.init_cfg is not None:
            backbone.init_weights()
        return backbone
    if kwargs.get("init_cfg") is not None or kwargs.get("pretrained") is not None:
        raise ValueError("the checkpoint is given twice: checkpoint= and init_cfg/pretrained in the "
                         "model config; give it once")
    from .checkpoint import convert_checkpoint, load_pretrained

    converted = convert_checkpoint(os.fspath(checkpoint))
    cfg = _backbone_kwargs(converted.backbone_cfg())
    if any(k in kwargs for k in ("arch", "embed_dims", "depths", "num_heads")):
        for key in ("arch", "embed_dims", "depths", "num_heads"):
            cfg.pop(key, None)
    backbone = Swinv2Backbone(**{**cfg, **kwargs})
    own_windows = "pretrained_window_sizes" in kwargs or not converted.windows_known
    load_pretrained(backbone, checkpoint=os.fspath(checkpoint),
                    pretrained_window_sizes=None if own_windows else "checkpoint")
    return backbone


# ---------------------------------------------------------------------------------------- extractor
@dataclass
class ImageFeatures:
    """Features of one image file.

    Args:
        index: Position of the file in the list given to :meth:`FeatureExtractor.iter_files`.
        path: The file.
        features: Stage name -> ``(C, ceil(h / stride), ceil(w / stride))`` tensor on the CPU, in the
            extractor's dtype, for the model input size ``(h, w)``.
        original_size: Size of the decoded image (rows, columns), EXIF orientation applied.
        input_size: Size fed to the model after any resizing.
        padded_size: ``input_size`` rounded up to a multiple of the largest returned stride: the area
            the deepest returned map covers (a map of stride ``s`` covers ``ceil(h / s) * s`` rows).
    """

    index: int
    path: Path
    features: Dict[str, torch.Tensor]
    original_size: Size
    input_size: Size
    padded_size: Size


class FeatureExtractor:
    """Multi-scale features from a SwinV2 backbone, as ``{stage name: tensor}``.

    Args:
        model: A ``Swinv2Backbone``, a config dict of its keyword arguments, or ``None`` to take the
            architecture from ``checkpoint`` (see :func:`build_backbone`). A given model is moved to
            ``device``/``dtype`` and put in eval mode in place.
        checkpoint: Any supported checkpoint file or HF directory, or ``None``.
        out_features: Stage names to return (``'stem'``, ``'stage1'``...``'stage4'``); default: the
            model's outputs (all four stages for a config).
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        dtype: ``'fp32'``, ``'bf16'``, ``'fp16'`` or the torch dtype; weights and inputs are cast to it
            (normalisation happens in fp32 first), features come back in it.
        mean: Per-channel RGB mean for pixel values in [0, 1] (ImageNet by default).
        std: Per-channel RGB std for pixel values in [0, 1] (ImageNet by default).
    """

    def __init__(
        self,
        model: ModelOrCfg = None,
        checkpoint: Optional[Union[str, os.PathLike]] = None,
        out_features: Optional[Sequence[str]] = None,
        device: Union[str, torch.device] = "cpu",
        dtype: Union[str, torch.dtype] = torch.float32,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.device = parse_device(device)
        self.dtype = parse_dtype(dtype)
        mean_t, std_t = _channel_stats(mean, "mean"), _channel_stats(std, "std")
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {tuple(std)!r}")
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self._mean = mean_t.view(1, 3, 1, 1).to(self.device)
        self._std = std_t.view(1, 3, 1, 1).to(self.device)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        backbone = build_backbone(model, checkpoint, out_features)
        if backbone.in_channels != 3:
            raise ValueError(f"FeatureExtractor reads RGB images; the model has in_channels "
                             f"{backbone.in_channels}")
        self.out_features = self._select(backbone, out_features)
        self.model = backbone.to(device=self.device, dtype=self.dtype).eval()
        geometry = dict(zip(backbone.out_features, zip(backbone.strides, backbone.out_channels)))
        self.strides = {name: geometry[name][0] for name in self.out_features}
        self.channels = {name: geometry[name][1] for name in self.out_features}

    @staticmethod
    def _select(backbone: Swinv2Backbone, out_features: Optional[Sequence[str]]) -> Tuple[str, ...]:
        """The requested outputs (all by default) in the model's order."""
        if out_features is None:
            return tuple(backbone.out_features)
        return tuple(n for n in backbone.out_features if n in out_features)

    def __repr__(self) -> str:
        return (f"FeatureExtractor(out_features={self.out_features}, strides={self.strides}, "
                f"device={self.device}, dtype={dtype_name(self.dtype)})")

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB, got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            x = images.to(self.device, torch.float32) / 255.0
        elif images.is_floating_point():
            x = images.to(self.device, torch.float32)
        else:
            raise TypeError(f"images must be uint8 (0-255) or floating point (0-1), got {images.dtype}")
        return ((x - self._mean) / self._std).to(self.dtype)

    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Features of a batch.

        Args:
            images: ``(N, 3, H, W)`` RGB, ``uint8`` in 0-255 or floating point in 0-1 (normalised
                here with ``mean``/``std``).

        Returns:
            Stage name -> ``(N, C, ceil(H / stride), ceil(W / stride))`` on ``device`` in ``dtype``.
        """
        x = self._normalize(images)
        with torch.inference_mode():
            outs = self.model(x)
        named = dict(zip(self.model.out_features, outs))
        return {name: named[name] for name in self.out_features}

    def padded_size(self, size: Size) -> Size:
        """``size`` rounded up to a multiple of the largest returned stride.

        Args:
            size: Model input size (rows, columns).
        """
        s = max(self.strides.values())
        return math.ceil(size[0] / s) * s, math.ceil(size[1] / s) * s

    def iter_files(
        self,
        paths: Sequence[Union[str, os.PathLike]],
        batch_size: int = 8,
        size: Optional[Size] = None,
        short_side: Optional[int] = None,
    ) -> Iterator[ImageFeatures]:
        """Features of image files, batched by model input size, yielded as they are computed
        (images of one size together, in their order; sizes in order of first appearance).

        Args:
            paths: Image files (see :func:`find_images` to expand folders and globs).
            batch_size: Most images per forward pass.
            size: Resize every image to ``(rows, columns)``; ``None`` keeps sizes.
            short_side: Resize keeping the aspect ratio so that the shorter side has this length.

        Raises:
            ImageReadError: A file is missing or cannot be decoded (raised before any compute for
                files whose header is unreadable).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        files = [Path(p) for p in paths]
        if not files:
            raise ValueError("no image files given")
        originals = [image_size(p) for p in files]
        inputs = [target_size(s, size=size, short_side=short_side) for s in originals]
        for batch in batches_by_size(inputs, batch_size):
            pixels = torch.stack([read_image(files[i], inputs[i]) for i in batch])
            feats = self(pixels)
            for k, i in enumerate(batch):
                yield ImageFeatures(
                    index=i, path=files[i],
                    features={n: f[k].to("cpu", copy=True) for n, f in feats.items()},
                    original_size=originals[i], input_size=inputs[i],
                    padded_size=self.padded_size(inputs[i]))

    def extract_files(
        self,
        paths: Sequence[Union[str, os.PathLike]],
        batch_size: int = 8,
        size: Optional[Size] = None,
        short_side: Optional[int] = None,
    ) -> List[ImageFeatures]:
        """:meth:`iter_files` collected in the order of ``paths`` (all features held in memory).

        Args:
            paths: Image files.
            batch_size: Most images per forward pass.
            size: Resize every image to ``(rows, columns)``.
            short_side: Resize keeping the aspect ratio, shorter side to this length.
        """
        results = list(self.iter_files(paths, batch_size=batch_size, size=size, short_side=short_side))
        return sorted(results, key=lambda r: r.index)


# ---------------------------------------------------------------------------------------- images
def find_images(inputs: Sequence[Union[str, os.PathLike]]) -> List[Path]:
    """Expand image files, folders (their image files, sorted, not recursive) and glob patterns
    (matching image files, sorted; ``**`` recurses) into a list of files; a file reached twice is
    listed once.

    Args:
        inputs: Files, folders and patterns.

    Raises:
        ImageReadError: A path does not exist, or a folder or pattern holds no image files.
    """
    found: List[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and _is_image_name(p))
            if not matches:
                raise ImageReadError(f"no images found in folder {text!r} (looked for "
                                     f"{', '.join(IMAGE_EXTENSIONS)})")
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True)
                             if Path(p).is_file() and _is_image_name(Path(p)))
            if not matches:
                raise ImageReadError(f"no images found for pattern {text!r} (image files ending in "
                                     f"{', '.join(IMAGE_EXTENSIONS)})")
        else:
            raise ImageReadError(f"no such file or folder: {text!r}")
        found.extend(matches)
    seen: set = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError("reading images needs Pillow: pip install pillow") from None
    return Image, ImageOps


def image_size(path: Union[str, os.PathLike]) -> Size:
    """(rows, columns) of an image file after EXIF orientation, from its header only.

    Args:
        path: The image file.

    Raises:
        ImageReadError: Missing file or unrecognised format.
    """
    image_mod, _ = _pil()
    try:
        with image_mod.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"cannot read image {os.fspath(path)!r}: {err}") from None
    return (w, h) if orientation in _TRANSPOSED_ORIENTATIONS else (h, w)


def read_image(path: Union[str, os.PathLike], size: Optional[Size] = None) -> torch.Tensor:
    """Decode an image as ``(3, H, W)`` uint8 RGB (EXIF orientation applied, alpha dropped, grey
    expanded), resized with Pillow's antialiased bilinear filter to ``size`` if given.

    Args:
        path: The image file.
        size: Output (rows, columns), or ``None`` for the image's own size.

    Raises:
        ImageReadError: Missing, truncated or undecodable file.
    """
    image_mod, image_ops = _pil()
    try:
        with image_mod.open(path) as img:
            rgb = image_ops.exif_transpose(img).convert("RGB")
            if size is not None and (rgb.height, rgb.width) != tuple(size):
                rgb = rgb.resize((size[1], size[0]), image_mod.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"cannot read image {os.fspath(path)!r}: {err}") from None
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


# ---------------------------------------------------------------------------------------- outputs
def pca_rgb(feature: torch.Tensor) -> torch.Tensor:
    """The 3 leading principal components of a ``(C, h, w)`` map's C-dim vectors over its ``h*w``
    positions, each min-max scaled to 0-255: a ``(3, h, w)`` uint8 picture.

    A component's sign is chosen so that its largest-magnitude value is positive (deterministic);
    missing components (fewer than 3 channels or positions) and constant ones are 0.

    Args:
        feature: One image's feature map.
    """
    if feature.ndim != 3:
        raise ValueError(f"pca_rgb expects a (C, h, w) map, got shape {tuple(feature.shape)}")
    c, h, w = feature.shape
    x = feature.detach().to("cpu", torch.float32).reshape(c, h * w).T  # (positions, C)
    x = x - x.mean(dim=0, keepdim=True)
    out = torch.zeros(h * w, 3)
    k = min(3, c, h * w)
    if k > 0 and x.abs().max() > 0:
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        proj = x @ vh[:k].T  # (positions, k)
        peak = proj.gather(0, proj.abs().argmax(dim=0, keepdim=True))
        proj = proj * torch.where(peak < 0, -1.0, 1.0)
        low, high = proj.min(dim=0).values, proj.max(dim=0).values
        span = high - low
        scaled = torch.where(span > 0, (proj - low) / span.clamp_min(1e-12), torch.zeros_like(proj))
        out[:, :k] = scaled
    return (out * 255.0).round().to(torch.uint8).T.reshape(3, h, w)


def upsample_to_image(picture: torch.Tensor, stride: int, input_size: Size,
                      output_size: Optional[Size] = None) -> torch.Tensor:
    """Expand a ``(3, h, w)`` per-cell picture to image pixels: each cell becomes the
    ``stride x stride`` block it covers, cropped to ``input_size``, then (if ``output_size``
    differs, e.g. the original size of a resized image) resized with nearest neighbours.

    Args:
        picture: ``(3, ceil(H / stride), ceil(W / stride))`` uint8.
        stride: The map's stride.
        input_size: Model input size ``(H, W)``.
        output_size: Final size, or ``None`` for ``input_size``.
    """
    rows, cols = input_size
    if picture.shape[1] != math.ceil(rows / stride) or picture.shape[2] != math.ceil(cols / stride):
        raise ValueError(f"a {tuple(picture.shape[1:])} map does not have stride {stride} for input "
                         f"size {tuple(input_size)}")
    full = picture.repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)[:, :rows, :cols]
    if output_size is None or tuple(output_size) == tuple(input_size):
        return full.contiguous()
    return F.interpolate(full[None].float(), size=tuple(output_size), mode="nearest")[0].to(torch.uint8)


def save_png(picture: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Write a ``(3, H, W)`` uint8 picture as PNG.

    Args:
        picture: The picture.
        path: Output file.
    """
    image_mod, _ = _pil()
    array = picture.permute(1, 2, 0).contiguous().numpy()
    image_mod.fromarray(array).save(path, format="PNG")


def feature_metadata(result: ImageFeatures, extractor: FeatureExtractor) -> Dict[str, str]:
    """The ``str -> str`` safetensors metadata of one image's features (JSON values).

    Keys: ``stages`` (order), ``strides`` and ``channels`` (per stage), ``input_size``,
    ``original_size``, ``padded_size`` ([rows, columns]), ``source`` (image path), ``checkpoint``
    (path, or ``null`` for random weights), ``dtype`` and ``mean``/``std``.

    Args:
        result: The image's features.
        extractor: The extractor that computed them.
    """
    values = {
        "stages": list(result.features),
        "strides": {n: extractor.strides[n] for n in result.features},
        "channels": {n: extractor.channels[n] for n in result.features},
        "input_size": list(result.input_size),
        "original_size": list(result.original_size),
        "padded_size": list(result.padded_size),
        "source": os.fspath(result.path),
        "checkpoint": extractor.checkpoint,
        "dtype": dtype_name(extractor.dtype),
        "mean": list(extractor.mean),
        "std": list(extractor.std),
    }
    return {k: json.dumps(v) for k, v in values.items()}


def save_features(result: ImageFeatures, extractor: FeatureExtractor,
                  path: Union[str, os.PathLike]) -> None:
    """Write one image's features (one tensor per stage) and :func:`feature_metadata` as
    ``.safetensors``.

    Args:
        result: The image's features.
        extractor: The extractor that computed them.
        path: Output file.
    """
    from safetensors.torch import save_file

    tensors = {n: t.contiguous() for n, t in result.features.items()}
    save_file(tensors, os.fspath(path), metadata=feature_metadata(result, extractor))


def load_features(path: Union[str, os.PathLike]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a file written by :func:`save_features`: the tensors and the decoded metadata.

    Args:
        path: The ``.safetensors`` file.
    """
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return {n: tensors[n] for n in meta.get("stages", sorted(tensors))}, meta
