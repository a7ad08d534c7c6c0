"""Swinv2Backbone behaviour: shapes, output selection, freezing, checkpointing, precision, state dict."""
import math
from typing import Dict, List, Tuple

import pytest
import torch

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models import fast
from swinv2_backbone.models.attention import WindowAttention
from swinv2_backbone.models.blocks import recompute_plan, window_and_shift
from swinv2_backbone.models.ops import MASK_VALUE
from capabilities import needs_cpu_fp16
from kit import SMALL


def small(**kw) -> Swinv2Backbone:
    torch.manual_seed(0)
    return Swinv2Backbone(**{**SMALL, **kw})


@pytest.mark.parametrize("hw", [(112, 137), (224, 320), (256, 256), (33, 17)])
def test_output_shapes_follow_ceil_of_strides(hw):
    model = small().eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert model.out_channels == [16, 32, 64, 128]
    assert model.strides == [4, 8, 16, 32]
    assert len(outs) == 4
    for out, c, s in zip(outs, model.out_channels, model.strides):
        assert out.shape == (2, c, math.ceil(hw[0] / s), math.ceil(hw[1] / s))
        assert out.is_contiguous()
        assert torch.isfinite(out).all()


def test_tiny_preset_matches_official_sizes():
    model = Swinv2Backbone(arch="tiny")
    assert model.out_channels == [96, 192, 384, 768]
    assert model.depths == (2, 2, 6, 2) and model.num_heads == (3, 6, 12, 24)
    # 27.58 M: the official SwinV2-T encoder (28.35 M with head) minus the head plus 3 output norms.
    n = sum(p.numel() for p in model.parameters())
    assert n == 27_579_498
    base = Swinv2Backbone(arch="base", depths=(2, 2, 2, 2))  # preset overridden by depths
    assert base.out_channels == [128, 256, 512, 1024] and base.depths == (2, 2, 2, 2)


@pytest.mark.parametrize("kw, names, channels, strides", [
    (dict(), ("stage1", "stage2", "stage3", "stage4"), [16, 32, 64, 128], [4, 8, 16, 32]),
    (dict(out_indices=(1, 2, 3)), ("stage2", "stage3", "stage4"), [32, 64, 128], [8, 16, 32]),
    (dict(out_indices=(-1,)), ("stage4",), [128], [32]),
    (dict(out_indices=(0, -2)), ("stage1", "stage3"), [16, 64], [4, 16]),
    (dict(out_features=("stem", "stage2")), ("stem", "stage2"), [16, 32], [4, 8]),
    (dict(out_features=("stem",)), ("stem",), [16], [4]),
    (dict(out_indices=(0, 3), out_features=("stage1", "stage4")), ("stage1", "stage4"), [16, 128],
     [4, 32]),
])
def test_output_selection(kw, names, channels, strides):
    model = small(**kw).eval()
    assert model.out_features == names
    assert model.out_channels == channels and model.strides == strides
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == channels
    assert [64 // o.shape[2] for o in outs] == strides


def test_feature_info_records_every_output():
    model = small(out_features=("stem", "stage2", "stage4"))
    assert [(f.name, f.stage, f.channels, f.stride) for f in model.feature_info] == [
        ("stem", None, 16, 4), ("stage2", 1, 32, 8), ("stage4", 3, 128, 32)]
    assert model.out_indices == (1, 3)
    with pytest.raises(AttributeError):
        model.feature_info[0].stride = 2  # frozen


def test_set_window_size_changes_every_block_and_matches_a_model_built_with_it():
    model = small(out_indices=(0, 1, 2)).eval()
    want = small(out_indices=(0, 1, 2), window_size=(3, 4, 5, 6),
                 pretrained_window_sizes=(8, 0, 8, 8)).eval()
    model.set_window_size(window_size=(3, 4, 5, 6), pretrained_window_sizes=(8, 0, 8, 8))
    assert model.window_size == (3, 4, 5, 6) and model.pretrained_window_sizes == (8, 0, 8, 8)
    assert model.bias_windows() == (8, 4, 8)  # built stages only; 0 normalises by the window
    assert [(b.window_size, b.attn.pretrained_window_size) for b in model.layers[2].blocks] == [
        (5, 8), (5, 8)]
    x = torch.randn(1, 3, 72, 88)
    with torch.no_grad():
        for got, ref in zip(model(x), want(x)):
            assert torch.equal(got, ref)
    model.set_window_size(pretrained_window_sizes=4)  # the windows stay
    assert model.window_size == (3, 4, 5, 6) and model.bias_windows() == (4, 4, 4)
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        model.set_window_size(window_size=0)
    with pytest.raises(ValueError, match="pretrained_window_sizes must be"):
        model.set_window_size(pretrained_window_sizes=(1, 2))


def test_selected_outputs_equal_full_model_outputs():
    full = small().eval()
    part = small(out_indices=(1, 2)).eval()
    part.load_state_dict({k: v for k, v in full.state_dict().items() if k in part.state_dict()})
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        a, b = full(x), part(x)
    torch.testing.assert_close(b[0], a[1], rtol=0, atol=0)
    torch.testing.assert_close(b[1], a[2], rtol=0, atol=0)


def test_unselected_stages_and_norms_are_not_built():
    model = small(out_indices=(0, 1))
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("layers.2", "layers.3", "norm2", "norm3")) for n in names)
    assert "layers.0.downsample.reduction.weight" in names
    assert not any(n.startswith("layers.1.downsample") for n in names)  # nothing consumes it
    assert {"norm0.weight", "norm1.weight"} <= names
    assert model.stages is model.layers  # 'layers': the official name parameter names keep
    assert (model.num_built_stages, model.num_stages, model.out_norm_stages) == (2, 4, (0, 1))
    assert model.mlp_hidden == (64, 128) and model.cpb_hidden == 512
    raw = small(out_norm=False)
    assert not any(n.startswith("norm") for n, _ in raw.named_parameters())
    assert raw.out_norm_stages == () and raw.num_built_stages == 4


@pytest.mark.parametrize("kw, match", [
    (dict(out_indices=(4,)), r"out of range.*\[0, 1, 2, 3\]"),
    (dict(out_indices=(-5,)), r"out of range"),
    (dict(out_indices=(1, 1)), r"duplicates"),
    (dict(out_indices=(2, 1)), r"stage order"),
    (dict(out_indices=(-1, 0)), r"stage order"),
    (dict(out_indices=()), r"empty"),
    (dict(out_indices=3), r"sequence of stage indices"),
    (dict(out_indices=(True,)), r"sequence of stage indices"),
    (dict(out_features=("stage5",)), r"unknown out_features \['stage5'\].*'stem', 'stage1'"),
    (dict(out_features="stage1"), r"sequence of names"),
    (dict(out_features=("stage2", "stem")), r"stage order"),
    (dict(out_features=("stage1", "stage1")), r"duplicates"),
    (dict(out_indices=(0, 1), out_features=("stage1", "stage3")), r"out_features selects"),
    (dict(out_indices=(0,), out_features=("stem", "stage1")), r"out_features selects"),
])
def test_output_selection_errors_name_valid_choices(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(arch="huge"), r"unknown arch 'huge'.*base.*large.*small.*tiny"),
    (dict(depths=(2, 2, 2)), r"equal length"),
    (dict(num_heads=(3, 2, 2, 4)), r"stage 1: channels 16 .* not divisible by num_heads 3"),
    (dict(window_size=0), r"window_size must be >= 1"),
    (dict(window_size=(4, 4)), r"one per stage"),
    (dict(pretrained_window_sizes=-1), r"pretrained_window_sizes must be >= 0"),
    (dict(drop_path_rate=-0.1), r"drop_path_rate must be in \[0, 1\)"),
    (dict(frozen_stages=5), r"frozen_stages must be an int in \[-1, 4\]"),
    (dict(small_map="shrink"), r"small_map must be one of \('pad', 'official', 'hf', 'timm', 'mmdet'\)"),
    (dict(use_sdpa="yes"), r"use_sdpa must be"),
])
def test_bad_configuration_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw)


def test_unknown_keyword_is_an_error():
    with pytest.raises(TypeError, match="window_szie"):
        small(window_szie=7)


@pytest.mark.parametrize("x, exc, match", [
    (torch.randn(3, 32, 32), ValueError, r"4-D \(N, C, H, W\)"),
    (torch.randn(1, 1, 32, 32), ValueError, r"expects 3 input channels, got 1"),
    (torch.ones(1, 3, 32, 32, dtype=torch.int64), TypeError, r"floating-point tensor, got torch.int64"),
    (torch.randn(1, 3, 0, 32), ValueError, r"non-empty"),
    (torch.randn(0, 3, 32, 32), ValueError, r"non-empty"),
    ([[1.0]], TypeError, r"expects a torch.Tensor"),
])
def test_bad_input_errors(x, exc, match):
    with pytest.raises(exc, match=match):
        small()(x)


def test_train_returns_model_and_frozen_stages_stay_frozen():
    model = small(frozen_stages=2)
    assert model.train() is model
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.norm0, model.norm1]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in (model.layers[2], model.layers[3], model.norm2, model.norm3):
        assert module.training
        assert all(p.requires_grad for p in module.parameters())
    model.eval().train()
    assert not model.layers[1].training and model.layers[2].training
    out = model(torch.randn(1, 3, 64, 64))
    sum(o.sum() for o in out).backward()
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert all(p.grad is not None for p in model.layers[2].parameters())


def test_frozen_stage_zero_freezes_patch_embed_and_abs_pos_embed_only():
    model = small(frozen_stages=0, use_abs_pos_embed=True, pretrain_img_size=64).train()
    assert not model.patch_embed.training
    assert not model.absolute_pos_embed.requires_grad
    assert model.layers[0].training and all(p.requires_grad for p in model.layers[0].parameters())


def test_with_cp_gives_same_outputs_and_gradients():
    ref = small(drop_path_rate=0.0).train()
    cp = small(drop_path_rate=0.0, with_cp=True).train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 48, 40)
    outs_ref, outs_cp = ref(x), cp(x)
    for a, b in zip(outs_ref, outs_cp):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    sum((o ** 2).mean() for o in outs_ref).backward()
    sum((o ** 2).mean() for o in outs_cp).backward()
    for (name, p), q in zip(ref.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("sizes, recorded, want", [
    # SwinV2-T: tokens x channels halve per stage; stage 4 and half of stage 3 fit in one stage-1 block
    ([4, 4, 2, 2] + [1] * 6 + [0.5, 0.5], [True] * 12, [True] * 7 + [False] * 5),
    # stem and stage 1 frozen: the budget is a stage-2 block
    ([4, 4, 2, 2] + [1] * 6 + [0.5, 0.5], [False] * 2 + [True] * 10, [False] * 2 + [True] * 7 + [False] * 3),
    ([3.0], [True], [False]),  # a single block: its activations are held once either way
    ([2.0, 2.0], [True, True], [True, False]),
    ([1.0, 5.0], [True, True], [True, False]),  # the largest block is the trailing one
    ([2.0, 1.0, 1.0, 1.0], [True] * 4, [True, True, False, False]),
    ([1.0, 1.0], [False, False], [False, False]),  # nothing records a graph
    ([], [], []),
])
def test_recompute_plan_leaves_out_the_trailing_blocks_within_one_block(sizes, recorded, want):
    assert recompute_plan(sizes, recorded) == want


def test_recompute_plan_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 sizes for 1 blocks"):
        recompute_plan([1.0, 2.0], [True])


def test_backbone_recompute_plan_follows_frozen_stages_and_map_sizes():
    """``with_cp``'s plan as the backbone computes it: tokens x channels of every block from the
    actual map sizes (odd sizes round up), recorded once a gradient reaches it."""
    model = small(with_cp=True, depths=(2, 2, 6, 2)).train()
    stem = torch.zeros(1, 64, 40, model.embed_dims, requires_grad=True)
    assert model._recompute_plan(stem) == [[True, True], [True, True], [True] * 3 + [False] * 3,
                                            [False, False]]
    frozen = small(with_cp=True, depths=(2, 2, 6, 2), frozen_stages=1).train()
    assert frozen._recompute_plan(stem.detach()) == [[False, False], [True, True], [True] * 5 + [False],
                                                      [False, False]]


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 4), (9, 1)])
@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("rule", ["pad", "official"])
def test_tiny_inputs_and_window_one_are_finite(hw, window, rule):
    model = small(window_size=window, small_map=rule).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    for out, s in zip(outs, model.strides):
        assert out.shape[2:] == (math.ceil(hw[0] / s), math.ceil(hw[1] / s))
        assert torch.isfinite(out).all()


def test_window_one_position_bias_is_finite():
    model = small(window_size=1, pretrained_window_sizes=1)
    bias = model.layers[0].blocks[0].attn.position_bias(1)
    assert bias.shape == (1, 1, 1) and torch.isfinite(bias).all()


def test_window_and_shift_rules():
    # 'pad': window kept; a shift only along axes whose padded length holds > 1 window.
    assert window_and_shift((64, 64), 8, True, "pad") == (8, (4, 4))
    assert window_and_shift((8, 8), 8, True, "pad") == (8, (0, 0))
    assert window_and_shift((7, 10), 8, True, "pad") == (8, (0, 4))
    assert window_and_shift((64, 64), 8, False, "pad") == (8, (0, 0))
    # 'official': window = min(H, W) and no shift when the map is not larger than the window.
    assert window_and_shift((8, 8), 16, True, "official") == (8, (0, 0))
    assert window_and_shift((7, 10), 8, True, "official") == (7, (0, 0))
    assert window_and_shift((16, 16), 8, True, "official") == (8, (4, 4))
    # 'timm': shifts like 'pad' (its blocks roll before padding); a side < window shrinks it.
    assert window_and_shift((10, 8), 8, True, "timm") == (8, (4, 0))
    assert window_and_shift((8, 8), 8, True, "timm") == (8, (0, 0))
    assert window_and_shift((4, 4), 8, True, "timm") == (4, (0, 0))
    assert window_and_shift((7, 10), 8, True, "timm") == (7, (0, 0))


def test_rules_agree_at_trained_resolutions():
    # At 256 px with window 8, or windows (16, 16, 16, 8), the two rules must give identical outputs.
    for windows in (8, (16, 16, 16, 8)):
        pad = small(window_size=windows).eval()
        off = small(window_size=windows, small_map="official").eval()
        off.load_state_dict(pad.state_dict())
        x = torch.randn(1, 3, 256, 256)
        with torch.no_grad():
            for a, b in zip(pad(x), off(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def attended(model: Swinv2Backbone, hw: Tuple[int, int]) -> List[Tuple[int, bool]]:
    """Per block, in order: the window side its attention got in one forward of an ``hw`` image,
    and whether its mask separated shifted regions (entries near ``MASK_VALUE``; the position bias
    is within +-16). A block that attends a chunk of windows at a time counts once."""
    seen: Dict[WindowAttention, Tuple[int, bool]] = {}

    def record(module: WindowAttention, args: tuple) -> None:
        windows, mask = args
        side = math.isqrt(windows.shape[-2])
        assert side * side == windows.shape[-2]
        earlier_side, earlier_shifted = seen.get(module, (side, False))
        assert earlier_side == side
        seen[module] = (side, earlier_shifted or bool((mask < MASK_VALUE / 2).any()))

    attentions = [m for m in model.modules() if isinstance(m, WindowAttention)]
    hooks = [m.register_forward_pre_hook(record) for m in attentions]
    try:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *hw))
    finally:
        for hook in hooks:
            hook.remove()
    assert outs[0].shape[2:] == (math.ceil(hw[0] / 4), math.ceil(hw[1] / 4))
    return [seen[m] for m in attentions]


def test_window_is_decided_per_forward_not_at_construction():
    """One model built with window 8 attends with the window and shift each forward's maps call
    for. 'pad': at 256 px (maps 64, 32, 16, 8) the second block of stages 1-3 shifts, stage 4's
    map is one window and does not; at 20 x 28 px (maps 5x7 .. 1x1) nothing shifts, the window
    stays 8 (padded). 'official': the window shrinks to the smaller side of a map not larger than
    it."""
    at_256 = [(8, False), (8, True)] * 3 + [(8, False)] * 2
    model = small(window_size=8).eval()
    assert attended(model, (256, 256)) == at_256
    assert attended(model, (20, 28)) == [(8, False)] * 8
    assert attended(model, (256, 256)) == at_256  # nothing kept from the forward before
    official = small(window_size=8, small_map="official").eval()
    assert attended(official, (256, 256)) == at_256
    assert attended(official, (20, 28)) == [(w, False) for w in (5, 5, 3, 3, 2, 2, 1, 1)]


def test_state_dict_has_no_buffers():
    model = small(use_abs_pos_embed=True)
    assert list(model.buffers()) == []
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}
    assert not any(k.endswith(("relative_coords_table", "relative_position_index", "attn_mask"))
                   for k in model.state_dict())


def test_absolute_pos_embed_is_interpolated_to_the_input():
    model = small(use_abs_pos_embed=True, pretrain_img_size=64).eval()
    with torch.no_grad():
        model.absolute_pos_embed.normal_()
        at_pretrain = model(torch.randn(1, 3, 64, 64))
        other = model(torch.randn(1, 3, 96, 72))
    assert at_pretrain[0].shape[2:] == (16, 16) and other[0].shape[2:] == (24, 18)
    assert all(torch.isfinite(o).all() for o in other)
    # at the pretraining grid the embedding is added as is (no resampling)
    embed = model._abs_pos_embed((16, 16), torch.float32)
    torch.testing.assert_close(embed.reshape(1, 256, -1), model.absolute_pos_embed)


def test_sdpa_and_explicit_attention_paths_agree():
    ref = small(use_sdpa="never").train()
    fused = small(use_sdpa="always").train()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 40, 56)
    a, b = ref(x), fused(x)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    sum(o.square().mean() for o in a).backward()
    sum(o.square().mean() for o in b).backward()
    for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_inference_mask_cache_follows_parameter_changes():
    model = small().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = model(x)
        again = model(x)
        for a, b in zip(first, again):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert model.layers[0].blocks[1].attn._mask_cache  # cached at inference
        model.layers[0].blocks[1].attn.cpb_mlp[2].weight.mul_(3.0)
        changed = model(x)
    assert not torch.equal(changed[0], first[0])
    fresh = small().eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)[0], changed[0], rtol=0, atol=0)


def test_training_does_not_use_the_cache_and_cpb_gets_gradients():
    model = small().train()
    model(torch.randn(1, 3, 64, 64))[0].sum().backward()
    attn = model.layers[0].blocks[1].attn
    assert not attn._mask_cache
    assert attn.cpb_mlp[0].weight.grad is not None and attn.logit_scale.grad is not None


@pytest.mark.isa
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.1),
                                        pytest.param(torch.float16, 0.02, marks=needs_cpu_fp16)])
def test_low_precision_models(dtype, tol):
    # 72x64 pads stage maps to the window: zero keys must not turn into NaN (fp16 normalize eps).
    # Worst stage (4) measured 0.081 in bf16 and 0.010 in fp16 (0.121 / 0.013 with bf16 logits).
    model = small().eval()
    x = torch.randn(1, 3, 72, 64)
    with torch.no_grad():
        ref = model(x)
        low = model.to(dtype)(x.to(dtype))
    for r, o in zip(ref, low):
        assert o.dtype == dtype and torch.isfinite(o).all()
        assert (o.float() - r).norm() / r.norm() < tol


@pytest.mark.isa
def test_bf16_autocast_forward_and_backward():
    model = small().train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = model(x)
        loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_drop_path_schedule_is_linear_over_all_blocks():
    model = small(drop_path_rate=0.3)
    rates = [b.drop_path.p for layer in model.layers for b in layer.blocks]
    assert rates == pytest.approx([0.3 * i / 7 for i in range(8)])


def test_pretrained_and_init_cfg_are_exclusive():
    with pytest.raises(ValueError, match="either pretrained or init_cfg"):
        small(pretrained="a.pth", init_cfg=dict(type="Pretrained", checkpoint="b.pth"))


@pytest.mark.parametrize("fast_paths", [True, False])
def test_v2_runs_in_float64_and_agrees_with_float32(fast_paths):
    """Cosine attention's normalising factor is computed in fp64 for fp64 inputs (capping an fp32
    factor at fp64's largest value overflowed)."""
    torch.manual_seed(0)
    model = Swinv2Backbone(**SMALL).eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad(), fast.fast_paths(fast_paths):
        want = model(x)
        got = model.double()(x.double())
    for g, w in zip(got, want):
        assert g.dtype == torch.float64 and (g.float() - w).abs().max() < 1e-4
