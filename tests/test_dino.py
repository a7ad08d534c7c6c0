"""DINO with our backbones: the optimizer constructor's backbone lr multiplier (mmdet's DINO
recipe), the V1-L config's parameter groups against mmdet's per parameter, a checkpoint of mmdet's
own DINO with Swin loaded into the same config with SwinBackbone (predictions equal), one training
iteration and one test pass of every full-size DINO / large config, and the toy DINO trained
through tools/train.py and tested through tools/test.py to its bbox mAP target."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import save_checkpoint
from torch import nn

from swinv2_backbone import SwinBackbone
from swinv2_backbone.testing import randomize_
from test_configs import (CONFIGS, V1_PEERS, _effective_groups, _fake_det_batch, _peer_config,
                          input_size, load, read)
from test_pipelines import _run, _small_config, _test_metrics

ROOT = Path(__file__).resolve().parents[1]
DINO_V1_L = CONFIGS / "det/dino-5scale_swin-l-p4-w12-in22k-pre_8xb2-12e_coco.py"
TOY = CONFIGS / "demo/dino_swinv2-compact_toy-shapes.py"
#: This change's full-size configs.
FULL_SIZE = sorted([*(CONFIGS / "det").glob("dino-*.py"),
                    CONFIGS / "det/cascade-mask-rcnn_swinv2-l-p4-w16-in22k-pre_fpn_ms-crop-3x_coco.py"])
#: One training iteration and one test pass each: the 36-epoch configs build the same model and
#: optimizer as their 12-epoch bases (only the schedule differs).
TRAIN_ONCE = [p for p in FULL_SIZE if "36e" not in p.name]


# ----------------------------------------------------------------------------- optimizer
def test_dino_configs_keep_dinos_backbone_lr_and_clipping():
    for path in FULL_SIZE:
        cfg = read(path)
        wrapper = cfg.optim_wrapper
        if "dino" in path.name:
            assert wrapper.paramwise_cfg.backbone_lr_mult == 0.1, path.name
            assert wrapper.clip_grad == dict(max_norm=0.1, norm_type=2), path.name
            assert cfg.model.neck.type == "ChannelMapper"
            levels = cfg.model.get("num_feature_levels", 4)  # DeformableDETR's default
            assert levels == (5 if "5scale" in path.name else 4)
            assert cfg.model.neck.num_outs == levels == len(cfg.model.neck.in_channels) + 1
            assert cfg.model.encoder.layer_cfg.self_attn_cfg.num_levels == levels
            assert cfg.model.decoder.layer_cfg.cross_attn_cfg.num_levels == levels
        assert (wrapper.paramwise_cfg.layer_decay_rate == 0.9) == ("swinv2-l" in path.name)
        epochs = 36 if ("36e" in path.name or "3x" in path.name) else 12
        assert cfg.train_cfg.max_epochs == epochs, path.name


def test_v1_dino_lr_per_parameter_equals_mmdet_and_decay_differs_on_norms_and_tables():
    """mmdet's DINO Swin-L `custom_keys={'backbone': dict(lr_mult=0.1)}` against our
    `backbone_lr_mult=0.1` on the whole built model: the same lr for every parameter; weight decay
    the same except on normalisation layers and the V1 bias tables, which ours exempts and mmdet's
    DINO decays."""
    cfg = load(DINO_V1_L)
    init_default_scope(cfg.default_scope)
    with torch.device("meta"):  # groups only: no weights allocated
        model = MODELS.build(cfg.model)
    ours = _effective_groups(model, cfg.optim_wrapper)
    peer = _effective_groups(model, _peer_config(V1_PEERS[DINO_V1_L.name][0]).optim_wrapper)
    lr = cfg.optim_wrapper.optimizer.lr
    assert {n: o[0] for n, o in ours.items()} == {n: p[0] for n, p in peer.items()}
    assert {n for n in ours if ours[n][0] == lr * 0.1} == {n for n in ours if n.startswith("backbone.")}
    norms = {f"{module_name}.{leaf}" for module_name, m in model.named_modules()
             if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) for leaf, _ in m.named_parameters(recurse=False)}
    tables = {n for n in ours if n.endswith("relative_position_bias_table")}
    assert len(tables) == sum(model.backbone.depths)
    assert {n for n in ours if ours[n] != peer[n]} == norms | tables
    assert all(ours[n][1] == 0.0 and peer[n][1] == 1e-4 for n in norms | tables)


# ----------------------------------------------------------------------------- mmdet's own DINO
#: A small Swin for the parity test.
_SMALL_SWIN = dict(embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])


def _small_dino(backbone: dict) -> Config:
    """mmdet's DINO Swin-L config with ``backbone``, 30 queries, 3 classes and 20 detections; the
    transformer (6 + 6 layers, 5 levels, 256 channels) as it is. With 900 queries x 80 classes
    the 300 kept scores of a random model lie about 1e-6 apart, so float rounding alone reorders
    them; 20 of 30 x 3 lie 1e-5 or more apart."""
    cfg = read(DINO_V1_L)
    cfg.model.backbone = backbone
    cfg.model.neck.in_channels = [32, 64, 128, 256]
    cfg.model.num_queries = 30
    cfg.model.bbox_head.num_classes = 3
    cfg.model.test_cfg.max_per_img = 20
    return cfg


def test_mmdet_dino_checkpoint_gives_mmdets_predictions_with_swin_backbone(tmp_path):
    """mmdet's DINO 5-scale Swin-L config with a small mmdet `SwinTransformer` and fewer queries
    and classes (:func:`_small_dino`; random weights, saved as mmdet's runner saves them) and the same config with our `SwinBackbone` loading that
    checkpoint: the whole model's boxes, scores and labels agree. The backbone takes the
    checkpoint's `backbone.` part through its `init_cfg` (mmdet's key layout converted), the rest
    loads as it is. `small_map='mmdet'` is set explicitly: at this input stages 3 and 4 (6x8, 3x4)
    are smaller than the window 12, where our default `'pad'` differs from mmdet's rule."""
    peer = _peer_config(V1_PEERS[DINO_V1_L.name][0]).model.backbone
    mmdet_backbone = dict(peer, **_SMALL_SWIN, with_cp=False, convert_weights=False, init_cfg=None)
    init_default_scope("mmdet")
    torch.manual_seed(0)
    theirs = MODELS.build(_small_dino(mmdet_backbone).model)
    # every parameter non-trivial (norms, bias tables, embeddings); with mmdet's own init the
    # decoder barely moves the boxes off the encoder's proposals
    randomize_(theirs, seed=1)
    path = tmp_path / "epoch_12.pth"
    save_checkpoint({"meta": {"mmdet_version": "3.3.0", "epoch": 12},
                     "state_dict": theirs.state_dict()}, str(path))

    ours_backbone = dict(type="SwinBackbone", arch=None, **_SMALL_SWIN, window_size=12,
                         pretrain_img_size=384, drop_path_rate=0.2, out_indices=(0, 1, 2, 3),
                         small_map="mmdet", init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    ours = MODELS.build(_small_dino(ours_backbone).model)
    assert isinstance(ours.backbone, SwinBackbone)
    ours.init_weights()  # the backbone reads the checkpoint's backbone part
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    missing, unexpected = ours.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("backbone.")}, strict=False)
    assert unexpected == [] and missing and all(k.startswith("backbone.") for k in missing)

    torch.manual_seed(2)
    batch = _fake_det_batch(96, 128)
    preds = []
    for model in (theirs.eval(), ours.eval()):
        with torch.no_grad():
            data = model.data_preprocessor(batch, training=False)
            preds.append(model.predict(data["inputs"], data["data_samples"])[0].pred_instances)
    want, got = preds
    assert len(want) == theirs.test_cfg["max_per_img"] and want.scores.std() > 0
    torch.testing.assert_close(got.bboxes, want.bboxes, rtol=0, atol=1e-4)
    torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=1e-4)
    assert torch.equal(got.labels, want.labels)


# ----------------------------------------------------------------------------- full-size configs
@pytest.mark.slow
@pytest.mark.parametrize("path", TRAIN_ONCE, ids=[p.stem for p in TRAIN_ONCE])
def test_full_size_config_trains_one_iteration_and_tests(path):
    """The config's whole model (Swin-L / SwinV2-L with with_cp on, the full DINO transformer or
    Cascade Mask R-CNN), its optimizer wrapper as the runner builds it: one training iteration on a
    small image with two boxes changes the weights, then one test pass predicts finite boxes."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    cfg = load(path)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()  # as the runner does (DINO's level_embed is uninitialised before)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    h, w = input_size(cfg)
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                         pad_shape=(h, w), batch_input_shape=(h, w), img_id=0))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[8.0, 10.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]]),
                                       labels=torch.tensor([1, 5]))
    if "mask" in path.name:
        from mmdet.structures.mask import BitmapMasks
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, 10:70, 8:60] = masks[1, 20:90, 70:120] = 1
        sample.gt_instances.masks = BitmapMasks(masks.numpy(), h, w)
    batch = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)], data_samples=[sample])
    before = model.backbone.patch_embed.proj.weight.detach().clone()
    model.train()
    losses = model.train_step(batch, wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(model.backbone.patch_embed.proj.weight, before)
    model.eval()
    pred = model.test_step(dict(inputs=batch["inputs"], data_samples=[sample]))[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and torch.isfinite(pred.bboxes).all()
    if "dino" in path.name:  # no score threshold (Cascade R-CNN keeps scores > 0.05: maybe none)
        assert len(pred) == cfg.model.test_cfg.max_per_img


# ----------------------------------------------------------------------------- toy training
#: bbox mAP the toy DINO reaches through tools/train.py + tools/test.py (see configs/README.md).
TOY_TARGET = 0.5


@pytest.mark.slow
@pytest.mark.long
def test_toy_dino_trains_and_tests_to_its_target(tmp_path):
    """The toy DINO config through the tools on the demo's toy data (240 / 60 images, 128 px), its
    full schedule: tools/test.py on the saved checkpoint reaches the bbox mAP target."""
    from swinv2_backbone.openmmlab.toy_data import write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    config = _small_config(tmp_path, TOY, data.root, "toy_dino", batch_size=8)
    work = tmp_path / "work"
    # 300 iterations of 0.83 s (quiet 2-core AVX2 EPYC) to about 2 s (beside the other test worker)
    _run(["tools/train.py", str(config), "--work-dir", str(work)], ROOT, timeout=1500)
    iters = read(TOY).train_cfg.max_iters
    test_dir = tmp_path / "test"
    _run(["tools/test.py", str(config), str(work / f"iter_{iters}.pth"), "--work-dir", str(test_dir)], ROOT)
    assert _test_metrics(test_dir)["coco/bbox_mAP"] >= TOY_TARGET
