"""mmseg's Mask2Former with our backbones (configs/seg/mask2former_*, configs/demo/mask2former_*):
the Swin V1 configs give every parameter mmseg's learning rate and weight decay; a checkpoint of
mmseg's own Swin Mask2Former loads into our V1 config and predicts mmseg's seg logits; every
Mask2Former config trains one iteration and tests once; the toy config trains to its target through
tools/train.py and tools/test.py."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

from swinv2_backbone import SwinBackbone
from swinv2_backbone.checkpoint import convert_checkpoint
from swinv2_backbone.checkpoint.mmpretrain import _rename
from swinv2_backbone.openmmlab.launch import build_runner, load_config
from swinv2_backbone.openmmlab.toy_data import SEG_CLASSES, write_toy_dataset
from swinv2_backbone.testing import randomize_

from test_configs import V1_PEERS, _effective_groups, _fake_seg_batch, _peer_config, load
from test_pipelines import _run, _test_metrics

ROOT = Path(__file__).resolve().parents[1]
MASK2FORMER = sorted((ROOT / "configs/seg").glob("mask2former_*.py"))
TOY_CONFIG = ROOT / "configs/demo/mask2former_swinv2-compact_toy-shapes.py"
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
#: The mIoU (%) the toy config reaches on the toy validation images (measured: see the test).
TOY_MIOU = 75.0


def _our_name(mmseg_name: str) -> str:
    """Our parameter name of an mmseg segmentor parameter (its SwinTransformer renamed, the rest kept)."""
    if not mmseg_name.startswith("backbone."):
        return mmseg_name
    return "backbone." + _rename(mmseg_name[len("backbone."):], merge_at_start=False)


#: One config of each optimizer-wrapper source of mmseg's: its 512 (T, S) and its 640 (B, L)
#: recipe (mmseg's Swin-B Mask2Former takes seconds to build: slow).
GROUP_CASES = [
    pytest.param("mask2former_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py", id="swin-t"),
    pytest.param("mask2former_swin-b-p4-w12-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py",
                 id="swin-b", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", GROUP_CASES)
def test_v1_parameter_groups_equal_mmsegs_per_parameter(name):
    """mmseg's `custom_keys` (backbone at 0.1 x lr, no decay on its norms and bias tables, nor on the
    queries and level embeddings) and `norm_decay_mult=0` on mmseg's model against our constructor
    on ours: the same (lr, weight decay) for every parameter of the two built segmentors."""
    cfg = load(ROOT / "configs/seg" / name)
    peer_cfg = _peer_config(V1_PEERS[name][0])
    peer_cfg.model.backbone.init_cfg = None
    init_default_scope("mmseg")
    with torch.device("meta"):  # groups only: no weights allocated
        ours = MODELS.build(cfg.model)
    peer = MODELS.build(peer_cfg.model)  # mmseg's Swin calls .item() while building: not on meta
    our_groups = _effective_groups(ours, cfg.optim_wrapper)
    peer_groups = {_our_name(n): g for n, g in _effective_groups(peer, peer_cfg.optim_wrapper).items()}
    assert our_groups == peer_groups
    lr, decay = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    assert our_groups["backbone.layers.0.blocks.0.attn.qkv.weight"] == (0.1 * lr, decay)
    assert our_groups["backbone.layers.0.blocks.0.norm1.weight"] == (0.1 * lr, 0.0)
    assert our_groups["decode_head.query_feat.weight"] == (lr, 0.0)


def _mmseg_swin_mask2former(seed: int) -> torch.nn.Module:
    """mmseg's Swin-T Mask2Former from its own config: PyTorch's random initialisation, the
    backbone's norms and bias tables randomised too; eval mode."""
    cfg = _peer_config("mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py")
    init_default_scope("mmseg")
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    randomize_(model.backbone, seed=seed)
    return model.eval()


def test_mmseg_swin_mask2former_checkpoint_predicts_the_same_in_our_v1_config(tmp_path):
    """A whole-model checkpoint of mmseg's Swin-T Mask2Former (saved as mmseg's runner saves it)
    loads into our Swin-T config: the backbone through `init_cfg` (our loader reads mmseg's
    `backbone.stages.*` layout), the head as mmengine's `load_from` loads it; the seg logits equal
    mmseg's. At 64x96 the last two maps (4x6, 2x3) are smaller than the window 7, so the backbone
    takes mmseg's small-map rule (`small_map='mmdet'`); the default 'pad' differs there."""
    peer = _mmseg_swin_mask2former(seed=3)
    checkpoint = tmp_path / "mmseg_mask2former_swin-t.pth"
    save_checkpoint({"meta": {"mmseg_version": "1.2.2"}, "state_dict": peer.state_dict()},
                    str(checkpoint))

    cfg = Config.fromfile(str(ROOT / "configs/seg/mask2former_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py"))
    cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    cfg.model.backbone.small_map = "mmdet"
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model).eval()
    model.backbone.init_weights()  # its init_cfg: the backbone from the mmseg file
    load_checkpoint(model, str(checkpoint), strict=False, revise_keys=[(r"^module\.", "")])  # load_from
    assert isinstance(model.backbone, SwinBackbone)
    converted = convert_checkpoint(checkpoint)
    assert converted.state_dict.keys() == model.backbone.state_dict().keys()
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, converted.state_dict[name]), name
    peer_state = peer.state_dict()
    for name, tensor in model.decode_head.state_dict().items():
        assert torch.equal(tensor, peer_state[f"decode_head.{name}"]), name

    h, w = 64, 96
    padded = SwinBackbone(arch="tiny", window_size=7, small_map="pad").eval()
    padded.load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        data = peer.data_preprocessor(_fake_seg_batch(h, w), training=False)
        expected = peer.predict(data["inputs"], data["data_samples"])[0].seg_logits.data
        got = model.predict(data["inputs"], data["data_samples"])[0].seg_logits.data
        pad_error = (padded(data["inputs"])[3] - peer.backbone(data["inputs"])[3]).abs().max()
    assert expected.shape == (150, h, w)
    assert (got - expected).abs().max() < 1e-4
    assert pad_error > 1e-3


# ----------------------------------------------------------------------------- training runs
def _toy_seg_overrides(data_root: Path, crop: int) -> Dict[str, object]:
    """cfg-options that run a Mask2Former config on the toy shapes: `crop`-px training crops, the
    128-px validation images unresized (ADE20K-style labels: `reduce_zero_label` as configured)."""
    dataset = dict(type="BaseSegDataset", data_root=str(data_root), img_suffix=".png",
                   seg_map_suffix=".png", metainfo=dict(classes=SEG_CLASSES))
    train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
             dict(type="RandomCrop", crop_size=(crop, crop)), dict(type="PackSegInputs")]
    test = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    loader = dict(batch_size=1, num_workers=0, persistent_workers=False)
    return {
        "model.backbone.init_cfg": None,
        "model.data_preprocessor.size": (crop, crop),
        "train_dataloader": dict(loader, dataset=dict(
            _delete_=True, **dataset, pipeline=train,
            data_prefix=dict(img_path="images/train", seg_map_path="labels/train"))),
        "test_dataloader": dict(loader, dataset=dict(
            _delete_=True, **dataset, pipeline=test,
            data_prefix=dict(img_path="images/val", seg_map_path="labels/val"))),
        "train_cfg.max_iters": 1,
        "train_cfg.val_interval": 1000,
        "val_dataloader": None, "val_cfg": None, "val_evaluator": None,
        "default_hooks.checkpoint": None,
        "default_hooks.logger.interval": 1,
        # mmseg names its visualizer 'visualizer': a runner built later in the same process would
        # take over the first one's instance and write into the first one's (deleted) work dir
        "visualizer.name": f"visualizer_{data_root.parent.name}",
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", MASK2FORMER, ids=[p.stem for p in MASK2FORMER])
def test_config_trains_one_iteration_and_tests(tmp_path, path):
    """The config's segmentor (backbone and head as configured), optimizer wrapper, schedule, losses
    and evaluator through mmseg's runner (as tools/train.py / tools/test.py build it): one training
    iteration on a 64-px crop of a toy image, then one test pass over a 128-px image. The ADE20K
    data is not here: only the dataset and pipelines are replaced by the toy ones."""
    data = write_toy_dataset(tmp_path / "data", num_train=1, num_val=1, image_size=128)
    cfg = load_config(path, _toy_seg_overrides(data.root, crop=64), str(tmp_path / "work"))
    runner = build_runner(cfg)
    before = {n: p.detach().clone() for n, p in runner.model.named_parameters()}
    runner.train()
    assert runner.iter == 1
    moved = {n for n, p in runner.model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("backbone.") for n in moved) and any(n.startswith("decode_head.") for n in moved)
    metrics = runner.test()
    assert 0.0 <= metrics["mIoU"] <= 100.0


@pytest.mark.slow
@pytest.mark.long
def test_toy_mask2former_trains_to_its_target_through_the_tools(tmp_path, monkeypatch):
    """The reduced Mask2Former of configs/demo trained from scratch on the demo's toy shapes (240
    training images, batch 8) through tools/train.py with the config's own schedule, then evaluated
    on the 60 validation images by tools/test.py from the saved checkpoint in a fresh process."""
    # idle OpenMP threads sleep (as tools/demo.py sets it): spinning ones take a shared CPU's cores
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    data = write_toy_dataset(tmp_path / "data", num_train=240, num_val=60, image_size=128)
    roots = [f"{loader}.dataset.data_root={data.root}/" for loader in LOADERS]
    work = tmp_path / "work"
    _run(["tools/train.py", str(TOY_CONFIG), "--work-dir", str(work), "--cfg-options", *roots], ROOT)
    iters = Config.fromfile(str(TOY_CONFIG)).train_cfg.max_iters
    test_dir = tmp_path / "test"
    _run(["tools/test.py", str(TOY_CONFIG), str(work / f"iter_{iters}.pth"), "--work-dir",
          str(test_dir), "--cfg-options", *roots], ROOT)
    metrics = _test_metrics(test_dir)
    assert metrics["mIoU"] >= TOY_MIOU, metrics
