"""Swin V1 (:class:`swinv2_backbone.SwinBackbone`): shapes, outputs, freezing, checkpointing, errors,
its bias-table windows and fast paths, on the machinery it shares with Swinv2Backbone."""
import dataclasses

import pytest
import torch

from swinv2_backbone import SwinBackbone
from swinv2_backbone.models import fast, kernels
from swinv2_backbone.models.attention import central_bias_table, resize_bias_table
from swinv2_backbone.models.fast import chunked

SMALL = dict(arch=None, embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)


def random_model(**kw) -> SwinBackbone:
    torch.manual_seed(0)
    model = SwinBackbone(**{**SMALL, **kw})
    for p in model.parameters():  # break the symmetry of the default init
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def test_presets_and_parameter_names():
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
    grads = []
    for with_cp in (False, True):
        model = random_model(with_cp=with_cp, drop_path_rate=0.0)
        sum(o.square().sum() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        with torch.no_grad():
            outs = model(x)
        if with_cp:
            for a, b in zip(outs, first):
                torch.testing.assert_close(a, b)
        first = outs
    for a, b in zip(*grads):
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


@pytest.fixture
def alone():
    def use(**ops):
        fast.use(dataclasses.replace(kernels.REFERENCE, **ops))
    yield use
    fast.set_fast_paths(True)


@pytest.mark.parametrize("chunk_tokens", [16, 4096])  # chunks crossing images, or one chunk
@pytest.mark.parametrize("size, rule", [((52, 76), "pad"), ((52, 76), "official"), ((20, 36), "pad"),
                                        ((52, 76), "timm")])
def test_chunked_inference_equals_the_reference(monkeypatch, alone, chunk_tokens, size, rule):
    monkeypatch.setattr(chunked, "CHUNK_TOKENS", chunk_tokens)
    model = random_model(small_map=rule).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        with fast.fast_paths(False):
            ref = model(x)
        alone(block=chunked.block_inference)
        got = model(x)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(64, 64), (52, 76)])
def test_all_fast_paths_equal_the_reference_with_training_gradients(size):
    model = random_model(drop_path_rate=0.0)
    x = torch.randn(2, 3, *size)
    results = []
    for enabled in (False, True):
        with fast.fast_paths(enabled):
            outs = model(x)
            grads = torch.autograd.grad(sum((o * o).sum() for o in outs), list(model.parameters()))
            with torch.no_grad():
                evals = model.eval()(x)
            model.train()
        results.append((outs, grads, evals))
    (ref, ref_grads, ref_eval), (got, got_grads, got_eval) = results
    for a, b in zip(got + got_eval, ref + ref_eval):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(got_grads, ref_grads):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-6
