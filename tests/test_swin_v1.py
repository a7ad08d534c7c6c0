"""Swin V1 (:class:`swinv2_backbone.SwinBackbone`): shapes, outputs, freezing, checkpointing, errors,
its bias-table windows (its fast paths are in ``test_fast_paths.py``); its checkpoints (native, official, SimMIM, Hugging Face
directories of every class, with parity to HF on random weights) and the version checks."""
import logging

import pytest
import torch
import transformers  # a test dependency, installed by tools/setup_env.sh

from swinv2_backbone import SwinBackbone, Swinv2Backbone
from swinv2_backbone.checkpoint import CheckpointError, convert_checkpoint, load_pretrained
from swinv2_backbone.checkpoint.build import build_backbone
from swinv2_backbone.models.attention import central_bias_table, resize_bias_table
from swinv2_backbone.models.ops import relative_position_index
from kit import SMALL


def random_model(**kw) -> SwinBackbone:
    torch.manual_seed(0)
    model = SwinBackbone(**{**SMALL, **kw})
    for p in model.parameters():  # break the symmetry of the default init
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def test_presets_and_parameter_names():
    torch.manual_seed(0)  # one draw: |table| < 0.1 (5 std) fails for about 1 in 80 unseeded draws
    model = SwinBackbone(arch="tiny")
    assert (model.embed_dims, model.depths, model.num_heads) == (96, (2, 2, 6, 2), (3, 6, 12, 24))
    assert model.window_size == (7, 7, 7, 7) and model.version == 1
    names = set(dict(model.named_parameters()))
    block = "layers.0.blocks.0."
    assert {block + k for k in ("norm1.weight", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                                "attn.relative_position_bias_table", "norm2.bias",
                                "mlp.fc1.weight", "mlp.fc2.bias")} <= names
    assert model.layers[0].blocks[0].attn.relative_position_bias_table.shape == (13 * 13, 3)
    assert model.layers[0].downsample.norm.weight.shape == (4 * 96,)  # V1: LayerNorm(4C) first
    assert model.layers[0].downsample.reduction.weight.shape == (192, 384)
    assert "layers.3.downsample.norm.weight" not in names and "norm3.weight" in names
    assert not any("logit_scale" in n or "cpb_mlp" in n for n in names)
    tables = torch.cat([t.flatten() for t in model.bias_tables()])
    # truncated normal, std 0.02 (cut at +-2 absolute, as the official code): the default 0 is gone
    assert abs(tables.mean()) < 2e-3 and 0.018 < tables.std() < 0.022 and tables.abs().max() < 0.1
    assert SwinBackbone(arch="base").embed_dims == 128 and SwinBackbone(arch="large").num_heads[0] == 6


@pytest.mark.parametrize("size", [(33, 47), (64, 64), (7, 100)])
def test_shapes_and_strides_at_odd_sizes(size):
    model = random_model(out_features=("stem", "stage1", "stage2", "stage3", "stage4")).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert model.strides == [4, 4, 8, 16, 32] and model.out_channels == [16, 16, 32, 64, 128]
    for out, stride, channels in zip(outs, model.strides, model.out_channels):
        assert out.shape == (2, channels, -(-size[0] // stride), -(-size[1] // stride))
        assert torch.isfinite(out).all()


def test_out_indices_build_only_the_stages_needed():
    model = random_model(out_indices=(1,))
    assert len(model.layers) == 2 and model.layers[1].downsample is None
    assert model.out_features == ("stage2",) and hasattr(model, "norm1") and not hasattr(model, "norm0")
    assert random_model(out_features=("stage4",), out_norm=False).out_indices == (3,)


def test_frozen_stages_stay_frozen_after_train():
    model = random_model(frozen_stages=2, use_abs_pos_embed=True, use_mask_token=True).train()
    assert not model.patch_embed.training and not model.layers[1].training and model.layers[2].training
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert "absolute_pos_embed" in frozen and "mask_token" in frozen and "norm1.weight" in frozen
    assert "layers.1.blocks.1.attn.relative_position_bias_table" in frozen
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("layers.2."))


def test_with_cp_gives_the_same_outputs_and_gradients():
    x = torch.randn(1, 3, 40, 56)
    results = []
    for with_cp in (False, True):
        model = random_model(with_cp=with_cp, drop_path_rate=0.0)
        outs = model(x)
        grads = torch.autograd.grad(sum(o.square().sum() for o in outs), list(model.parameters()))
        results.append((outs, grads))
    (ref, ref_grads), (got, got_grads) = results
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_errors_name_what_is_allowed():
    with pytest.raises(TypeError, match="pretrained_window_sizes.*Swinv2Backbone argument.*set_window_size"):
        SwinBackbone(pretrained_window_sizes=(12, 12, 12, 6))
    with pytest.raises(TypeError, match="SwinBackbone got unknown.*did you mean 'window_size'"):
        SwinBackbone(window_sizes=7)
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        SwinBackbone(window_size=0)
    with pytest.raises(ValueError, match="SwinBackbone expects 3 input channels"):
        random_model()(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"SwinBackbone\(use_mask_token=True\)"):
        random_model()(torch.randn(1, 3, 32, 32), torch.zeros(1, 8, 8, dtype=torch.bool))


def test_central_crop_is_the_smaller_windows_table():
    torch.manual_seed(0)
    big = torch.randn(13 * 13, 2)  # window 7
    small = central_bias_table(big, 4)
    # offset (dy, dx) of window w sits at row (dy + w-1) * (2w-1) + dx + w-1 of its table
    for dy, dx in [(0, 0), (-3, 3), (2, -1), (3, 3)]:
        assert torch.equal(small[(dy + 3) * 7 + dx + 3], big[(dy + 6) * 13 + dx + 6])
    assert central_bias_table(big, 7) is big
    with pytest.raises(ValueError, match="larger than the bias table's window 7"):
        central_bias_table(big, 8)


def test_small_map_rule_uses_the_central_crop():
    """A map not larger than the window shrinks it (official rule): the result is the model whose
    windows and tables are that smaller window's, the tables cropped."""
    model = random_model(window_size=7, small_map="official").eval()
    x = torch.randn(1, 3, 20, 20)  # stage 1 is 5 x 5: window 5 everywhere, no shift
    small = random_model(window_size=5, small_map="official").eval()
    small.load_state_dict({k: central_bias_table(v, 5) if k.endswith("bias_table") else v
                           for k, v in model.state_dict().items()})
    with torch.no_grad():
        for a, b in zip(model(x), small(x)):
            torch.testing.assert_close(a, b)


def test_set_window_size_resizes_the_tables_bicubically():
    model = random_model(window_size=4)
    table = model.layers[2].blocks[1].attn.relative_position_bias_table.detach().clone()
    model.set_window_size((6, 6, 5, 3))
    assert model.window_size == (6, 6, 5, 3)
    block = model.layers[2].blocks[1]
    assert block.window_size == 5 and block.attn.window_size == 5
    got = block.attn.relative_position_bias_table
    assert isinstance(got, torch.nn.Parameter) and got.shape == (81, 2)
    want = torch.nn.functional.interpolate(table.t().reshape(1, 2, 7, 7), size=(9, 9), mode="bicubic",
                                           align_corners=False).reshape(2, 81).t()
    torch.testing.assert_close(got.detach(), want)
    assert torch.equal(resize_bias_table(got, 5), got)  # same window: unchanged
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 16, 16, 16)


def test_set_window_size_takes_the_v2_signature_and_refuses_pretrained_windows():
    """One ``set_window_size`` signature for both versions: V1 takes ``pretrained_window_sizes`` of 0
    (what it reports, :attr:`pretrained_window_sizes`) and refuses other values, saying why."""
    import inspect

    assert inspect.signature(SwinBackbone.set_window_size) == inspect.signature(
        Swinv2Backbone.set_window_size)
    model = random_model(window_size=4)
    assert model.pretrained_window_sizes == (0, 0, 0, 0) and model.bias_windows() == (4, 4, 4, 4)
    table = model.layers[0].blocks[0].attn.relative_position_bias_table
    model.set_window_size(pretrained_window_sizes=0)  # nothing to change
    assert model.window_size == (4, 4, 4, 4)
    assert model.layers[0].blocks[0].attn.relative_position_bias_table is table
    with pytest.raises(ValueError, match="no pretrained_window_sizes other than 0.*bias tables"):
        model.set_window_size(window_size=6, pretrained_window_sizes=(8, 8, 8, 0))
    assert model.window_size == (4, 4, 4, 4)  # refused before anything changed
    model.set_bias_windows((6, 5))  # what a checkpoint's windows set: V1's windows
    assert model.window_size == (6, 5, 4, 4) and model.bias_window_argument == "window_size"


# ---------------------------------------------------------------------------- checkpoints
HF_ARCH = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7, image_size=224)
OURS_ARCH = dict(arch=None, embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def hf_dir(tmp_path, kind: str, **config):
    """An HF ``kind`` model with seeded random weights, saved with ``save_pretrained``."""
    torch.manual_seed(0)
    model = getattr(transformers, kind)(transformers.SwinConfig(**{**HF_ARCH, **config})).eval()
    with torch.no_grad():  # non-trivial weights: a mapping error cannot hide behind defaults
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / kind
    model.save_pretrained(path)
    return model, path


def tokens_to_nchw(tokens: torch.Tensor, hw) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *hw)


# HF SwinBackbone partitions and shifts at every size (always_partition=True, unlike SwinModel),
# which is small_map='mmdet': also where stage 4 is one window (7x7 at 224 px)
@pytest.mark.parametrize("size", [(224, 224), (256, 352)])
def test_hf_swin_backbone_feature_maps(tmp_path, size):
    hf, path = hf_dir(tmp_path, "SwinBackbone", out_features=STAGES)
    ours = build_backbone(dict(small_map="mmdet"), checkpoint=path).eval()
    assert type(ours) is SwinBackbone and ours.window_size == (7, 7, 7, 7)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        want, got = hf(x).feature_maps, ours(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(224, 224), (224, 320), (320, 224)])  # last map 7x7, 7x10, 10x7
def test_hf_swin_model_and_classifier_logits(tmp_path, size):
    hf, path = hf_dir(tmp_path, "SwinForImageClassification", num_labels=5)
    converted = convert_checkpoint(path)
    assert (converted.version, converted.format, converted.model_type) == (1, "hf", "SwinBackbone")
    assert converted.backbone_cfg()["type"] == "SwinBackbone"
    ours = SwinBackbone(**OURS_ARCH, out_indices=(3,), small_map="hf").eval()
    load_pretrained(ours, converted)
    x = torch.randn(2, 3, *size)
    head = converted.heads["classification head"]
    with torch.no_grad():
        want = hf(x).logits
        last = ours(x)[0]
        got = torch.nn.functional.linear(last.mean((2, 3)), head["head.weight"], head["head.bias"])
        final = hf.swin(x).last_hidden_state
    torch.testing.assert_close(last, tokens_to_nchw(final, last.shape[2:]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_hf_masked_image_modeling_takes_the_mask_token(tmp_path):
    hf, path = hf_dir(tmp_path, "SwinForMaskedImageModeling")
    ours = SwinBackbone(**OURS_ARCH, out_indices=(3,), use_mask_token=True, small_map="hf").eval()
    converted = load_pretrained(ours, path)
    assert set(converted.heads) == {"mask token", "masked-image-modeling head"}
    x = torch.randn(1, 3, 224, 224)
    mask = torch.rand(1, 56, 56) < 0.5
    with torch.no_grad():
        want = hf.swin(x, bool_masked_pos=mask.flatten(1)).last_hidden_state
        got = ours(x, mask)[0]
    torch.testing.assert_close(got, tokens_to_nchw(want, (7, 7)), rtol=1e-4, atol=1e-4)


def official_v1(model: SwinBackbone, simmim: bool = False) -> dict:
    """The official Microsoft layout of ``model``'s weights: buffers, final ``norm``, ``head``
    (SimMIM: ``encoder.`` prefix, mask token and decoder instead of the head)."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("norm")}
    last = len(model.layers) - 1
    state.update({"norm.weight": model.state_dict()[f"norm{last}.weight"],
                  "norm.bias": model.state_dict()[f"norm{last}.bias"]})
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            state[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = relative_position_index(
                block.window_size)
        state[f"layers.{i}.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)
    if not simmim:
        return {"model": {**state, "head.weight": torch.randn(10, 256), "head.bias": torch.zeros(10)}}
    state = {"encoder." + k: v for k, v in state.items()}
    return {"model": {**state, "encoder.mask_token": torch.randn(1, 1, 32),
                      "decoder.0.weight": torch.randn(32 * 16, 256, 1, 1),
                      "decoder.0.bias": torch.zeros(32 * 16)}}


@pytest.mark.parametrize("simmim", [False, True])
def test_official_and_native_round_trips(tmp_path, simmim):
    source = random_model(**{**SMALL, **OURS_ARCH}).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want = source(x)
    torch.save(official_v1(source, simmim), tmp_path / "official.pth")
    torch.save(source.state_dict(), tmp_path / "native.pth")
    for name, fmt in (("official.pth", "simmim" if simmim else "official"), ("native.pth", "native")):
        target = SwinBackbone(**OURS_ARCH)
        converted = load_pretrained(target, tmp_path / name)
        assert (converted.format, converted.version, converted.window_sizes) == (fmt, 1, (7,) * 4)
        with torch.no_grad():
            got = target.eval()(x)
        # the official layout holds the last stage's norm only (the others keep their defaults)
        for a, b in list(zip(got, want))[0 if name == "native.pth" else -1:]:
            assert torch.equal(a, b)


def test_version_confusion_is_refused_with_the_class_to_use(tmp_path):
    torch.save(random_model().state_dict(), tmp_path / "v1.pth")
    torch.save(Swinv2Backbone(**{**SMALL, "window_size": 4}).state_dict(), tmp_path / "v2.pth")
    with pytest.raises(CheckpointError, match="Swin V1 checkpoint.*use SwinBackbone / type='SwinBackbone'"):
        load_pretrained(Swinv2Backbone(**SMALL), tmp_path / "v1.pth")
    with pytest.raises(CheckpointError, match="Swin V2 checkpoint.*use Swinv2Backbone / type='Swinv2Backbone'"):
        load_pretrained(SwinBackbone(**SMALL), tmp_path / "v2.pth")
    with pytest.raises(ValueError, match="Swin V1 checkpoint; the config says type='Swinv2Backbone'"):
        build_backbone(dict(type="Swinv2Backbone"), checkpoint=tmp_path / "v1.pth")
    assert type(build_backbone(checkpoint=tmp_path / "v1.pth")) is SwinBackbone
    assert type(build_backbone(checkpoint=tmp_path / "v2.pth")) is Swinv2Backbone


def test_window_transfer_resizes_the_tables_with_a_warning(tmp_path, caplog):
    source = random_model()  # window 4
    torch.save(source.state_dict(), tmp_path / "w4.pth")
    target = SwinBackbone(**{**SMALL, "window_size": (6, 6, 4, 4)})
    with caplog.at_level(logging.WARNING, logger="swinv2_backbone"):
        load_pretrained(target, tmp_path / "w4.pth")
    assert "resized bicubically (stage 1: 4 -> 6, stage 2: 4 -> 6)" in caplog.text
    assert "window_size to the checkpoint's (4, 4, 4, 4)" in caplog.text
    key = "layers.1.blocks.0.attn.relative_position_bias_table"
    torch.testing.assert_close(target.state_dict()[key], resize_bias_table(source.state_dict()[key], 6))
    assert torch.equal(target.state_dict()["layers.2.blocks.0.attn.relative_position_bias_table"],
                       source.state_dict()["layers.2.blocks.0.attn.relative_position_bias_table"])


def test_window_transfer_can_take_the_checkpoints_windows_instead(tmp_path, caplog):
    """``pretrained_window_sizes='checkpoint'`` (the option V2 has for its coordinate windows): the
    V1 model takes the checkpoint's windows, loads the tables as trained and warns about nothing."""
    source = random_model()  # window 4
    torch.save(source.state_dict(), tmp_path / "w4.pth")
    target = SwinBackbone(**{**SMALL, "window_size": (6, 6, 4, 4)})
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(target, tmp_path / "w4.pth", pretrained_window_sizes="checkpoint")
    assert target.window_size == (4, 4, 4, 4)
    assert "window_size set from the checkpoint: (4, 4, 4, 4)" in caplog.text
    assert "resized" not in caplog.text
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    x = torch.randn(1, 3, 72, 88, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(target.eval()(x), source.eval()(x)))
