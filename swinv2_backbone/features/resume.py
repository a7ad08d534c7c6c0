"""An extraction run's output folder, resumable: each image's outputs (PCA pictures, then its
``.safetensors``) are written in an order that makes the features file the mark of a finished image,
so a rerun computes only the images whose outputs are missing, incomplete or were written with
other settings (:func:`pending`).

Used by ``tools/extract_features.py``; a run killed at any moment leaves complete files and
temporary ones, which :func:`prepare_output_dir` removes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..checkpoint.atomic import remove_partial_files
from .extractor import FeatureExtractor, ImageFeatures, dtype_name
from .images import ImageReadError, Size, target_size
from .pixels import pixels_size
from .pictures import pca_rgb, save_png, upsample_to_image
from .storage import is_complete, save_features


@dataclass(frozen=True)
class OutputSettings:
    """Where and how a run writes each image's outputs, and what a rerun compares.

    Args:
        out_dir: The output folder.
        pca: Also write ``<stem>_<stage>_pca.png`` per stage.
        size: Every image resized to this (rows, columns), or ``None``.
        short_side: Images resized keeping the aspect ratio to this shorter side, or ``None``.
        max_pixels: Images with more pixels are refused (checked before decoding).
    """

    out_dir: Path
    pca: bool = False
    size: Optional[Size] = None
    short_side: Optional[int] = None
    max_pixels: Optional[int] = None

    def features_file(self, image: Path) -> Path:
        """``<out_dir>/<stem>.safetensors``."""
        return self.out_dir / f"{image.stem}.safetensors"

    def pictures(self, image: Path, stages: Sequence[str]) -> List[Path]:
        """The PCA pictures of ``image`` (none without :attr:`pca`)."""
        return [self.out_dir / f"{image.stem}_{n}_pca.png" for n in stages] if self.pca else []


def stem_clashes(paths: Sequence[Path]) -> Optional[str]:
    """An error text if two inputs would write the same output files, else ``None``.

    Args:
        paths: The input images.
    """
    owner: Dict[str, Path] = {}
    for p in paths:
        if p.stem in owner:
            return (f"inputs {str(owner[p.stem])!r} and {str(p)!r} would both write "
                    f"{p.stem}.safetensors; rename one or run them separately")
        owner[p.stem] = p
    return None


def prepare_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and remove the temporary files a killed run left there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out_dir)


def write_outputs(result: ImageFeatures, extractor: FeatureExtractor,
                  settings: OutputSettings) -> None:
    """Write one image's PCA pictures (with :attr:`OutputSettings.pca`) and then its
    ``.safetensors``, each crash-safely: the features file, written last, marks the image done.

    Args:
        result: The image's features.
        extractor: The extractor that computed them.
        settings: Where and what to write.
    """
    pictures = settings.pictures(result.path, list(result.features))
    for (name, feature), picture_path in zip(result.features.items(), pictures):
        picture = upsample_to_image(pca_rgb(feature), extractor.strides[name], result.input_size,
                                    result.original_size)
        save_png(picture, picture_path)
    save_features(result, extractor, settings.features_file(result.path))


def already_done(image: Path, extractor: FeatureExtractor, settings: OutputSettings) -> bool:
    """Whether a previous run wrote ``image``'s outputs completely with these settings (same
    source, stages, checkpoint, dtype, normalisation and input size).

    Args:
        image: The input image.
        extractor: This run's extractor.
        settings: This run's output settings.
    """
    features = settings.features_file(image)
    if not features.is_file():
        return False  # the common case of a first run: no need to read the image's header
    try:
        original = pixels_size(image, extractor.in_channels, settings.max_pixels)
    except ImageReadError:
        return False  # processed (and reported) with the others
    expected = dict(source=str(image), stages=list(extractor.out_features),
                    checkpoint=extractor.checkpoint, dtype=dtype_name(extractor.dtype),
                    mean=list(extractor.mean), std=list(extractor.std),
                    input_size=list(target_size(original, size=settings.size,
                                                short_side=settings.short_side)))
    return is_complete(features, expected) and all(
        p.is_file() for p in settings.pictures(image, extractor.out_features))


def pending(images: Sequence[Path], extractor: FeatureExtractor, settings: OutputSettings,
            overwrite: bool = False) -> List[Path]:
    """The images a run has to compute: all with ``overwrite``, else those not
    :func:`already_done`.

    Args:
        images: The run's input images.
        extractor: This run's extractor.
        settings: This run's output settings.
        overwrite: Recompute every image.
    """
    if overwrite:
        return list(images)
    return [p for p in images if not already_done(p, extractor, settings)]
