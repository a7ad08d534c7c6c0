"""SimMIM checkpoints: HF ``Swinv2ForMaskedImageModeling`` directories, official SimMIM files and our
own SimMIM state dicts and mmengine training checkpoints load whole into ``SimMIM`` /
``Swinv2SimMIM`` (encoder, mask token, decoder), into a ``use_mask_token`` backbone with the token,
and into a plain backbone or a det/seg config with token and decoder dropped and named; a SimMIM
model exports to HF ``Swinv2ForMaskedImageModeling`` and back with the same reconstruction."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

import pytest
import torch

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint import (CheckpointError, convert_checkpoint, from_model, load_pretrained,
                                        save_hf, to_hf_mim)
from swinv2_backbone.models import SimMIM
from swinv2_backbone.models.simmim import simmim_mask
from swinv2_backbone.testing import peers

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]
#: The demo configs' compact backbone (configs/demo), pre-trained by SimMIM here.
COMPACT = dict(arch=None, embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=8,
               drop_path_rate=0.0)
DROPPED = "dropped masked-image-modeling head (2 keys); mask token (1 keys)"


def masked_batch(image_size: int, seed: int = 0, n: int = 2):
    """Seeded ``(n, 3, S, S)`` images and SimMIM block masks."""
    x = torch.randn(n, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    mask = torch.stack([simmim_mask(image_size, generator=torch.Generator().manual_seed(seed + i))
                        for i in range(n)])
    return x, mask


def reconstruct(model: SimMIM, image_size: int = 128):
    x, mask = masked_batch(image_size)
    with torch.no_grad():
        rec = model.eval()(x, mask)
        return rec, model.loss(x, rec, mask)


def equal_states(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def hf_mim_dir(tmp_path_factory):
    hf = peers.hf_model("Swinv2ForMaskedImageModeling", peers.MINI, peers.W8, seed=3, image_size=128)
    path = tmp_path_factory.mktemp("hf_mim")
    hf.save_pretrained(path)
    return hf, str(path)


@pytest.fixture(scope="module")
def official_simmim():
    timm_model = peers.timm_model(peers.MINI, peers.W8, seed=4, num_classes=0)
    return peers.simmim_checkpoint(timm_model, seed=5)


# ------------------------------------------------------------------------------ heads of each format
def test_every_format_keeps_mask_token_and_decoder_as_heads(hf_mim_dir, official_simmim):
    torch.manual_seed(0)
    ours = SimMIM(dict(COMPACT))
    for checkpoint, token_key in ((hf_mim_dir[1], "swinv2.embeddings.mask_token"),
                                  (official_simmim, "encoder.mask_token"),
                                  (ours.state_dict(), "backbone.mask_token")):
        converted = convert_checkpoint(checkpoint)
        assert set(converted.heads) == {"mask token", "masked-image-modeling head"}
        assert set(converted.heads["mask token"]) == {"mask_token"}
        assert set(converted.heads["masked-image-modeling head"]) == {"decoder.0.weight", "decoder.0.bias"}
        assert converted.dropped["mask token"] == [token_key]
        assert "mask_token" not in converted.state_dict
        assert DROPPED in converted.summary()


# ------------------------------------------------------------------------------ into SimMIM
def test_official_simmim_loads_whole_into_simmim(official_simmim, tmp_path):
    """Equal reconstruction to the same weights mapped by hand from the official layout (encoder
    keys minus buffers, ``rpe_mlp`` -> ``cpb_mlp``, final ``norm`` -> ``norm3``)."""
    path = peers.save_torch(official_simmim, str(tmp_path), "simmim_swinv2_mini.pth")
    kwargs = peers.ours(peers.MINI, peers.W8, out_norm=True)
    loaded = SimMIM(dict(kwargs), pretrained=path)
    loaded.init_weights()
    by_hand = SimMIM(dict(kwargs))
    state = {}
    for key, value in official_simmim["model"].items():
        if key.endswith(("relative_coords_table", "relative_position_index", "attn_mask")):
            continue
        key = key.replace("encoder.norm.", "encoder.norm3.").replace(".rpe_mlp.", ".cpb_mlp.")
        state[key.replace("encoder.", "backbone.", 1)] = value
    by_hand.load_state_dict(state, strict=True)
    assert equal_states(loaded.state_dict(), by_hand.state_dict())
    (rec, loss), (expected, expected_loss) = reconstruct(loaded), reconstruct(by_hand)
    assert torch.equal(rec, expected) and torch.equal(loss, expected_loss)


def test_own_state_dict_and_training_checkpoint_load_whole(tmp_path):
    """A ``SimMIM`` state dict and a ``Swinv2SimMIM`` checkpoint as mmengine's runner saves it load
    into either model through ``init_cfg``/``pretrained``."""
    from swinv2_backbone.openmmlab.simmim import Swinv2SimMIM

    torch.manual_seed(0)
    source = Swinv2SimMIM(dict(COMPACT))
    path = str(tmp_path / "epoch_1.pth")
    torch.save({"meta": {"epoch": 1, "iter": 10}, "state_dict": source.state_dict(),
                "message_hub": {"log_scalars": {}}}, path)
    torch.manual_seed(1)
    wrapped = Swinv2SimMIM(dict(COMPACT), init_cfg=dict(type="Pretrained", checkpoint=path))
    wrapped.init_weights()
    plain = SimMIM(dict(COMPACT), pretrained=path)
    plain.init_weights()
    assert equal_states(wrapped.state_dict(), source.state_dict())
    assert equal_states(plain.state_dict(), source.state_dict())
    again = SimMIM(dict(COMPACT))
    load_pretrained(again, plain.state_dict())
    assert equal_states(again.state_dict(), source.state_dict())


@pytest.mark.parametrize("which, message", [("backbone", "no mask token"),
                                            ("token only", "no masked-image-modeling decoder")])
def test_simmim_refuses_a_checkpoint_without_token_or_decoder(which, message):
    torch.manual_seed(0)
    backbone = Swinv2Backbone(**COMPACT, use_mask_token=which == "token only", out_indices=(-1,))
    model = SimMIM(dict(COMPACT))
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(model, backbone.state_dict())


def test_simmim_refuses_a_decoder_of_another_stride(official_simmim):
    state = dict(official_simmim["model"])
    state["decoder.0.weight"] = state["decoder.0.weight"][:16 * 16 * 3]
    state["decoder.0.bias"] = state["decoder.0.bias"][:16 * 16 * 3]
    model = SimMIM(peers.ours(peers.MINI, peers.W8, out_norm=True))
    with pytest.raises(CheckpointError, match=r"decoder does not fit .*decoder\.0\.weight"):
        load_pretrained(model, {"model": state})


# ------------------------------------------------------------------------------ into a backbone
def test_plain_backbone_drops_token_and_decoder_with_one_line(hf_mim_dir, caplog):
    model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True, small_map="hf"))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(model, hf_mim_dir[1])
    lines = [r.getMessage() for r in caplog.records if "load_pretrained" in r.getMessage()]
    assert len(lines) == 1 and DROPPED in lines[0]
    assert model.mask_token is None


def test_backbone_with_mask_token_takes_it(official_simmim, caplog):
    model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True), use_mask_token=True)
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(model, official_simmim)
    assert torch.equal(model.mask_token, official_simmim["model"]["encoder.mask_token"])
    assert "loaded the mask token" in caplog.text and "mask token (1 keys)" not in caplog.text
    assert "dropped masked-image-modeling head (2 keys)" in caplog.text


def test_backbone_with_mask_token_keeps_its_own_without_one(caplog):
    torch.manual_seed(0)
    source = Swinv2Backbone(**COMPACT)
    model = Swinv2Backbone(**COMPACT, use_mask_token=True)
    token = model.mask_token.detach().clone()
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(model, source.state_dict())
    assert torch.equal(model.mask_token, token)
    assert "use_mask_token=True keeps its initial token" in caplog.text


@pytest.mark.parametrize("config", ["upernet_swinv2-compact_toy-shapes.py",
                                    "mask-rcnn_swinv2-compact_fpn_toy-shapes.py"])
def test_simmim_training_checkpoint_initialises_the_demo_seg_and_det_configs(tmp_path, caplog, config):
    """The det/seg route: ``init_cfg=dict(type='Pretrained', checkpoint=...)`` on the backbone of a
    config takes ``backbone.*`` of a whole SimMIM checkpoint and names what it leaves out."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from swinv2_backbone.openmmlab.simmim import Swinv2SimMIM

    torch.manual_seed(0)
    source = Swinv2SimMIM(dict(COMPACT))
    path = str(tmp_path / "iter_100.pth")
    torch.save({"meta": {"iter": 100}, "state_dict": source.state_dict()}, path)
    cfg = Config.fromfile(str(ROOT / "configs/demo" / config))
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        model.init_weights()
    ours = model.backbone.state_dict()
    expected = {k: v for k, v in source.backbone.state_dict().items() if k != "mask_token"}
    assert all(torch.equal(ours[k], v) for k, v in expected.items())
    assert DROPPED in caplog.text and "left out decoder" in caplog.text


# ------------------------------------------------------------------------------ export to HF
def test_hf_mim_export_round_trip(tmp_path):
    """Ours -> HF directory -> ``Swinv2ForMaskedImageModeling``: the same reconstruction and loss
    on the same mask (square inputs of ``config.image_size``, as HF needs), and back again."""
    from transformers import Swinv2ForMaskedImageModeling

    size = 128
    windows = peers.Windows("w8-clamped", 8, (0, 0, 0, 0), (8, 8, 8, 4))  # HF's clamping at 128 px
    model = SimMIM(peers.ours(peers.MINI, windows, out_norm=True, small_map="hf"))
    peers.randomize_(model, 6)
    exported = to_hf_mim(from_model(model), image_size=size)
    save_hf(exported, tmp_path / "hf")
    hf = Swinv2ForMaskedImageModeling.from_pretrained(str(tmp_path / "hf")).eval()
    x, mask = masked_batch(size, seed=7)
    with torch.no_grad():
        expected = hf(x, bool_masked_pos=mask.flatten(1))
        rec = model.eval()(x, mask)
        loss = model.loss(x, rec, mask)
    rec_diff = (rec - expected.reconstruction).abs().max().item()
    loss_diff = (loss - expected.loss).abs().item()
    print(f"HF MIM export: reconstruction max abs diff {rec_diff:.3g}, loss diff {loss_diff:.3g}")
    assert rec_diff <= TOL and loss_diff <= TOL
    back = SimMIM(peers.ours(peers.MINI, windows, out_norm=True, small_map="hf"),
                  pretrained=str(tmp_path / "hf"))
    back.init_weights()
    assert equal_states(back.state_dict(), model.state_dict())


def test_hf_mim_export_needs_token_and_decoder():
    backbone = Swinv2Backbone(**COMPACT, out_indices=(-1,))
    with pytest.raises(CheckpointError, match="no mask token and no masked-image-modeling head"):
        to_hf_mim(from_model(backbone))


def test_pretraining_starts_from_a_supervised_checkpoint_through_the_backbone_init_cfg(tmp_path):
    """Continued pre-training from a supervised model (an HF classification directory) in one
    config line: ``backbone.init_cfg`` loads the encoder (the classifier is dropped) while the mask
    token and the decoder keep their fresh initialisation, which the whole-model ``init_cfg``
    refuses to leave out."""
    from swinv2_backbone.openmmlab.simmim import Swinv2SimMIM

    hf = peers.hf_model("Swinv2ForImageClassification", peers.MINI, peers.W8, 81, image_size=64,
                        num_labels=3)
    hf.save_pretrained(tmp_path)
    torch.manual_seed(0)
    fresh = Swinv2SimMIM(dict(COMPACT))
    torch.manual_seed(0)
    model = Swinv2SimMIM(dict(COMPACT, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path))))
    model.init_weights()
    expected = Swinv2Backbone(**COMPACT, out_indices=(-1,))
    load_pretrained(expected, str(tmp_path))
    ours = {k: v for k, v in model.backbone.state_dict().items() if k != "mask_token"}
    assert equal_states(ours, expected.state_dict())
    assert torch.equal(model.backbone.mask_token, fresh.backbone.mask_token)
    assert equal_states(model.decoder.state_dict(), fresh.decoder.state_dict())
    with pytest.raises(CheckpointError, match="no mask token"):
        Swinv2SimMIM(dict(COMPACT), init_cfg=dict(type="Pretrained",
                                                   checkpoint=str(tmp_path))).init_weights()


def test_hf_config_encoder_stride_must_match_the_decoder(hf_mim_dir, tmp_path):
    import json
    import shutil

    directory = tmp_path / "edited"
    shutil.copytree(hf_mim_dir[1], directory)
    config = json.loads((directory / "config.json").read_text())
    config["encoder_stride"] = 16
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="encoder_stride 16 .*3072 output channels"):
        convert_checkpoint(str(directory))
