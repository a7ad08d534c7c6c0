"""``load_state_dict`` with another implementation's weights (:mod:`swinv2_backbone.checkpoint.state_hook`):
a timm state dict loads straight into a backbone and reproduces timm's features; under a prefix (a
backbone inside a model) too; weights in our own layout keep ``load_state_dict``'s own strictness;
foreign weights that do not fit raise the checkpoint adapters' error instead of leaving the backbone
random. The whole-model case (``tools/test.py`` on mmdet's own Mask2Former checkpoint) is in
``test_mask2former_htc.py``."""
import pytest
import torch
from torch import nn

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint import CheckpointError
from swinv2_backbone.testing import peers

VARIANT, WINDOWS = peers.MINI, peers.W8


@pytest.fixture(scope="module")
def timm_model() -> nn.Module:
    return peers.timm_model(VARIANT, WINDOWS, seed=3).eval()


def _ours(**kwargs) -> Swinv2Backbone:
    return Swinv2Backbone(**peers.ours(VARIANT, WINDOWS, out_norm=False, **kwargs)).eval()


def test_timm_state_dict_loads_into_a_backbone_and_reproduces_timm(timm_model, caplog):
    model = _ours()
    with caplog.at_level("INFO", logger="swinv2_backbone"):
        result = model.load_state_dict(timm_model.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert "load_state_dict (the backbone): timm checkpoint" in caplog.text
    x = peers.image(seed=1)
    with torch.no_grad():
        got = model(x)
    want, _ = peers.timm_features(timm_model, x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0.0, atol=1e-4)


def test_under_a_prefix_only_the_backbone_part_is_adapted(timm_model):
    holder = nn.Module()
    holder.backbone = _ours()
    holder.neck = nn.Linear(4, 4)
    neck = nn.Linear(4, 4)
    state = {**{f"backbone.{k}": v for k, v in timm_model.state_dict().items()},
             **{f"neck.{k}": v for k, v in neck.state_dict().items()}}
    result = holder.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(holder.neck.weight, neck.weight)
    assert torch.equal(holder.backbone.patch_embed.proj.weight,
                       timm_model.patch_embed.proj.weight)


def test_our_own_layout_keeps_load_state_dicts_strictness():
    source, model = _ours(), _ours()
    state = source.state_dict()
    model.load_state_dict(state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Unexpected key.*layers.0.blocks.0.attn.extra"):
        model.load_state_dict({**state, "layers.0.blocks.0.attn.extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Missing key.*patch_embed.proj.weight"):
        model.load_state_dict({k: v for k, v in state.items() if k != "patch_embed.proj.weight"})
    # keys of no known layout are left to load_state_dict too
    with pytest.raises(RuntimeError, match="Unexpected key.*something.else"):
        model.load_state_dict({"something.else": torch.zeros(1)})


def test_foreign_weights_that_do_not_fit_are_refused_by_name(timm_model):
    wider = Swinv2Backbone(**peers.ours(peers.Variant("wide", 64, VARIANT.depths, VARIANT.num_heads),
                                        WINDOWS, out_norm=False))
    with pytest.raises(CheckpointError, match="does not fit the model.*embed_dims 32"):
        wider.load_state_dict(timm_model.state_dict())
