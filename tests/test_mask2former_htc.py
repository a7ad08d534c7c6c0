"""mmdet Mask2Former (COCO panoptic / instance) and HTC configs with our backbones: each trains one
iteration and runs one test pass on a synthetic COCO-style batch packed by mmdet's own
``PackDetInputs``; the V1 Mask2Former optimizer gives every parameter mmdet's lr and weight decay; a
checkpoint of mmdet's own Mask2Former with mmdet's ``SwinTransformer`` loads into our config and
predicts what mmdet predicts."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from swinv2_backbone.testing import randomize_

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs" / "det").glob("*.py")
                 if p.name.startswith(("mask2former_", "htc_")))
MMDET_CONFIGS = Path(__import__("mmdet").__file__).parent / ".mim" / "configs"
#: The synthetic images' size and the fixed pad that replaces the configs' 1024x1024 large-scale
#: jitter pad (the batch augmentation is what the recipe trains at, not what the test checks).
SIZE = (96, 128)
PAD = (128, 128)


def _load(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None  # tests must not read the official checkpoints
    return cfg


def _coco_sample(cfg: Config, seed: int) -> dict:
    """One image with two thing instances (boxes, bitmap masks, labels), packed by mmdet's
    ``PackDetInputs`` as the configs' pipelines end; with a semantic map where the config reads
    one (its data preprocessor pads maps: panoptic Mask2Former, HTC's semantic branch), holding
    the things' labels, a stuff label (above the thing classes) and the ignore value 255."""
    from mmdet.registry import TRANSFORMS
    from mmdet.structures.mask import BitmapMasks

    gen = np.random.default_rng(seed)
    h, w = SIZE
    boxes = np.array([[8, 10, 60, 70], [50, 30, 120, 90]], dtype=np.float32)
    masks = np.zeros((2, h, w), dtype=np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        masks[i, y0:y1, x0:x1] = 1
    labels = np.array([0, 3], dtype=np.int64)
    seg = np.full((h, w), 255, dtype=np.uint8)
    seg[:, : w // 2] = cfg.model.get("panoptic_head", {}).get("num_things_classes", 80) + 1
    for i in range(2):
        seg[masks[i] == 1] = labels[i]
    results = dict(img=gen.integers(0, 256, (h, w, 3), dtype=np.uint8), img_shape=(h, w),
                   ori_shape=(h, w), scale_factor=(1.0, 1.0), img_id=seed, img_path=f"{seed}.jpg",
                   flip=False, flip_direction=None, gt_bboxes=boxes, gt_bboxes_labels=labels,
                   gt_ignore_flags=np.zeros(2, dtype=bool), gt_masks=BitmapMasks(masks, h, w))
    if cfg.model.data_preprocessor.get("pad_seg"):
        results["gt_seg_map"] = seg
    return TRANSFORMS.build(dict(type="PackDetInputs"))(results)


def _batch(cfg: Config, seed: int) -> dict:
    sample = _coco_sample(cfg, seed)
    return dict(inputs=[sample["inputs"]], data_samples=[sample["data_samples"]])


def _small_pad(cfg: Config) -> None:
    for augment in cfg.model.data_preprocessor.get("batch_augments") or []:
        assert augment.type == "BatchFixedSizePad" and tuple(augment.size) == (1024, 1024)
        augment.size = PAD


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_one_iteration_and_tests_one_batch(path):
    """One ``train_step`` through the config's data preprocessor (pads, masks and semantic maps
    included), its losses against the panoptic / instance / semantic ground truth, gradient
    clipping and the optimizer its wrapper constructor builds; every loss finite, and the first
    AdamW step moves a backbone weight by the backbone's lr and a head weight by the head's (the
    lr multiplier of Mask2Former's recipe is applied). Then one ``test_step`` in eval mode: the
    predictions the config's evaluators read (instances; panoptic map for panoptic configs)."""
    cfg = _load(path)
    init_default_scope(cfg.default_scope)
    _small_pad(cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)  # PyTorch's default init: one step needs no recipe init
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    backbone_w = model.backbone.layers[0].blocks[0].norm1.weight
    head = model.panoptic_head if "panoptic_head" in cfg.model else model.neck
    head_w = next(p for n, p in head.named_parameters() if n.endswith("weight"))
    before = backbone_w.detach().clone(), head_w.detach().clone()

    model.train()
    losses = model.train_step(_batch(cfg, seed=0), optim_wrapper)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    assert any(k.startswith(("loss_mask", "d0.loss_mask", "s0.loss_mask")) for k in losses)
    if "panoptic_head" not in cfg.model:
        assert "loss_semantic_seg" in losses  # HTC's semantic branch trained on the map
    # AdamW's first step moves each weight by lr * |g| / (|g| + eps): at most its lr, and more
    # than half of it wherever |g| > eps (clipped gradients of a large model are ~1e-7), plus
    # lr * weight_decay * |w| (< 2 % of lr for these weights).
    lr = cfg.optim_wrapper.optimizer.lr
    steps = [(w.detach() - b).abs().max().item() for w, b in zip((backbone_w, head_w), before)]
    if cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0:
        backbone_lr = lr * cfg.optim_wrapper.paramwise_cfg.get("backbone_lr_mult", 1.0)
        assert backbone_lr / 2 < steps[0] <= backbone_lr * 1.02  # a norm weight: no decay
    assert lr / 2 < steps[1] <= lr * 1.02

    model.eval()
    with torch.no_grad():
        result, = model.test_step(_batch(cfg, seed=1))
    pred = result.pred_instances
    assert pred.bboxes.shape[1] == 4 and torch.isfinite(pred.scores).all()
    assert pred.masks.shape[1:] == SIZE
    if cfg.model.get("test_cfg", {}).get("panoptic_on"):
        assert result.pred_panoptic_seg.sem_seg.shape == (1, *SIZE)


# ----------------------------------------------------------------------------- mmdet's own model
#: A small Swin for mmdet's Mask2Former (window 7; a shifted block in the last stage, whose map at
#: 112 px, 4x4, is smaller than one window; drop path off).
SMALL_SWIN = dict(embed_dims=32, depths=[1, 1, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                  drop_path_rate=0.0)
PANOPTIC = "mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py"


@pytest.fixture(scope="module")
def mmdet_mask2former() -> nn.Module:
    """mmdet's own Swin-T Mask2Former config with a smaller Swin, random weights."""
    cfg = Config.fromfile(str(MMDET_CONFIGS / "mask2former" / PANOPTIC))
    cfg.model.backbone.update(SMALL_SWIN, init_cfg=None)
    cfg.model.panoptic_head.in_channels = [32, 64, 128, 256]
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    return randomize_(model, seed=5).eval()


def _ours(checkpoint: str, small_map: str) -> nn.Module:
    cfg = _load(ROOT / "configs" / "det" / PANOPTIC)
    cfg.model.backbone.update(arch=None, small_map=small_map, **SMALL_SWIN,
                              init_cfg=dict(type="Pretrained", checkpoint=checkpoint))
    cfg.model.panoptic_head.in_channels = [32, 64, 128, 256]
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    model.init_weights()  # the backbone through this plugin's checkpoint adapters
    return model


def _image_batch(model: nn.Module, h: int, w: int) -> dict:
    from mmdet.structures import DetDataSample

    gen = torch.Generator().manual_seed(h * w)
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                         img_id=0))
    batch = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)],
                 data_samples=[sample])
    return model.data_preprocessor(batch, training=False)


def _outputs(model: nn.Module, data: dict) -> Tuple[List[torch.Tensor], tuple, object]:
    with torch.no_grad():
        feats = model.extract_feat(data["inputs"])
        logits = model.panoptic_head(feats, data["data_samples"])
        result = model.predict(data["inputs"], data["data_samples"])[0]
    return list(feats), logits, result


@pytest.fixture(scope="module")
def mmdet_checkpoint(mmdet_mask2former, tmp_path_factory) -> str:
    """``mmdet_mask2former`` saved as mmdet's runner saves it (``{'meta', 'state_dict'}``)."""
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint

    path = str(tmp_path_factory.mktemp("mmdet") / "mask2former_mmdet.pth")
    save_checkpoint(dict(meta=dict(mmdet_version="3.3.0", iter=368750),
                         state_dict=get_state_dict(mmdet_mask2former)), path)
    return path


@pytest.fixture(scope="module")
def ours_from_mmdet(mmdet_checkpoint) -> Dict[str, nn.Module]:
    """Our config with SwinBackbone loaded from ``mmdet_checkpoint``, per ``small_map`` rule
    (given explicitly: the backbone does not read the rule from the checkpoint)."""
    state = torch.load(mmdet_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    rest = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    models = {}
    for small_map in ("mmdet", "pad"):
        model = _ours(mmdet_checkpoint, small_map)
        missing, unexpected = model.load_state_dict(rest, strict=False)
        assert not unexpected
        assert set(missing) == {f"backbone.{k}" for k in model.backbone.state_dict()}
        models[small_map] = model.eval()
    return models


@pytest.mark.parametrize("size", [(112, 112), (100, 140)])
def test_mmdet_mask2former_checkpoint_predicts_as_mmdet(mmdet_mask2former, ours_from_mmdet, size):
    """mmdet's Mask2Former with its own SwinTransformer, saved as mmdet's runner saves it
    (``{'meta', 'state_dict'}``), into the same config with our SwinBackbone: the backbone loads
    through ``init_cfg`` (the adapter renames mmdet's Swin keys), everything else by name; the
    backbone features, the 9+1 decoder outputs (class and mask logits) and the panoptic and
    instance predictions equal mmdet's within 1e-4. ``small_map='mmdet'`` is set explicitly (at 112
    px stages 3 and 4 fit in one window, which mmdet still shifts); the default ``'pad'``
    differs."""
    theirs, ours = mmdet_mask2former, ours_from_mmdet["mmdet"]
    data = _image_batch(theirs, *size)
    want_feats, want_logits, want = _outputs(theirs, data)
    feats, logits, got = _outputs(ours, data)
    tol = dict(rtol=0.0, atol=1e-4)
    for f, g in zip(feats, want_feats):
        torch.testing.assert_close(f, g, **tol)
    assert len(logits[0]) == len(want_logits[0]) == 10  # before the decoder and after each layer
    for ours_level, mmdet_level in zip(logits, want_logits):  # class scores, mask logits
        for a, b in zip(ours_level, mmdet_level):
            torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(got.pred_instances.scores, want.pred_instances.scores, **tol)
    assert torch.equal(got.pred_instances.labels, want.pred_instances.labels)
    assert torch.equal(got.pred_instances.masks, want.pred_instances.masks)
    assert torch.equal(got.pred_panoptic_seg.sem_seg, want.pred_panoptic_seg.sem_seg)

    if size == (112, 112):
        with torch.no_grad():
            pad_feats = ours_from_mmdet["pad"].extract_feat(data["inputs"])
        assert (pad_feats[3] - want_feats[3]).abs().max() > 1e-2


@pytest.mark.parametrize("init_cfg", [None, "small_map from the checkpoint"])
def test_mmdet_checkpoint_loads_whole_as_tools_test_loads_it(mmdet_mask2former, mmdet_checkpoint,
                                                             init_cfg, caplog):
    """What ``tools/test.py CONFIG mmdet.pth`` does (mmengine's ``load_checkpoint`` of the whole
    model, no ``init_weights``): the backbone's keys in mmdet's layout go through this plugin's
    adapters (``STATE_DICT_ADAPTERS``), nothing is left missing or unexpected, and the model
    predicts what mmdet's does. With the default ``small_map='pad'`` a warning names the rule that
    reproduces mmdet (its features differ on maps of one window); a ``Pretrained`` ``init_cfg``
    with ``small_map='checkpoint'`` takes mmdet's rule instead."""
    from mmengine.logging import MMLogger
    from mmengine.runner.checkpoint import load_checkpoint

    cfg = _load(ROOT / "configs" / "det" / PANOPTIC)
    backbone_init = None if init_cfg is None else dict(
        type="Pretrained", checkpoint="never-read.pth", small_map="checkpoint")
    cfg.model.backbone.update(arch=None, **SMALL_SWIN, init_cfg=backbone_init)
    cfg.model.panoptic_head.in_channels = [32, 64, 128, 256]
    init_default_scope("mmdet")
    ours = MODELS.build(cfg.model).eval()
    logger = MMLogger.get_instance("test_whole_mmdet_checkpoint", log_level="INFO")
    logger.propagate = True  # to caplog
    with caplog.at_level("INFO"):
        load_checkpoint(ours, mmdet_checkpoint, map_location="cpu", logger=logger)
    log = caplog.text
    assert "missing keys" not in log and "unexpected key" not in log
    assert "load_pretrained: " in log and "mmpretrain" in log
    theirs_state = mmdet_mask2former.state_dict()
    for name, value in ours.state_dict().items():  # everything outside the backbone by name
        if not name.startswith("backbone."):
            assert torch.equal(value, theirs_state[name]), name
    data = _image_batch(mmdet_mask2former, 112, 112)
    want_feats, _, want = _outputs(mmdet_mask2former, data)
    feats, _, got = _outputs(ours, data)
    torch.testing.assert_close(feats[1], want_feats[1], rtol=0.0, atol=1e-4)  # maps of > 1 window
    if init_cfg is None:
        assert ours.backbone.small_map == "pad"
        assert "set small_map='mmdet'" in log
        assert (feats[3] - want_feats[3]).abs().max() > 1e-2
        return
    assert ours.backbone.small_map == "mmdet"
    for f, g in zip(feats, want_feats):
        torch.testing.assert_close(f, g, rtol=0.0, atol=1e-4)
    torch.testing.assert_close(got.pred_instances.scores, want.pred_instances.scores, rtol=0.0,
                               atol=1e-4)
    assert torch.equal(got.pred_panoptic_seg.sem_seg, want.pred_panoptic_seg.sem_seg)


# ----------------------------------------------------------------------------- optimizer groups
def _groups(model: nn.Module, optim_wrapper: dict) -> Dict[str, Tuple[float, float]]:
    wrapper = build_optim_wrapper(model, optim_wrapper)
    by_id = {id(p): (group["lr"], group["weight_decay"])
             for group in wrapper.optimizer.param_groups for p in group["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def _native_name(mmdet_name: str) -> str:
    """Our name for a parameter of mmdet's model: its SwinTransformer's renamed, the rest kept."""
    if not mmdet_name.startswith("backbone."):
        return mmdet_name
    for old, new in (("stages.", "layers."), ("attn.w_msa.", "attn."), ("ffn.layers.0.0.", "mlp.fc1."),
                     ("ffn.layers.1.", "mlp.fc2."), ("patch_embed.projection.", "patch_embed.proj.")):
        mmdet_name = mmdet_name.replace(old, new)
    return mmdet_name


@pytest.mark.parametrize("name", [PANOPTIC, "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py"])
def test_v1_mask2former_lr_and_weight_decay_per_parameter_equal_mmdet(name):
    """Our config's optimizer on our model against mmdet's config (its ``custom_keys`` name
    mmdet's Swin modules) on mmdet's model: the same (lr, weight decay) for every parameter
    (backbone at 0.1x lr, no decay on norms, bias tables and the query / level embeddings)."""
    ours_cfg = _load(ROOT / "configs" / "det" / name)
    mmdet_cfg = Config.fromfile(str(MMDET_CONFIGS / "mask2former" / name))
    mmdet_cfg.model.backbone.init_cfg = None
    init_default_scope("mmdet")
    with torch.device("meta"):  # groups only: no weights allocated
        ours = MODELS.build(ours_cfg.model)
    theirs = MODELS.build(mmdet_cfg.model)  # mmdet's Swin reads its drop-path rates with .item()
    want = {_native_name(n): g for n, g in _groups(theirs, mmdet_cfg.optim_wrapper).items()}
    got = _groups(ours, ours_cfg.optim_wrapper)
    assert got == want
    lr = ours_cfg.optim_wrapper.optimizer.lr
    assert got["backbone.layers.0.blocks.0.attn.qkv.weight"] == (0.1 * lr, 0.05)
    assert got["backbone.layers.0.blocks.0.norm1.weight"] == (0.1 * lr, 0.0)
    assert got["panoptic_head.query_feat.weight"] == (lr, 0.0)
