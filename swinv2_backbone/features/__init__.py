"""Feature extraction for downstream heads: multi-scale SwinV2 features of tensors or image files.

* :mod:`.extractor`: :class:`FeatureExtractor` (normalisation, device, dtype, files batched by size,
  decoded ahead of the model), :class:`ImageFeatures`, one image's result, and
  :class:`ForwardTiming`, the time of the model forward alone;
* :mod:`.background`: a bounded background thread before the model (:class:`Prefetcher`) and
  after it (:class:`BackgroundConsumer`), errors re-raised in the caller, and the depth
  ``--prefetch auto`` gives them (:func:`auto_depth`, from :func:`usable_cpus`);
* :mod:`.images`: finding image files, their EXIF-oriented sizes, decoding and batching by size;
* :mod:`.pixels`: any input (images, ``.npy``, multi-channel TIFF) as the pixels of a model with any
  number of input channels;
* :mod:`.pictures`: a feature map as a PCA-to-RGB picture at image resolution;
* :mod:`.storage`: one image's features with their geometry as ``.safetensors``;
* :mod:`.classify`: a classifier from a classification checkpoint, its preprocessing, top-k
  (``tools/classify.py``).

The model itself is built by :func:`swinv2_backbone.checkpoint.build.build_backbone` (re-exported
here for the callers of the former single module).
"""
from ..checkpoint.build import build_backbone
from .background import (AUTO_DEPTH, AutoDepth, BackgroundConsumer, Prefetcher, auto_depth,
                         usable_cpus)
from .extractor import (DTYPES, IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, ForwardTiming,
                        ImageFeatures, dtype_name, parse_device, parse_dtype)
from .images import (IMAGE_EXTENSIONS, MAX_PIXELS, ImageReadError, batches_by_size, each_image,
                     find_images, image_size, input_sizes, read_image,
                     target_size)
from .pictures import pca_rgb, save_png, upsample_to_image
from .pixels import pixels_size, read_pixels
from .storage import feature_metadata, is_complete, load_features, save_features

__all__ = [
    "AUTO_DEPTH",
    "AutoDepth",
    "DTYPES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "BackgroundConsumer",
    "FeatureExtractor",
    "ForwardTiming",
    "ImageFeatures",
    "ImageReadError",
    "Prefetcher",
    "auto_depth",
    "batches_by_size",
    "build_backbone",
    "dtype_name",
    "each_image",
    "feature_metadata",
    "find_images",
    "image_size",
    "input_sizes",
    "is_complete",
    "load_features",
    "parse_device",
    "parse_dtype",
    "pca_rgb",
    "pixels_size",
    "read_image",
    "read_pixels",
    "save_features",
    "save_png",
    "target_size",
    "upsample_to_image",
    "usable_cpus",
]
