"""Deterministic toy dataset of coloured shapes for the end-to-end demo and the pipeline tests.

Each scene is a small RGB image with a few non-overlapping circles, squares and triangles in
saturated colours on a noisy, greyish gradient background. Each class has its own hue family
(:data:`CLASS_HUES`: reds, greens, blues, each 100 of the 360 hue degrees wide, saturation and brightness random), so
colour and geometry both tell the classes apart. With geometry alone the compact UPerNet of the demo
stayed near 0.55 mIoU after 1200 iterations (it has to classify every pixel of a uniformly
coloured shape by the shape's outline), far beyond the demo's 15-minute budget; Mask R-CNN learns
the geometric task within budget. The same scenes are written twice:

- detection / instance segmentation: COCO json (``annotations/instances_{split}.json``) with one
  polygon per instance, category ids 1..3 in :data:`CLASSES` order;
- semantic segmentation, ADE20K style: one single-channel PNG label map per image
  (``labels/{split}/*.png``): 0 is the background, ``k`` the k-th shape class (no ignored pixels, so
  load it with ``reduce_zero_label=False`` and the classes of :data:`SEG_CLASSES`).

Images are ``images/{split}/{index:06d}.png``. Every image is drawn from its own random generator
seeded by ``(seed, split, index)``, so a dataset is reproducible bit for bit and a split does not
change when the other one grows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

#: Instance classes (COCO category ids 1, 2, 3).
CLASSES: Tuple[str, ...] = ("circle", "square", "triangle")
#: Semantic classes of the label maps (label value = index).
SEG_CLASSES: Tuple[str, ...] = ("background",) + CLASSES
#: Display colours of :data:`SEG_CLASSES` (RGB).
SEG_PALETTE: Tuple[Tuple[int, int, int], ...] = ((0, 0, 0), (230, 60, 60), (60, 200, 60),
                                                 (60, 100, 230))
SPLITS: Tuple[str, ...] = ("train", "val")
#: Centre of each class's hue family (OpenCV hue units, 0..180 = 0..360 degrees); hues are drawn
#: within +-:data:`HUE_SPREAD` of it (red wraps around 0).
CLASS_HUES: Tuple[float, ...] = (0.0, 60.0, 120.0)
HUE_SPREAD = 25.0

_CIRCLE_VERTICES = 32


@dataclass(frozen=True)
class Instance:
    """One shape of a scene.

    Args:
        label: Index into :data:`CLASSES`.
        polygon: ``(K, 2)`` float ``(x, y)`` vertices in pixels, counter-clockwise or clockwise.
    """

    label: int
    polygon: np.ndarray

    def bbox(self) -> List[float]:
        """COCO ``[x, y, w, h]`` of the polygon's extent."""
        x0, y0 = self.polygon.min(axis=0)
        x1, y1 = self.polygon.max(axis=0)
        return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]

    def area(self) -> float:
        """Polygon area (shoelace formula), the ``area`` COCO stores for polygons."""
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass(frozen=True)
class ToyDataset:
    """Paths and sizes of a generated toy dataset.

    Args:
        root: Dataset root directory.
        image_size: Side of the square images in pixels.
        num_images: Images per split, e.g. ``{'train': 240, 'val': 60}``.
    """

    root: Path
    image_size: int
    num_images: Dict[str, int]

    def image_dir(self, split: str) -> Path:
        """Directory of the split's images."""
        return self.root / "images" / split

    def label_dir(self, split: str) -> Path:
        """Directory of the split's semantic label maps."""
        return self.root / "labels" / split

    def coco_json(self, split: str) -> Path:
        """COCO instance annotations of the split."""
        return self.root / "annotations" / f"instances_{split}.json"


def shape_polygon(label: int, center: Tuple[float, float], radius: float, angle: float
                  ) -> np.ndarray:
    """Vertices of a shape of class ``label`` (index into :data:`CLASSES`).

    Args:
        label: 0 circle, 1 square, 2 triangle (equilateral).
        center: ``(x, y)`` centre in pixels.
        radius: Circumradius in pixels.
        angle: Rotation in radians (ignored by the circle, which is rotation invariant).

    Returns:
        ``(K, 2)`` float64 array of ``(x, y)`` vertices.
    """
    if label not in range(len(CLASSES)):
        raise ValueError(f"label must be in 0..{len(CLASSES) - 1} ({CLASSES}), got {label!r}")
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    vertices = {0: _CIRCLE_VERTICES, 1: 4, 2: 3}[label]
    theta = angle + 2.0 * np.pi * np.arange(vertices) / vertices
    return np.stack([center[0] + radius * np.cos(theta), center[1] + radius * np.sin(theta)], axis=1)


def _overlaps(box: np.ndarray, boxes: Sequence[np.ndarray], margin: float) -> bool:
    for other in boxes:
        if (box[0] < other[2] + margin and other[0] < box[2] + margin
                and box[1] < other[3] + margin and other[1] < box[3] + margin):
            return True
    return False


def sample_instances(rng: np.random.Generator, size: int, max_instances: int) -> List[Instance]:
    """Place 1..``max_instances`` non-overlapping shapes (at least 2 px apart) inside a
    ``size x size`` image; placements that do not fit after a few tries are dropped."""
    count = int(rng.integers(1, max_instances + 1))
    instances: List[Instance] = []
    boxes: List[np.ndarray] = []
    for _ in range(count):
        for _attempt in range(20):
            radius = float(rng.uniform(0.06, 0.14) * size)
            center = (float(rng.uniform(radius, size - radius)),
                      float(rng.uniform(radius, size - radius)))
            label = int(rng.integers(len(CLASSES)))
            # vertices rounded as the COCO json stores them, so the image, the label map and
            # COCO's own rasterisation of the json polygon agree pixel for pixel
            polygon = np.round(shape_polygon(label, center, radius,
                                             float(rng.uniform(0, 2 * np.pi))), 3)
            box = np.concatenate([polygon.min(axis=0), polygon.max(axis=0)])
            if not _overlaps(box, boxes, margin=2.0):
                instances.append(Instance(label, polygon))
                boxes.append(box)
                break
    return instances


def polygon_mask(polygon: np.ndarray, size: int) -> np.ndarray:
    """``(size, size)`` bool mask of a polygon, rasterised by pycocotools exactly as COCO
    evaluation rasterises the ground-truth polygons (so images, label maps and COCO masks agree).

    Args:
        polygon: ``(K, 2)`` ``(x, y)`` vertices in pixels.
        size: Image side in pixels.
    """
    rle = mask_utils.frPyObjects([polygon.reshape(-1).tolist()], size, size)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _shape_color(rng: np.random.Generator, label: int) -> np.ndarray:
    """A saturated RGB colour of class ``label``'s hue family (HSV saturation and value in [0.6, 1])."""
    hue = (CLASS_HUES[label] + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 180.0
    hsv = np.array([[[hue, rng.uniform(0.6, 1.0) * 255,
                      rng.uniform(0.6, 1.0) * 255]]], np.float32)
    return cv2.cvtColor(np.round(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def render_scene(rng: np.random.Generator, size: int, instances: Sequence[Instance]
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Draw a scene.

    Args:
        rng: Random generator for colours and noise.
        size: Image side in pixels.
        instances: Shapes to draw.

    Returns:
        ``(image, label_map)``: ``(size, size, 3)`` uint8 RGB image and ``(size, size)`` uint8 map
        with 0 for background and ``label + 1`` inside each shape.
    """
    # a vertical ramp between two greyish colours: grey level plus a small tint per channel
    start, end = rng.uniform(30, 220, size=(2, 1)) + rng.uniform(-15, 15, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    background = np.broadcast_to(start + (end - start) * ramp, (size, size, 3))
    image = np.ascontiguousarray(background)
    labels = np.zeros((size, size), np.uint8)
    for inst in instances:
        mask = polygon_mask(inst.polygon, size)
        image[mask] = _shape_color(rng, inst.label)
        labels[mask] = inst.label + 1
    image = image + rng.normal(0.0, 8.0, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


def _coco_annotations(instances: Sequence[Instance], image_id: int, first_id: int) -> List[dict]:
    return [
        dict(id=first_id + k, image_id=image_id, category_id=inst.label + 1,
             bbox=[round(v, 3) for v in inst.bbox()], area=round(inst.area(), 3), iscrowd=0,
             segmentation=[[round(float(v), 3) for v in inst.polygon.reshape(-1)]])
        for k, inst in enumerate(instances)
    ]


def write_toy_dataset(
    root: "str | Path",
    num_train: int = 240,
    num_val: int = 60,
    image_size: int = 128,
    max_instances: int = 4,
    seed: int = 0,
) -> ToyDataset:
    """Generate the toy dataset under ``root`` (existing files of the same names are overwritten).

    Args:
        root: Output directory (created).
        num_train: Training images.
        num_val: Validation images.
        image_size: Side of the square images in pixels (>= 32).
        max_instances: Most shapes per image (>= 1); each image has 1..max_instances.
        seed: Seed of the whole dataset.

    Returns:
        The :class:`ToyDataset` describing what was written.
    """
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1),
                             ("image_size", image_size, 32), ("max_instances", max_instances, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    dataset = ToyDataset(Path(root), image_size, {"train": num_train, "val": num_val})
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    for split_id, split in enumerate(SPLITS):
        for directory in (dataset.image_dir(split), dataset.label_dir(split),
                          dataset.coco_json(split).parent):
            directory.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(dataset.num_images[split]):
            rng = np.random.default_rng([seed, split_id, index])
            instances = sample_instances(rng, image_size, max_instances)
            image, labels = render_scene(rng, image_size, instances)
            name = f"{index:06d}.png"
            cv2.imwrite(str(dataset.image_dir(split) / name), image[:, :, ::-1])
            cv2.imwrite(str(dataset.label_dir(split) / name), labels)
            images.append(dict(id=index + 1, file_name=name, width=image_size, height=image_size))
            annotations += _coco_annotations(instances, index + 1, len(annotations) + 1)
        coco = dict(images=images, annotations=annotations, categories=categories)
        dataset.coco_json(split).write_text(json.dumps(coco))
    return dataset
