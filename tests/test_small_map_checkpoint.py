"""``small_map='checkpoint'``: the rule that reproduces the implementation that wrote a checkpoint,
told by its layout (or this project's metadata); the advice when the model has another rule (a
warning for a finished detector's or segmentor's weights, a note for pretraining weights)."""
from __future__ import annotations

import logging

import pytest
import torch

from swinv2_backbone import SwinBackbone, Swinv2Backbone
from swinv2_backbone.checkpoint import (CheckpointError, convert_checkpoint, from_model,
                                        load_pretrained, save_native)
from swinv2_backbone.testing import peers, peers_v1

V = peers_v1.V1_MINI
TOL = dict(rtol=1e-4, atol=1e-4)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture(scope="module")
def mmdet_detector(tmp_path_factory):
    """mmdet's own Swin V1 with seeded random weights and its detector checkpoint (``state_dict``
    with ``backbone.*`` next to a neck and heads), as mmdet's runner writes it."""
    model = peers_v1.mmdet_swin(V, 7, seed=11)
    path = peers.save_torch(peers_v1.mmdet_checkpoint(model, seed=11),
                            str(tmp_path_factory.mktemp("det")), "epoch_12.pth")
    return model, path


def test_mmdet_detector_features_at_224_without_knowing_the_rule(mmdet_detector, caplog):
    """At 224 px stage 4 is one 7x7 window: mmdet shifts it, the default 'pad' does not.
    ``small_map='checkpoint'`` (here through the init_cfg, as an mmdet config would say it) takes
    mmdet's rule from the checkpoint; the default model warns, naming the rule."""
    mmdet, path = mmdet_detector
    arch = dict(arch=None, embed_dims=V.embed_dims, depths=V.depths, num_heads=V.num_heads,
                window_size=7, drop_path_rate=0.0)
    ours = SwinBackbone(**arch, init_cfg=dict(type="Pretrained", checkpoint=path,
                                              small_map="checkpoint"))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        ours.init_weights()
    assert ours.small_map == "mmdet"
    assert all(b.small_map == "mmdet" for stage in ours.stages for b in stage.blocks)
    assert not _warnings(caplog)
    assert "small_map set from the checkpoint: 'mmdet' (an mmdet/mmseg detector" in caplog.text
    caplog.clear()
    default = SwinBackbone(**arch)
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(default, path)
    warned = _warnings(caplog)
    assert len(warned) == 1 and "set small_map='mmdet'" in warned[0], warned
    assert "the model has small_map='pad'" in warned[0]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = mmdet(x)
        for a, b in zip(ours.eval()(x), want):
            torch.testing.assert_close(a, b, **TOL)
        assert (default.eval()(x)[3] - want[3]).abs().max() > 1e-2


def _rule(checkpoint, **kwargs):
    found = convert_checkpoint(checkpoint, **kwargs).small_map
    return None if found is None else (found.rule, found.finished)


def test_each_source_tells_its_rule(tmp_path):
    timm_v2 = peers.timm_model(peers.MINI, peers.W8, seed=12)
    timm_v1 = peers_v1.timm_v1_model(V, 7, seed=13)
    hf_model = peers_v1.hf_v1_model("SwinModel", V, 7, seed=14)
    hf_backbone = peers_v1.hf_v1_model("SwinBackbone", V, 7, seed=14,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    assert _rule(peers.official_checkpoint(timm_v2)) == ("official", False)
    assert _rule(peers_v1.official_v1_state(timm_v1)) == ("official", False)
    assert _rule(peers.simmim_checkpoint(timm_v2, seed=1)) == ("official", False)
    assert _rule(timm_v2.state_dict()) == ("timm", False)
    assert _rule(timm_v1.state_dict()) == ("timm", False)
    assert _rule(peers.torchvision_model(peers.MINI, 8, seed=15).state_dict()) == ("pad", False)
    hf_model.save_pretrained(tmp_path / "hf_model")
    hf_backbone.save_pretrained(tmp_path / "hf_backbone")
    assert _rule(tmp_path / "hf_model") == ("hf", False)
    assert _rule(tmp_path / "hf_backbone") == ("mmdet", True)
    assert _rule(peers.hf_model("Swinv2Backbone", peers.MINI, peers.W8, seed=16).state_dict()) == (
        "hf", False)
    assert _rule(peers.mmpretrain_checkpoint(
        peers.mmpretrain_classifier(peers.MINI, peers.W8, seed=17))) == ("pad", False)
    assert _rule(peers.mmpretrain_checkpoint(
        peers_v1.mmpretrain_v1_classifier(V, 7, seed=18))) == ("official", False)
    mmdet = peers_v1.mmdet_swin(V, 7, seed=19)
    assert _rule(peers_v1.mmdet_checkpoint(mmdet, seed=19)) == ("mmdet", True)
    # a bare V1 backbone state dict: mmpretrain's and mmdet's have the same keys
    assert _rule(mmdet.state_dict()) is None


def test_native_files_keep_the_rule(mmdet_detector, tmp_path):
    """Converting keeps the writer's rule in this project's metadata; a model saved through
    from_model records its own; a native file without metadata tells none, and 'checkpoint' then
    says what to do."""
    _, path = mmdet_detector
    save_native(convert_checkpoint(path), tmp_path / "converted.safetensors")
    assert _rule(tmp_path / "converted.safetensors") == ("mmdet", True)
    model = SwinBackbone(arch=None, embed_dims=16, depths=(1, 1), num_heads=(1, 2), window_size=4,
                         small_map="timm")
    save_native(from_model(model), tmp_path / "own.pth")
    assert _rule(tmp_path / "own.pth") == ("timm", False)
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    assert _rule(tmp_path / "bare.pth") is None
    with pytest.raises(CheckpointError, match="does not tell which small_map rule"):
        load_pretrained(SwinBackbone(arch=None, embed_dims=16, depths=(1, 1), num_heads=(1, 2),
                                     window_size=4), tmp_path / "bare.pth", small_map="checkpoint")


def test_pretraining_weights_get_a_note_not_a_warning(caplog):
    """Pretraining weights are routinely fine-tuned under another rule ('pad' for dense
    prediction): the summary names the writer's rule, no warning."""
    timm_v2 = peers.timm_model(peers.MINI, peers.W8, seed=20)
    model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=False))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(model, peers.official_checkpoint(timm_v2))
    assert not _warnings(caplog)
    assert "set small_map='official'" in caplog.text
    with pytest.raises(ValueError, match="small_map must be None or 'checkpoint'"):
        load_pretrained(model, peers.official_checkpoint(timm_v2), small_map="mmdet")
    load_pretrained(model, peers.official_checkpoint(timm_v2), small_map="checkpoint")
    assert model.small_map == "official"
