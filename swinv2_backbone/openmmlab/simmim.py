"""SimMIM pre-training through mmengine: the model (``type='SwinSimMIM'`` in the root ``MODELS``)
and the data transforms that make its masks and batches (``SimMIMMaskGenerator``,
``PackSimMIMInputs`` in the root ``TRANSFORMS``), the held-out loss for ``tools/test.py``
(``SimMIMReconstructionMetric``) and the image-folder dataset. The numerics are those of
:class:`swinv2_backbone.models.SimMIM`; this module adds mmengine's ``BaseModel`` contract (a data
preprocessor for normalisation, ``forward(inputs, data_samples, mode)``)."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS, TRANSFORMS

from ..features.images import find_images

from ..models.weights import load_registered_weights, pretrained_init_cfg
from ..models.simmim import SimMIM, reconstruct, simmim_loss, simmim_mask

#: ImageNet mean and std in RGB, 0-255 (the official SimMIM normalisation).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MODES = ("loss", "predict", "tensor")


def _stack_masks(data_samples: Union[torch.Tensor, Sequence[torch.Tensor], None]) -> torch.Tensor:
    if data_samples is None:
        raise ValueError("SwinSimMIM needs the patch masks as data_samples (one (rows, cols) "
                         "mask per image; the SimMIMMaskGenerator + PackSimMIMInputs transforms "
                         "make them)")
    return data_samples if isinstance(data_samples, torch.Tensor) else torch.stack(list(data_samples))


class SwinSimMIM(BaseModel):
    """SimMIM pre-training of a :class:`~swinv2_backbone.Swinv2Backbone` for mmengine's runner.
    Parameters and their keys are those of :class:`swinv2_backbone.models.SimMIM`
    (``backbone.*``, ``decoder.0.*``).

    ``forward(inputs, data_samples, mode)``: ``inputs`` are the normalised ``(N, C, H, W)`` images
    from the data preprocessor, ``data_samples`` their patch masks (a ``(N, rows, cols)`` tensor or
    one ``(rows, cols)`` mask per image, True/1 = masked). ``mode='loss'`` returns
    ``{'loss': L1 on the masked pixels}``, ``'tensor'`` the reconstructions ``(N, C, H, W)`` (in
    normalised units) and ``'predict'`` a list of per-image dicts with ``reconstruction`` and
    ``mask``.

    Args:
        backbone: :class:`~swinv2_backbone.Swinv2Backbone` keyword arguments (``use_mask_token``,
            ``out_norm`` and the last stage as the only output are the defaults); with
            ``type='SwinBackbone'`` those of the Swin V1 backbone.
        norm_target_window: Normalise the loss's target over this odd window (official SwinV2
            pre-training: 47); ``None`` (default): the normalised images themselves.
        data_preprocessor: mmengine data preprocessor config; default ``ImgDataPreprocessor``
            with the ImageNet mean and std and BGR-to-RGB (images as ``LoadImageFromFile`` reads
            them).
        pretrained: Checkpoint path loaded whole at :meth:`init_weights` (encoder, mask token and
            decoder, strictly: to continue pre-training), from this model's training checkpoints,
            HF ``Swinv2ForMaskedImageModeling`` directories or official SimMIM files.
        init_cfg: mmengine initialisation config: ``dict(type='Pretrained', checkpoint=PATH)``
            loads as ``pretrained`` does; ``backbone.init_cfg`` loads backbone weights alone.
    """

    def __init__(self, backbone: Dict[str, Any], norm_target_window: Optional[int] = None,
                 data_preprocessor: Optional[Dict[str, Any]] = None,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type="ImgDataPreprocessor", mean=IMAGENET_MEAN,
                                     std=IMAGENET_STD, bgr_to_rgb=True)
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=pretrained_init_cfg(pretrained, init_cfg))
        # the pure-torch model validates the arguments and builds the parts; its modules become
        # this model's, under the same names
        core = SimMIM(dict(backbone), norm_target_window)
        self.backbone = core.backbone
        self.decoder = core.decoder
        self.patch_size = core.patch_size
        self.norm_target_window = core.norm_target_window

    def init_weights(self) -> None:
        """Load the checkpoint named by ``init_cfg``/``pretrained`` through the checkpoint adapters
        (mmengine's own ``Pretrained`` loads non-strictly), else mmengine's initialisation."""
        if not load_registered_weights(self):
            super().init_weights()

    def forward(self, inputs: torch.Tensor,
                data_samples: Union[torch.Tensor, Sequence[torch.Tensor], None] = None,
                mode: str = "tensor") -> Union[Dict[str, torch.Tensor], torch.Tensor, List[dict]]:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        mask = _stack_masks(data_samples).to(inputs.device)
        rec = reconstruct(self.backbone, self.decoder, inputs, mask)
        if mode == "loss":
            return dict(loss=simmim_loss(inputs, rec, mask, self.patch_size,
                                         self.norm_target_window))
        if mode == "tensor":
            return rec
        # one loss per image (the batch's loss pools the masked pixels of all its images)
        return [dict(reconstruction=r, mask=m,
                     loss=simmim_loss(x[None], r[None], m[None], self.patch_size,
                                      self.norm_target_window))
                for x, r, m in zip(inputs, rec, mask)]


# The transforms are plain callables (what mmengine's ``Compose`` calls), so that this module needs
# mmengine alone, not mmcv.
#: The former name (it serves both versions), kept for code that uses it.
Swinv2SimMIM = SwinSimMIM


class SimMIMMaskGenerator:
    """Adds ``results['mask']``: the SimMIM random block mask
    (:func:`swinv2_backbone.models.simmim_mask`) for the image in ``results['img']`` (``H x W`` must
    be multiples of ``mask_patch_size``: crop or resize before this transform). Drawn from torch's
    global generator, which mmengine's ``randomness`` seed and its dataloader worker seeding set,
    so seeded runs repeat. With ``seed`` (for evaluation) each image's mask is instead fixed by the
    seed and the image's index in its dataset, whatever the order, batch or worker it comes in.

    Args:
        mask_patch_size: Side of a masked block in pixels.
        model_patch_size: The backbone's patch size.
        mask_ratio: Fraction of blocks to mask.
        seed: ``None`` (training: the global generator), or the seed of per-image masks; then
            ``results['sample_idx']`` (set by mmengine datasets) must exist.
    """

    def __init__(self, mask_patch_size: int = 32, model_patch_size: int = 4,
                 mask_ratio: float = 0.6, seed: Optional[int] = None) -> None:
        # validates the arguments now rather than at the first image
        simmim_mask(mask_patch_size, mask_patch_size, model_patch_size, mask_ratio,
                    torch.Generator())
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
        self.mask_patch_size = mask_patch_size
        self.model_patch_size = model_patch_size
        self.mask_ratio = mask_ratio
        self.seed = seed

    def _generator(self, results: Dict[str, Any]) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        if "sample_idx" not in results:
            raise KeyError("SimMIMMaskGenerator(seed=...) needs results['sample_idx'] (the image's "
                           "index, which mmengine datasets add)")
        # torch's CPU generator keeps 32 bits of a seed: mix (seed, index) into 32 bits
        mixed = np.random.SeedSequence([self.seed, int(results["sample_idx"])]).generate_state(1)
        return torch.Generator().manual_seed(int(mixed[0]))

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        h, w = results["img"].shape[:2]
        results["mask"] = simmim_mask((h, w), self.mask_patch_size, self.model_patch_size,
                                      self.mask_ratio, self._generator(results))
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mask_patch_size={self.mask_patch_size}, "
                f"model_patch_size={self.model_patch_size}, mask_ratio={self.mask_ratio}, "
                f"seed={self.seed})")


class SimMIMReconstructionMetric(BaseMetric):
    """The SimMIM loss of held-out images (``type='SimMIMReconstructionMetric'`` in the root
    ``METRICS``), for ``val_evaluator`` / ``test_evaluator`` of a SimMIM config: the mean over images
    of each image's masked-pixel L1 loss (:func:`~swinv2_backbone.models.simmim_loss`, on the
    model's own target), reported as ``reconstruction_l1``. Give the test pipeline's
    :class:`SimMIMMaskGenerator` a ``seed`` so that every evaluation masks the same blocks.

    Args:
        collect_device: ``'cpu'`` or ``'gpu'``, where results are gathered across processes.
        prefix: Prefix of the metric's name in the logs.
    """

    default_prefix = "simmim"

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        self.results.extend(float(sample["loss"]) for sample in data_samples)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        return dict(reconstruction_l1=float(np.mean(results)))


class SimMIMRandomResizedCrop:
    """Crops a random region of ``scale`` times the image's area and aspect ratio in ``ratio``
    (log-uniform), resized bilinearly (antialiased) to ``size``; the whole image, resized, when ten
    draws do not fit. Drawn from torch's global generator (seeded by mmengine).

    Args:
        size: Output ``(H, W)`` or one int for a square.
        scale: Range of the crop's area relative to the image's.
        ratio: Range of the crop's width / height.
    """

    def __init__(self, size: Union[int, Tuple[int, int]], scale: Tuple[float, float] = (0.67, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], "
                             f"got scale {scale}, ratio {ratio}")
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def _region(self, h: int, w: int) -> Tuple[int, int, int, int]:
        """``top, left, height, width`` of the crop in an ``h x w`` image."""
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = h * w * float(torch.empty(1).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio)))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,)))
                left = int(torch.randint(0, w - cw + 1, (1,)))
                return top, left, ch, cw
        return 0, 0, h, w

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        img = np.asarray(results["img"])
        top, left, ch, cw = self._region(*img.shape[:2])
        crop = torch.from_numpy(np.ascontiguousarray(img[top:top + ch, left:left + cw]))
        crop = crop.reshape(ch, cw, -1).permute(2, 0, 1)[None].float()
        resized = F.interpolate(crop, size=self.size, mode="bilinear", align_corners=False,
                                antialias=True)
        out = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        results["img"] = out if img.ndim == 3 else out[..., 0]
        results["img_shape"] = self.size
        return results


class PackSimMIMInputs:
    """Packs an image and its mask for :class:`SwinSimMIM`: ``inputs`` the ``(C, H, W)`` image
    tensor (``results['img']``, ``H x W`` or ``H x W x C``, as loaded), ``data_samples`` the mask
    from :class:`SimMIMMaskGenerator`."""

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        img = np.asarray(results["img"])
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return dict(inputs=inputs, data_samples=torch.as_tensor(results["mask"]))


class UnlabeledImageFolder(BaseDataset):
    """The image files of folders (not recursive) or glob patterns (``**`` recurses), sorted, as
    ``dict(img_path=...)`` samples for self-supervised pre-training.

    Args:
        data_root: Folder (or pattern) of images; relative ``data_prefix['img_path']`` joins it.
        data_prefix: ``dict(img_path=...)``, a sub-folder or pattern (default: ``data_root``).
        pipeline: Transforms applied to each sample.
        **kwargs: Other :class:`mmengine.dataset.BaseDataset` arguments (``indices``,
            ``serialize_data``, ``lazy_init``, ``max_refetch``).
    """

    def __init__(self, data_root: str, data_prefix: Optional[Dict[str, str]] = None,
                 pipeline: Sequence[Any] = (), **kwargs: Any) -> None:
        super().__init__(data_root=data_root, data_prefix=dict(data_prefix or dict(img_path="")),
                         pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> List[Dict[str, Any]]:
        folder = self.data_prefix.get("img_path") or self.data_root
        return [dict(img_path=os.fspath(p)) for p in find_images([folder])]


def register() -> None:
    """Idempotently register the model, the transforms, the metric and the dataset in mmengine's
    root registries."""
    for name in ("SwinSimMIM", "Swinv2SimMIM"):  # and the former name, which configs may use
        if MODELS.get(name) is not SwinSimMIM:
            MODELS.register_module(name=name, module=SwinSimMIM, force=True)
    for transform in (SimMIMRandomResizedCrop, SimMIMMaskGenerator, PackSimMIMInputs):
        if TRANSFORMS.get(transform.__name__) is not transform:
            TRANSFORMS.register_module(name=transform.__name__, module=transform, force=True)
    if METRICS.get("SimMIMReconstructionMetric") is not SimMIMReconstructionMetric:
        METRICS.register_module(name="SimMIMReconstructionMetric",
                                module=SimMIMReconstructionMetric, force=True)
    if DATASETS.get("UnlabeledImageFolder") is not UnlabeledImageFolder:
        DATASETS.register_module(name="UnlabeledImageFolder", module=UnlabeledImageFolder,
                                 force=True)
