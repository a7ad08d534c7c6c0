"""Multi-scale Swin (V2 or V1) features of image tensors and image files.

:class:`FeatureExtractor` wraps a :class:`~swinv2_backbone.Swinv2Backbone` or Swin V1
``SwinBackbone`` (given, or built from a config and/or any supported checkpoint by
:func:`~swinv2_backbone.checkpoint.build.build_backbone`)
with ImageNet normalisation, a device and a dtype, and maps a batch to
``{stage name: (N, C, ceil(H / stride), ceil(W / stride))}``.

For files, :meth:`FeatureExtractor.iter_files` reads images (:mod:`.images`), optionally resizes
them, and **batches images of equal size only**. Padding different sizes to a common one would
change the features: padded pixels pass through the patch embedding (conv bias, LayerNorm) and then
take part in window attention and in the shifted-window regions, so the result of an image would
depend on its batch neighbours. Batching by size keeps every image's features equal to those of a
batch of one.

Decoding, resizing and normalising run ``prefetch`` batches ahead of the model in a background
thread (:class:`~swinv2_backbone.features.background.Prefetcher`), so that the model does not wait
for them; the results are the same bytes as with ``prefetch=0`` (the same operations on the same
pixels, only in another thread). :class:`ForwardTiming` sums the time of the model forward alone.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ..checkpoint.build import ModelOrCfg, build_backbone
from ..models import SwinBackboneBase
from .background import Prefetcher, check_depth
from .images import MAX_PIXELS, ImageReadError, PathLike, Size, batches_by_size, target_size
from .pixels import as_float, pixels_size, read_pixels

#: ImageNet mean and std of RGB values in [0, 1] (the SwinV2 checkpoints were trained with them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Accepted dtype names (short and torch spellings).
DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


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


def dtype_name(dtype: Union[str, torch.dtype]) -> str:
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


def channel_stats(mean: Optional[Sequence[float]], std: Optional[Sequence[float]], channels: int
                  ) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The per-channel normalisation of a model with ``channels`` input channels: ``mean`` and
    ``std`` as given (``channels`` finite numbers each, std positive), or ImageNet's for 3
    channels when they are ``None``. Other channel counts have no default: the RGB statistics do
    not say what another channel holds.

    Raises:
        ValueError: A missing value for ``channels != 3``, another count, a non-finite value or a
            std that is not positive.
    """
    if mean is None or std is None:
        if channels != 3:
            raise ValueError(f"the model has in_channels={channels}: give mean and std with "
                             f"{channels} values each, for pixel values in [0, 1] (the ImageNet "
                             "defaults are for RGB; e.g. 0.449 and 0.226 per channel, their "
                             "averages, for grey images)")
        mean = IMAGENET_MEAN if mean is None else mean
        std = IMAGENET_STD if std is None else std
    for name, values in (("mean", mean), ("std", std)):
        stats = torch.as_tensor(values, dtype=torch.float32)
        if stats.shape != (channels,) or not torch.isfinite(stats).all():
            raise ValueError(f"{name} must be {channels} finite numbers (one per input channel, "
                             f"for pixel values in [0, 1]), got {values!r}")
    if any(v <= 0 for v in std):
        raise ValueError(f"std must be positive, got {tuple(std)!r}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


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


@dataclass
class ForwardTiming:
    """Time spent in the model forward, summed over batches, and the images it computed:
    :meth:`FeatureExtractor.iter_files` adds to it. The clock runs from the normalised batch to the
    finished output maps (on CUDA the device is synchronised before it stops), so it leaves out
    reading, decoding, normalising and anything the caller does with the features.

    Args:
        seconds: Seconds in the forward so far.
        images: Images computed so far.
        batches: Forward passes so far.
    """

    seconds: float = 0.0
    images: int = 0
    batches: int = 0

    @property
    def images_per_second(self) -> float:
        """Images per second of forward time (0 before any image)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _LoadedBatch:
    """One batch as the loader prepared it: the indices of the files it decoded, their normalised
    pixels (``None`` when none could be read) and the errors of the others, in file order."""

    kept: List[int]
    inputs: Optional[torch.Tensor]
    errors: List[ImageReadError] = field(default_factory=list)


class FeatureExtractor:
    """Multi-scale features from a SwinV2 backbone, as ``{stage name: tensor}``.

    Args:
        model: A ``Swinv2Backbone`` or ``SwinBackbone``, a config dict of its keyword arguments
            (``type='SwinBackbone'`` for V1), or ``None`` to take the
            architecture from ``checkpoint`` (see
            :func:`~swinv2_backbone.checkpoint.build.build_backbone`). A given model is moved to
            ``device``/``dtype`` and put in eval mode in place.
        checkpoint: Any supported checkpoint file or HF directory, or ``None``.
        out_features: Stage names to return (``'stem'``, ``'stage1'``...``'stage4'``); default: the
            model's outputs (all four stages for a config).
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        dtype: ``'fp32'``, ``'bf16'``, ``'fp16'`` or the torch dtype; weights and inputs are cast to it
            (normalisation happens in fp32 first), features come back in it.
        mean: Per-channel mean for pixel values in [0, 1], one per input channel (ImageNet's
            by default for RGB; required for other channel counts, see :func:`channel_stats`).
        std: Per-channel std for pixel values in [0, 1], likewise.
    """

    def __init__(
        self,
        model: ModelOrCfg = None,
        checkpoint: Optional[PathLike] = None,
        out_features: Optional[Sequence[str]] = None,
        device: Union[str, torch.device] = "cpu",
        dtype: Union[str, torch.dtype] = torch.float32,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        self.device = parse_device(device)
        self.dtype = parse_dtype(dtype)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        backbone = build_backbone(model, checkpoint, out_features)
        #: Input channels of the model: every image is read with them (see :mod:`.pixels`).
        self.in_channels = backbone.in_channels
        self.mean, self.std = channel_stats(mean, std, self.in_channels)
        self._mean_nchw = torch.tensor(self.mean).view(1, -1, 1, 1).to(self.device)
        self._std_nchw = torch.tensor(self.std).view(1, -1, 1, 1).to(self.device)
        self.out_features = self._requested_outputs(backbone, out_features)
        self.model = backbone.to(device=self.device, dtype=self.dtype).eval()
        self.forward: Callable[[torch.Tensor], Sequence[torch.Tensor]] = self.model
        strides = dict(zip(backbone.out_features, backbone.strides))
        channels = dict(zip(backbone.out_features, backbone.out_channels))
        self.strides = {name: strides[name] for name in self.out_features}
        self.channels = {name: channels[name] for name in self.out_features}

    @staticmethod
    def _requested_outputs(backbone: SwinBackboneBase,
                           out_features: Optional[Sequence[str]]) -> Tuple[str, ...]:
        """The requested outputs (all by default) in the model's order."""
        if out_features is None:
            return tuple(backbone.out_features)
        return tuple(n for n in backbone.out_features if n in out_features)

    def __repr__(self) -> str:
        return (f"FeatureExtractor(out_features={self.out_features}, strides={self.strides}, "
                f"device={self.device}, dtype={dtype_name(self.dtype)})")

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` checked, scaled to [0, 1] and normalised in fp32 on ``device``, then cast to
        ``dtype`` (normalising in a low-precision dtype would round the inputs twice)."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor (N, {self.in_channels}, H, W), got "
                            f"{type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be (N, {self.in_channels}, H, W) (the model's "
                             f"in_channels), got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            x = images.to(self.device, torch.float32) / 255.0
        elif images.is_floating_point():
            x = images.to(self.device, torch.float32)
        else:
            raise TypeError(f"images must be uint8 (0-255) or floating point (0-1), got {images.dtype}")
        return ((x - self._mean_nchw) / self._std_nchw).to(self.dtype)

    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Features of a batch.

        Args:
            images: ``(N, in_channels, H, W)``, ``uint8`` in 0-255 or floating point in 0-1
                (normalised here with ``mean``/``std``).

        Returns:
            Stage name -> ``(N, C, ceil(H / stride), ceil(W / stride))`` on ``device`` in ``dtype``.
        """
        return self._forward(self._normalize(images))

    def run_with(self, forward: Callable[[torch.Tensor], Sequence[torch.Tensor]]) -> None:
        """Compute batches with ``forward`` instead of the model: an exported copy of
        :attr:`model` in another runtime (:func:`swinv2_backbone.deploy.runtime_forward`). It takes
        a normalised batch and returns the model's outputs, in its order.

        Args:
            forward: The model's outputs of a batch.
        """
        self.forward = forward

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The requested maps of the model (or :meth:`run_with`'s forward) for a normalised batch."""
        with torch.inference_mode():
            outs = self.forward(x)
        named = dict(zip(self.model.out_features, outs))
        return {name: named[name] for name in self.out_features}

    def _timed_forward(self, x: torch.Tensor, timing: Optional[ForwardTiming]) -> Dict[str, torch.Tensor]:
        """:meth:`_forward`, its time added to ``timing`` (the device synchronised first on CUDA,
        where the call returns before the work is done)."""
        if timing is None:
            return self._forward(x)
        start = time.perf_counter()
        maps = self._forward(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timing.seconds += time.perf_counter() - start
        timing.images += x.shape[0]
        timing.batches += 1
        return maps

    def padded_size(self, size: Size) -> Size:
        """``size`` rounded up to a multiple of the largest returned stride.

        Args:
            size: Model input size (rows, columns).
        """
        s = max(self.strides.values())
        return math.ceil(size[0] / s) * s, math.ceil(size[1] / s) * s

    def iter_files(
        self,
        paths: Sequence[PathLike],
        batch_size: int = 8,
        size: Optional[Size] = None,
        short_side: Optional[int] = None,
        on_error: Optional[Callable[[ImageReadError], None]] = None,
        max_pixels: Optional[int] = MAX_PIXELS,
        prefetch: int = 2,
        timing: Optional[ForwardTiming] = None,
    ) -> Iterator[ImageFeatures]:
        """Features of image files, batched by model input size, yielded as they are computed
        (images of one size together, in their order; sizes in order of first appearance).

        The image headers are read first (sizes decide the batches); a background thread then
        decodes, resizes and normalises up to ``prefetch`` batches ahead of the model. Errors of
        unreadable files are passed to ``on_error`` (or raised) in the calling thread, at the point
        where that file's batch is reached; any other exception of the thread is raised there too.
        Closing the iterator early stops the thread.

        Args:
            paths: Image files (see :func:`~swinv2_backbone.features.images.find_images` to expand
                folders and globs).
            batch_size: Most images per forward pass.
            size: Resize every image to ``(rows, columns)``; ``None`` keeps sizes.
            short_side: Resize keeping the aspect ratio so that the shorter side has this length.
            on_error: Called with the error of each file that cannot be read, which is then left
                out while the others go on; ``None`` raises the first error instead.
            max_pixels: Refuse images with more pixels (checked from the header); ``None``: no limit.
            prefetch: Batches prepared ahead of the model in a background thread (memory: that many
                batches of normalised pixels); 0 prepares each batch in the calling thread when it
                is needed. The features do not depend on it.
            timing: Adds the forward's time and images to it (see :class:`ForwardTiming`).

        Raises:
            ImageReadError: Without ``on_error``: a file is missing or cannot be decoded (raised
                before any compute for files whose header is unreadable).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        check_depth(prefetch)
        files = [Path(p) for p in paths]
        if not files:
            raise ValueError("no image files given")

        def report(err: ImageReadError) -> None:
            if on_error is None:
                raise err
            on_error(err)

        originals: Dict[int, Size] = {}
        for i, p in enumerate(files):
            try:
                originals[i] = pixels_size(p, self.in_channels, max_pixels)
            except ImageReadError as err:
                report(err)
        readable = list(originals)
        inputs = {i: target_size(originals[i], size=size, short_side=short_side) for i in readable}

        def load(batch: List[int]) -> _LoadedBatch:
            """Decode, resize and normalise one batch (in the loader thread)."""
            loaded = _LoadedBatch(kept=[], inputs=None)
            pixels = []
            for k in batch:
                i = readable[k]
                try:
                    pixels.append(read_pixels(files[i], self.in_channels, inputs[i],
                                              max_pixels=max_pixels))
                    loaded.kept.append(i)
                except ImageReadError as err:
                    loaded.errors.append(err)
            if pixels:
                if len({p.dtype for p in pixels}) > 1:  # arrays of floats beside 8-bit images
                    pixels = [as_float(p) for p in pixels]
                loaded.inputs = self._normalize(torch.stack(pixels))
            return loaded

        plan = batches_by_size([inputs[i] for i in readable], batch_size)
        with Prefetcher((load(batch) for batch in plan), prefetch, name="swinv2-image-loader") as batches:
            for loaded in batches:
                for err in loaded.errors:
                    report(err)
                if loaded.inputs is None:
                    continue
                maps = self._timed_forward(loaded.inputs, timing)
                for row, i in enumerate(loaded.kept):
                    yield ImageFeatures(
                        index=i, path=files[i],
                        features={n: m[row].to("cpu", copy=True) for n, m in maps.items()},
                        original_size=originals[i], input_size=inputs[i],
                        padded_size=self.padded_size(inputs[i]))

    def extract_files(
        self,
        paths: Sequence[PathLike],
        batch_size: int = 8,
        size: Optional[Size] = None,
        short_side: Optional[int] = None,
        prefetch: int = 2,
    ) -> List[ImageFeatures]:
        """:meth:`iter_files` collected in the order of ``paths`` (all features held in memory).

        Args:
            paths: Image files.
            batch_size: Most images per forward pass.
            size: Resize every image to ``(rows, columns)``.
            short_side: Resize keeping the aspect ratio, shorter side to this length.
            prefetch: Batches decoded ahead of the model in a background thread (0: none).
        """
        results = list(self.iter_files(paths, batch_size=batch_size, size=size, short_side=short_side,
                                       prefetch=prefetch))
        return sorted(results, key=lambda r: r.index)
