"""Every shipped config parses, names its checkpoint, builds its model with neck/head channels that
match the backbone's, and runs a forward on CPU; the Swin V1 configs keep the settings of the
installed mmdet / mmseg Swin configs they mirror; the optimizer-wrapper constructor produces the
intended parameter groups."""
from __future__ import annotations

import copy
import functools
import importlib
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, OPTIM_WRAPPERS, init_default_scope
from torch import nn

from swinv2_backbone import SwinBackbone, Swinv2Backbone
from swinv2_backbone.openmmlab.launch import config_task
from swinv2_backbone.openmmlab.optim import (DEFAULT_NO_DECAY_KEYS,
                                             Swinv2LayerDecayOptimWrapperConstructor,
                                             backbone_layer_id)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DET = sorted((CONFIGS / "det").glob("*.py"))
SEG = sorted((CONFIGS / "seg").glob("*.py"))
DEMO = sorted((CONFIGS / "demo").glob("*.py"))
#: Swin V1 configs (``*_swin-*``, ``swin-*``), as opposed to the SwinV2 ones (``swinv2``).
V1 = [p for p in DET + SEG if "swinv2" not in p.name]
#: Official release files the configs may name (github.com/SwinTransformer/storage, v2.0.0 for
#: SwinV2, v1.0.0 for Swin V1).
OFFICIAL_CHECKPOINTS = {
    "swinv2_tiny_patch4_window16_256.pth",
    "swinv2_small_patch4_window16_256.pth",
    "swinv2_base_patch4_window16_256.pth",
    "swinv2_base_patch4_window12_192_22k.pth",
    "swinv2_large_patch4_window12_192_22k.pth",
}
OFFICIAL_V1_CHECKPOINTS = {
    "swin_tiny_patch4_window7_224.pth",
    "swin_small_patch4_window7_224.pth",
    "swin_base_patch4_window7_224.pth",
    "swin_base_patch4_window12_384.pth",
    "swin_base_patch4_window12_384_22k.pth",
    "swin_large_patch4_window12_384_22k.pth",
}
#: Swin-B's architecture and detection stochastic depth (the official Swin-B detectors), for the
#: V1 configs whose size mmdet ships no Mask R-CNN config of.
SWIN_B = dict(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
#: Each V1 config -> (the installed mmdet / mmseg config it mirrors, backbone settings it changes).
#: mmdet's Swin-S 3x config is its AMP variant (`--amp` here); mmdet has no Swin-S 1x nor Swin-B
#: Mask R-CNN, so those mirror the Swin-T recipe with the larger architecture, as mmdet's Swin-S 3x
#: does (Swin-S: depths only, drop_path kept at 0.2; Swin-B: drop_path 0.3 as the official Swin-B
#: detectors).
V1_PEERS: Dict[str, Tuple[str, dict]] = {
    "mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py": ("mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py", {}),
    "mask-rcnn_swin-s-p4-w7_fpn_1x_coco.py": ("mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py",
                                              dict(depths=[2, 2, 18, 2])),
    "mask-rcnn_swin-b-p4-w7_fpn_1x_coco.py": ("mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py",
                                              dict(SWIN_B, drop_path_rate=0.3)),
    "mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py": (
        "mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py", {}),
    "mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco.py": (
        "mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py", {}),
    "mask-rcnn_swin-b-p4-w7_fpn_ms-crop-3x_coco.py": (
        "mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py", dict(SWIN_B, drop_path_rate=0.3)),
    **{f"swin-{size}-p4-w7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py": (
        f"mmseg::swin/swin-{size}-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py", {})
       for size in ("tiny", "small", "base")},
    "swin-base-p4-w12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py": (
        "mmseg::swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py",
        {}),
    # mmseg ships its Swin-B and Swin-L Mask2Former at 640x640 only
    **{f"mask2former_swin-{size}-p4-w7_8xb2-160k_ade20k-512x512.py": (
        f"mmseg::mask2former/mask2former_swin-{size}_8xb2-160k_ade20k-512x512.py", {})
       for size in "ts"},
    **{f"mask2former_swin-{size}-p4-w12-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py": (
        f"mmseg::mask2former/mask2former_swin-{size}-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py", {})
       for size in "bl"},
    # mmdet's Mask2Former configs, each with its own name
    **{name: (f"mmdet::mask2former/{name}", {}) for name in (
        "mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py",
        "mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py",
        "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py",
        "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py",
        "mask2former_swin-b-p4-w12-384_8xb2-lsj-50e_coco-panoptic.py",
        "mask2former_swin-b-p4-w12-384-in21k_8xb2-lsj-50e_coco-panoptic.py",
        "mask2former_swin-l-p4-w12-384-in21k_16xb1-lsj-100e_coco-panoptic.py")},
    **{f"dino-5scale_swin-l-p4-w12-in22k-pre_8xb2-{epochs}_coco.py": (
        f"mmdet::dino/dino-5scale_swin-l_8xb2-{epochs}_coco.py", {}) for epochs in ("12e", "36e")},
}
#: Configs whose model builds and runs in about a second (the compact demo models).
FAST = {p.name for p in DEMO}


def ids(paths: List[Path]) -> List[str]:
    return [p.stem for p in paths]


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> Config:
    return Config.fromfile(str(path))


def read(path: Path) -> Config:
    """``Config.fromfile(path)``, a fresh copy of one parse per process: reading a config with
    installed bases (``mmdet::``) takes about a second, and several tests check each file."""
    return copy.deepcopy(_read(Path(path)))


def load(path: Path) -> Config:
    """The config with its checkpoint loading switched off (tests must not load weights)."""
    cfg = read(path)
    cfg.model.backbone.init_cfg = None
    return cfg


#: Configs that train one iteration and run a test pass in their own files (test_dino.py,
#: test_mask2former_seg.py, test_mask2former_htc.py; the 36-epoch DINO ones build their 12-epoch
#: base's model): a forward here would repeat part of that.
TRAINED_ELSEWHERE = {p.name for p in DET + SEG if p.name.startswith(("mask2former_", "htc_", "dino-"))
                     or p.name.startswith("cascade-mask-rcnn_swinv2-l-")}


def marks(paths: List[Path]) -> list:
    return [pytest.param(p, id=p.stem, marks=() if p.name in FAST else pytest.mark.slow)
            for p in paths]


def test_the_issue_configs_exist():
    names = {p.name for p in DET + SEG}
    for algo, schedule, sizes in (("mask-rcnn", "1x", "tsb"), ("mask-rcnn", "ms-crop-3x", "tsb"),
                                  ("cascade-mask-rcnn", "ms-crop-3x", "tsb"),
                                  ("faster-rcnn", "1x", "t"), ("retinanet", "1x", "t")):
        for size in sizes:
            assert f"{algo}_swinv2-{size}-p4-w16_fpn_{schedule}_coco.py" in names
    for size in ("tiny", "small", "base"):
        assert f"swinv2-{size}-p4-w16-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py" in names
    assert "swinv2-tiny-p4-w16-in1k-pre_fpn_4xb4-80k_ade20k-512x512.py" in names
    # Swin V1 (issue #16): Mask R-CNN 1x and 3x, UPerNet 160k, each T/S/B
    for schedule in ("1x", "ms-crop-3x"):
        for size in "tsb":
            assert f"mask-rcnn_swin-{size}-p4-w7_fpn_{schedule}_coco.py" in names
    for size in ("tiny", "small", "base"):
        assert f"swin-{size}-p4-w7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py" in names
    # Mask2Former (issue #30): SwinV2 T/S/B, Swin V1 T/S/B/L
    for size in "tsb":
        assert f"mask2former_swinv2-{size}-p4-w16_8xb2-160k_ade20k-512x512.py" in names
    for size in "bl":
        assert f"mask2former_swin-{size}-p4-w12-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py" in names
    # issue 30: mmdet Mask2Former (COCO panoptic and instance) and HTC with SwinV2
    for task in ("coco-panoptic", "coco"):
        for size in "tsb":
            assert f"mask2former_swinv2-{size}-p4-w16_8xb2-lsj-50e_{task}.py" in names
    assert "htc_swinv2-t-p4-w16_fpn_ms-400-1400-6x_coco.py" in names
    assert {p.name for p in V1} == set(V1_PEERS)
    assert {p.name for p in DEMO} == {"mask-rcnn_swinv2-compact_fpn_toy-shapes.py",
                                      "upernet_swinv2-compact_toy-shapes.py",
                                      "upernet_swin-compact_toy-shapes.py",
                                      "mask2former_swinv2-compact_toy-shapes.py",
                                      "dino_swinv2-compact_toy-shapes.py"}


@pytest.mark.parametrize("path", DET + SEG, ids=ids(DET + SEG))
def test_config_names_an_official_checkpoint_under_checkpoints(path):
    cfg = read(path)
    backbone = cfg.model.backbone
    assert cfg.custom_imports["imports"] == ["swinv2_backbone"]
    init = backbone.init_cfg
    assert init["type"] == "Pretrained"
    folder, name = init["checkpoint"].split("/")
    assert name in (CONFIGS / "README.md").read_text(), "checkpoint not documented"
    assert config_task(cfg) == ("det" if path.parent.name == "det" else "seg")
    assert folder == "checkpoints"
    if path in V1:
        # Swin V1: the window the checkpoint was trained with (its bias tables' size)
        assert backbone.type == "SwinBackbone" and name in OFFICIAL_V1_CHECKPOINTS
        assert backbone.window_size == (12 if "window12" in name else 7)
        assert "pretrained_window_sizes" not in backbone
    else:
        # SwinV2: window 16 everywhere; pretrained windows describe what the checkpoint ran.
        assert backbone.type == "Swinv2Backbone" and name in OFFICIAL_CHECKPOINTS
        assert backbone.window_size == 16
        expected = (12, 12, 12, 6) if "window12" in name else (16, 16, 16, 8)
        assert tuple(backbone.pretrained_window_sizes) == expected
    # Larger variants trade compute for memory.
    assert backbone.get("with_cp", False) == (backbone.arch in ("small", "base", "large"))


@pytest.mark.parametrize("path", DET + SEG, ids=ids(DET + SEG))
def test_optimizer_is_adamw_without_decay_on_swinv2_specials(path):
    cfg = read(path)
    wrapper = cfg.optim_wrapper
    assert wrapper.constructor == "SwinLayerDecayOptimWrapperConstructor"
    assert wrapper.optimizer.type == "AdamW" and wrapper.optimizer.weight_decay > 0
    assert wrapper.type == ("AmpOptimWrapper" if "amp" in path.name else "OptimWrapper")
    expected_rate = 0.9 if "in22k" in path.name and path not in V1 else 1.0
    assert wrapper.paramwise_cfg.layer_decay_rate == expected_rate


# ----------------------------------------------------------------------------- Swin V1 vs mmdet/mmseg
def _peer_config(ref: str) -> Config:
    """An installed mmdet / mmseg config, named ``'mmdet::swin/NAME.py'``."""
    package, relative = ref.split("::")
    root = Path(importlib.import_module(package).__file__).parent / ".mim" / "configs"
    return read(root / relative)


def _plain(value):
    """Config data as plain values (lists for tuples), without mmengine's ``_scope_`` tags and
    ``_delete_`` markers and without the ``backend_args=None`` that mmdet's configs spell out."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()
                if k not in ("_scope_", "_delete_") and not (k == "backend_args" and v is None)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


#: Module-level helper variables of the configs (their values are compared where they are used;
#: mmdet's Mask2Former Swin configs spell their optimizer's ``custom_keys`` out of the last five).
_HELPER_VARIABLES = ("pretrained", "checkpoint_file", "crop_size", "data_preprocessor",
                     "custom_imports", "ms_scales", "backbone_norm_cfg", "norm_cfg", "max_iters",
                     # mmseg's Mask2Former configs' and ours (their optimizer wrappers are compared)
                     "num_classes", "depths", "optimizer", "custom_keys", "backbone_norm_multi",
                     "backbone_embed_multi", "embed_multi", "mask2former_optim_wrapper")


def _comparable(cfg: Config) -> dict:
    """The config as plain data without helper variables and without the neck / head input
    channels (tested against the built backbone by test_neck_and_head_channels_...)."""
    data = _plain(cfg.to_dict())
    for key in _HELPER_VARIABLES:
        data.pop(key, None)
    for part in ("neck", "decode_head", "auxiliary_head", "panoptic_head"):
        data["model"].get(part, {}).pop("in_channels", None)
    return data


@pytest.mark.parametrize("path", V1, ids=ids(V1))
def test_v1_config_is_the_mmdet_mmseg_swin_config_with_our_backbone(path):
    """Everything but the backbone type, the checkpoint and the optimizer-wrapper constructor equals
    the installed mmdet / mmseg Swin config: model heads, data pipelines and loaders, schedule,
    optimizer, runtime; the built backbone has the peer's architecture and layer settings."""
    ref, changes = V1_PEERS[path.name]
    peer_cfg = _peer_config(ref)
    ours, peer = _comparable(read(path)), _comparable(peer_cfg)
    our_wrapper, peer_wrapper = ours.pop("optim_wrapper"), peer.pop("optim_wrapper")
    ours["model"].pop("backbone")
    peer["model"].pop("backbone")
    assert ours == peer
    assert our_wrapper.pop("type") == "OptimWrapper"  # mmdet's Swin-S 3x is AMP: --amp here
    assert peer_wrapper.pop("type") == ("AmpOptimWrapper" if "amp" in ref else "OptimWrapper")
    # optimizer and gradient clipping equal; the parameter groups (mmdet/mmseg `custom_keys`, ours
    # `paramwise_cfg`): test_v1_weight_decay_per_parameter_equals_mmdet_mmseg and, for DINO,
    # test_dino.py
    assert our_wrapper.pop("constructor") == "SwinLayerDecayOptimWrapperConstructor"
    our_wrapper.pop("paramwise_cfg")
    peer_wrapper.pop("paramwise_cfg")
    assert our_wrapper == peer_wrapper

    expected = dict(peer_cfg.model.backbone, **changes)
    cfg = load(path)
    init_default_scope(cfg.default_scope)
    with torch.device("meta"):
        backbone = MODELS.build(cfg.model.backbone)
    assert isinstance(backbone, SwinBackbone)
    assert backbone.embed_dims == expected["embed_dims"]
    assert list(backbone.depths) == list(expected["depths"])
    assert list(backbone.num_heads) == list(expected["num_heads"])
    assert list(backbone.window_size) == [expected["window_size"]] * 4
    assert backbone.drop_path_rate == expected["drop_path_rate"]
    assert list(backbone.out_indices) == list(expected["out_indices"])
    options = backbone.block_options
    assert options["mlp_ratio"] == expected["mlp_ratio"] and options["qkv_bias"] == expected["qkv_bias"]
    assert expected["qk_scale"] is None  # head_dim ** -0.5, the only scale SwinBackbone has
    assert (options["drop"], options["attn_drop"]) == (expected["drop_rate"], expected["attn_drop_rate"])
    assert isinstance(backbone.patch_embed.norm, nn.LayerNorm) == expected["patch_norm"]
    assert (backbone.absolute_pos_embed is not None) == expected.get("use_abs_pos_embed", False)
    assert backbone.pretrain_grid * 4 == expected.get("pretrain_img_size", 224)
    assert expected.get("patch_size", 4) == 4 and list(expected.get("strides", (4, 2, 2, 2))) == [4, 2, 2, 2]


def _effective_groups(model: nn.Module, optim_wrapper: dict) -> Dict[str, Tuple[float, float]]:
    """(lr, weight decay) of every parameter of ``model`` under ``optim_wrapper``."""
    wrapper = build_optim_wrapper(model, optim_wrapper)
    by_id = {id(p): (group["lr"], group["weight_decay"])
             for group in wrapper.optimizer.param_groups for p in group["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py",
                                  "swin-tiny-p4-w7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py"])
def test_v1_weight_decay_per_parameter_equals_mmdet_mmseg(name):
    """Our constructor (no decay on normalisation layers and the position parameters) against the
    mmdet / mmseg `custom_keys` (no decay on names containing absolute_pos_embed,
    relative_position_bias_table or norm), on the whole built model: the same lr and weight decay
    for every parameter, except that mmseg's name match misses the heads' BatchNorms (``bn``),
    which ours exempts as every normalisation layer."""
    path = next(p for p in V1 if p.name == name)
    cfg = load(path)
    init_default_scope(cfg.default_scope)
    with torch.device("meta"):  # groups only: no weights allocated
        model = MODELS.build(cfg.model)
    ours = _effective_groups(model, cfg.optim_wrapper)
    peer = _effective_groups(model, _peer_config(V1_PEERS[name][0]).optim_wrapper)
    differ = {n for n in ours if ours[n] != peer[n]}
    head_bn = {n for module_name, m in model.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and not module_name.startswith("backbone.")
               for n in (f"{module_name}.weight", f"{module_name}.bias")}
    assert differ == (head_bn if path.parent.name == "seg" else set())
    assert all(ours[n][1] == 0.0 and peer[n][1] == cfg.optim_wrapper.optimizer.weight_decay for n in differ)
    assert {ours[n][0] for n in ours} == {cfg.optim_wrapper.optimizer.lr}
    tables = [n for n in ours if n.endswith("relative_position_bias_table")]
    assert len(tables) == sum(model.backbone.depths) and all(ours[n][1] == 0.0 for n in tables)


def _fake_det_batch(h: int, w: int) -> dict:
    from mmdet.structures import DetDataSample

    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                         img_id=0))
    return dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)], data_samples=[sample])


def _fake_seg_batch(h: int, w: int) -> dict:
    from mmseg.structures import SegDataSample

    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    return dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)], data_samples=[sample])


def _check_channels(cfg: Config, backbone_channels: List[int]) -> None:
    model = cfg.model
    if "neck" in model:
        assert list(model.neck.in_channels) == backbone_channels
    if model.get("decode_head", {}).get("type") == "Mask2FormerHead":  # every stage, no neck
        assert "neck" not in model and list(model.decode_head.in_channels) == backbone_channels
    if "panoptic_head" in model:  # Mask2Former: no neck, its pixel decoder takes the stages
        assert list(model.panoptic_head.in_channels) == backbone_channels
    if model.get("decode_head", {}).get("type") == "UPerHead":
        head = model.decode_head
        assert list(head.in_channels) == [backbone_channels[i] for i in head.in_index]
    if model.get("auxiliary_head"):
        aux = model.auxiliary_head
        assert aux.in_channels == backbone_channels[aux.in_index]


@pytest.mark.parametrize("path", DET + SEG + DEMO, ids=ids(DET + SEG + DEMO))
def test_neck_and_head_channels_equal_the_built_backbones(path):
    cfg = load(path)
    init_default_scope(cfg.default_scope)
    with torch.device("meta"):  # the channels only: skip allocating and initialising weights
        backbone = MODELS.build(cfg.model.backbone)
    assert isinstance(backbone, SwinBackbone if cfg.model.backbone.type == "SwinBackbone" else Swinv2Backbone)
    assert backbone.out_channels == [backbone.embed_dims * 2 ** i for i in backbone.out_indices]
    _check_channels(cfg, backbone.out_channels)


def detr_tokens(cfg: Config, h: int, w: int) -> int:
    """The tokens a DETR encoder holds for an h x w input: one per cell of each backbone map it
    takes (stride 4 * 2**i for out index i) and of each extra level (each half the size of the
    one before)."""
    strides = [4 * 2 ** i for i in cfg.model.backbone.out_indices]
    extra = cfg.model.get("num_feature_levels", 4) - len(strides)  # DeformableDETR's default: 4
    strides += [strides[-1] * 2 ** (k + 1) for k in range(extra)]
    return sum(-(-h // s) * -(-w // s) for s in strides)


def input_size(cfg: Config) -> Tuple[int, int]:
    """A small test input: 64x96, or for a two-stage DETR (DINO), whose encoder must hold at least
    ``num_queries`` tokens (900 for mmdet's DINO), the smaller of 128x160 (1706 tokens from stride
    4) and 192x256 (1020 from stride 8) that does; both hold the test boxes (up to 120 x 90)."""
    if not cfg.model.get("as_two_stage", False):
        return (64, 96)
    return next(hw for hw in [(128, 160), (192, 256)]
                if detr_tokens(cfg, *hw) >= cfg.model.num_queries)


@pytest.mark.parametrize("path", marks([p for p in DET + SEG + DEMO if p.name not in TRAINED_ELSEWHERE]))
def test_config_builds_and_runs_forward_on_cpu(path):
    cfg = load(path)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    # as the runner does: mmdet's DETRs leave parameters uninitialised until init_weights
    # (DINO's level_embed is torch.Tensor(levels, dims))
    model.init_weights()
    _check_channels(cfg, model.backbone.out_channels)
    h, w = input_size(cfg)
    with torch.no_grad():
        if config_task(cfg) == "det":
            data = model.data_preprocessor(_fake_det_batch(h, w), training=False)
            feats = model.extract_feat(data["inputs"])
            if "neck" in cfg.model:
                assert len(feats) == cfg.model.neck.num_outs
                assert all(f.shape[1] == cfg.model.neck.out_channels for f in feats)
            result = model.predict(data["inputs"], data["data_samples"])[0]
            pred = result.pred_instances
            assert pred.bboxes.shape[1] == 4 and torch.isfinite(pred.bboxes).all()
            if "mask_head" in cfg.model.get("roi_head", {}) or "panoptic_head" in cfg.model:
                assert pred.masks.shape[1:] == (h, w)
            if cfg.model.get("test_cfg", {}).get("panoptic_on"):
                assert result.pred_panoptic_seg.sem_seg.shape == (1, h, w)
        else:
            data = model.data_preprocessor(_fake_seg_batch(h, w), training=False)
            pred = model.predict(data["inputs"], data["data_samples"])[0]
            num_classes = cfg.model.decode_head.num_classes
            assert pred.seg_logits.data.shape == (num_classes, h, w)
            assert pred.pred_sem_seg.data.shape == (1, h, w)
            assert torch.isfinite(pred.seg_logits.data).all()


# ----------------------------------------------------------------------------- optimizer groups
class _Detector(nn.Module):
    """A backbone plus a head with a GroupNorm, like the detectors' layout."""

    def __init__(self, backbone_class: type = Swinv2Backbone, **backbone) -> None:
        super().__init__()
        self.backbone = backbone_class(arch=None, embed_dims=16, depths=(1, 1, 2, 1),
                                       num_heads=(1, 2, 2, 4), drop_path_rate=0.0, **backbone)
        self.head = nn.Sequential(nn.Conv2d(128, 8, 1), nn.GroupNorm(2, 8), nn.Conv2d(8, 4, 1))


def _groups(model: nn.Module, **paramwise) -> List[dict]:
    constructor = Swinv2LayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05)), paramwise or None)
    return constructor(model).optimizer.param_groups


def _by_name(groups: List[dict]) -> dict:
    return {name: group for group in groups for name in group["param_names"]}


def test_no_weight_decay_on_norms_cpb_logit_scale_and_pos_embed():
    model = _Detector(use_abs_pos_embed=True, pretrain_img_size=64)
    groups = _groups(model)
    by_name = _by_name(groups)
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    norm_modules = {n for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))}
    for name, group in by_name.items():
        owner = name.rsplit(".", 1)[0]
        special = any(k in name for k in DEFAULT_NO_DECAY_KEYS)
        assert group["weight_decay"] == (0.0 if owner in norm_modules or special else 0.05), name
        assert group["lr"] == 1e-3
    assert by_name["backbone.absolute_pos_embed"]["weight_decay"] == 0.0
    assert by_name["backbone.layers.0.blocks.0.attn.logit_scale"]["weight_decay"] == 0.0
    assert by_name["backbone.layers.0.blocks.0.attn.cpb_mlp.0.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.layers.0.downsample.norm.weight"]["weight_decay"] == 0.0
    assert by_name["head.1.weight"]["weight_decay"] == 0.0  # GroupNorm outside the backbone
    assert by_name["backbone.layers.0.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["backbone.layers.0.blocks.0.attn.q_bias"]["weight_decay"] == 0.05
    assert by_name["head.0.weight"]["weight_decay"] == 0.05
    assert len(groups) == 2  # one lr, decay / no decay
    assert groups[0]["weight_decay"] == 0.05  # the logged lr is the first group's


def test_layer_decay_scales_lr_by_depth():
    model = _Detector()
    by_name = _by_name(_groups(model, layer_decay_rate=0.5))
    depths = (1, 1, 2, 1)
    top = sum(depths) + 1  # 6
    expected = {
        "backbone.patch_embed.proj.weight": 0,
        "backbone.layers.0.blocks.0.mlp.fc1.weight": 1,
        "backbone.layers.0.downsample.reduction.weight": 1,  # end of stage 0 = its last block
        "backbone.layers.1.blocks.0.attn.qkv.weight": 2,
        "backbone.layers.2.blocks.0.norm1.weight": 3,
        "backbone.layers.2.blocks.1.attn.cpb_mlp.2.weight": 4,
        "backbone.layers.2.downsample.norm.bias": 4,
        "backbone.layers.3.blocks.0.mlp.fc2.bias": 5,
        "backbone.norm3.weight": top,
        "head.0.weight": top,
    }
    for name, layer in expected.items():
        assert by_name[name]["lr"] == pytest.approx(1e-3 * 0.5 ** (top - layer)), name
        if name.startswith("backbone."):
            assert backbone_layer_id(name[len("backbone."):], depths) == layer
    # decay and no-decay stay separate within a layer
    assert by_name["backbone.layers.2.blocks.0.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.layers.2.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05


def test_backbone_lr_mult_scales_every_backbone_parameter():
    """Mask2Former's recipe: the backbone (output norms included) at ``mult * lr``, on top of the
    layer decay; the head at ``lr``; weight decay unchanged."""
    model = _Detector()
    plain = _by_name(_groups(model, layer_decay_rate=0.5))
    by_name = _by_name(_groups(model, layer_decay_rate=0.5, backbone_lr_mult=0.1))
    for name, group in by_name.items():
        mult = 0.1 if name.startswith("backbone.") else 1.0
        assert group["lr"] == pytest.approx(mult * plain[name]["lr"]), name
        assert group["weight_decay"] == plain[name]["weight_decay"], name
    assert by_name["backbone.norm3.weight"]["lr"] == pytest.approx(1e-4)
    assert by_name["head.0.weight"]["lr"] == pytest.approx(1e-3)


def test_swin_v1_groups_and_layer_decay():
    """The constructor serves a Swin V1 backbone: no decay on its bias tables and norms, and the same
    depth ids (block / merging / output-norm names are shared by both versions)."""
    model = _Detector(SwinBackbone, use_abs_pos_embed=True, pretrain_img_size=64)
    by_name = _by_name(_groups(model, layer_decay_rate=0.5))
    top = sum((1, 1, 2, 1)) + 1
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    expected = {  # name: (layer id, weight decay)
        "backbone.absolute_pos_embed": (0, 0.0),
        "backbone.patch_embed.norm.weight": (0, 0.0),
        "backbone.layers.0.blocks.0.attn.relative_position_bias_table": (1, 0.0),
        "backbone.layers.0.downsample.norm.weight": (1, 0.0),
        "backbone.layers.0.downsample.reduction.weight": (1, 0.05),
        "backbone.layers.2.blocks.1.attn.relative_position_bias_table": (4, 0.0),
        "backbone.layers.2.blocks.1.attn.qkv.bias": (4, 0.05),
        "backbone.layers.3.blocks.0.norm2.weight": (5, 0.0),
        "backbone.norm3.bias": (top, 0.0),
        "head.0.weight": (top, 0.05),
    }
    for name, (layer, decay) in expected.items():
        assert by_name[name]["lr"] == pytest.approx(1e-3 * 0.5 ** (top - layer)), name
        assert by_name[name]["weight_decay"] == decay, name


def test_frozen_parameters_are_left_out():
    model = _Detector(frozen_stages=1)
    by_name = _by_name(_groups(model))
    assert not any(n.startswith(("backbone.patch_embed", "backbone.layers.0.", "backbone.norm0"))
                   for n in by_name)
    assert "backbone.layers.1.blocks.0.attn.qkv.weight" in by_name


@pytest.mark.parametrize("paramwise, message", [
    (dict(custom_keys={"norm": dict(decay_mult=0.0)}), "unknown paramwise_cfg keys"),
    (dict(layer_decay_rate=0.0), "layer_decay_rate must be"),
    (dict(layer_decay_rate=1.5), "layer_decay_rate must be"),
    (dict(no_decay_keys="cpb_mlp"), "no_decay_keys must be"),
    (dict(backbone_lr_mult=0.0), "backbone_lr_mult must be"),
    (dict(backbone_lr_mult=True), "backbone_lr_mult must be"),
    (dict(backbone_lr_mult="0.1"), "backbone_lr_mult must be"),
])
def test_constructor_rejects_bad_paramwise_cfg(paramwise, message):
    with pytest.raises(ValueError, match=message):
        Swinv2LayerDecayOptimWrapperConstructor(
            dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05)), paramwise)


def test_layer_decay_needs_one_swin_backbone():
    with pytest.raises(ValueError, match="exactly one Swinv2Backbone or SwinBackbone in the model, found 0"):
        _groups(nn.Linear(2, 2), layer_decay_rate=0.9)
    two = nn.ModuleDict(dict(a=_Detector(), b=_Detector(SwinBackbone)))
    with pytest.raises(ValueError, match=r"found 2 \(\['a.backbone', 'b.backbone'\]\)"):
        _groups(two, layer_decay_rate=0.9)


def test_backbone_layer_id_rejects_unknown_names():
    with pytest.raises(ValueError, match="no layer id"):
        backbone_layer_id("head.weight", (2, 2, 6, 2))


def test_config_optim_wrapper_builds_from_the_registry():
    cfg = Config.fromfile(str(CONFIGS / "det/mask-rcnn_swinv2-b-p4-w16-in22k-pre_fpn_ms-crop-3x_coco.py"))
    init_default_scope("mmdet")
    model = _Detector()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, OPTIM_WRAPPERS.get("OptimWrapper"))
    lrs = sorted({g["lr"] for g in wrapper.optimizer.param_groups})
    assert lrs[-1] == pytest.approx(1e-4) and lrs[0] == pytest.approx(1e-4 * 0.9 ** 6)


def test_configs_left_out_of_the_forward_test_are_trained_elsewhere():
    from test_dino import FULL_SIZE
    from test_mask2former_htc import CONFIGS as DET_MASK2FORMER_HTC
    from test_mask2former_seg import MASK2FORMER

    covered = {p.name for p in [*FULL_SIZE, *DET_MASK2FORMER_HTC, *MASK2FORMER]}
    assert TRAINED_ELSEWHERE and TRAINED_ELSEWHERE <= covered
