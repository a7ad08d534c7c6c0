"""Checkpoint adapters: every source format loads into Swinv2Backbone through the public paths
(``init_cfg``/``pretrained`` + ``init_weights``, ``convert_checkpoint``, ``load_pretrained``) and
reproduces the features of the implementation that wrote it, max abs diff <= 1e-4 per stage at 256
px, for 'tiny' and a wider variant ('base' widths and heads, depth 2 per stage), at window 8 and at
windows (16, 16, 16, 8) with pretrained_window_sizes (12, 12, 12, 6)."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

import numpy as np
import pytest
import torch

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint import CheckpointError, FORMATS, convert_checkpoint, load_pretrained
from swinv2_backbone.checkpoint.mmpretrain import unfold_to_official
from swinv2_backbone.checkpoint.native import Structure
from swinv2_backbone.testing import peers

TOL = 1e-4
CASES = [(v, w) for v in (peers.TINY, peers.BASE_SHALLOW) for w in (peers.W8, peers.W16)]
CASE_IDS = [f"{v.name}-{w.name}" for v, w in CASES]


def run(x: torch.Tensor, **kwargs: Any) -> List[torch.Tensor]:
    """Build ``Swinv2Backbone(**kwargs)``, run ``init_weights()`` (loads the checkpoint named in
    ``init_cfg``/``pretrained``) and return its features for ``x``."""
    model = Swinv2Backbone(**kwargs)
    model.init_weights()
    model.eval()
    with torch.no_grad():
        return list(model(x))


def check_parity(source: str, ours: Sequence[torch.Tensor], theirs: Sequence[torch.Tensor]) -> None:
    """Assert per-stage max abs diff <= TOL (and print it for the record)."""
    diffs = peers.max_abs_diffs(ours, theirs)
    print(f"PARITY {source}: " + ", ".join(f"{d:.2e}" for d in diffs))
    assert max(diffs) <= TOL, diffs
    assert all(float(t.abs().max()) > 1e-2 for t in theirs), "peer features are trivially small"


def expected_pretrained(windows: peers.Windows) -> tuple:
    """The pretrained windows a converter reports: 0 where they equal the training window."""
    return tuple(0 if p == w else p for p, w in zip(windows.pretrained, windows.ours))


def converted_as(path: str, fmt: str, windows: peers.Windows):
    """``convert_checkpoint(path)``, after checking the format it detected and the training and
    pretrained windows it read against ``windows``."""
    converted = convert_checkpoint(path)
    assert converted.format == fmt
    assert converted.window_sizes == windows.ours
    assert converted.pretrained_window_sizes == expected_pretrained(windows)
    return converted


# ------------------------------------------------------------------------------------ parity
@pytest.mark.slow
@pytest.mark.parametrize("variant,windows", CASES, ids=CASE_IDS)
def test_hf_backbone_parity(variant, windows, tmp_path):
    hf = peers.hf_model("Swinv2Backbone", variant, windows, seed=11)
    hf.save_pretrained(tmp_path / "hf")
    x = peers.image()
    ours = run(x, **peers.ours(variant, windows, out_norm=False,
                               init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "hf"))))
    check_parity(f"hf Swinv2Backbone {variant.name} {windows.name}", ours, peers.hf_features(hf, x))
    converted = convert_checkpoint(tmp_path / "hf")
    assert converted.format == "hf" and converted.windows_from == "config.json"
    assert converted.window_sizes == windows.ours
    assert converted.pretrained_window_sizes == expected_pretrained(windows)


@pytest.mark.slow
def test_hf_model_final_norm_parity(tmp_path):
    hf = peers.hf_model("Swinv2Model", peers.TINY, peers.W16, seed=12)
    hf.save_pretrained(tmp_path / "hf")
    x = peers.image()
    ours = run(x, **peers.ours(peers.TINY, peers.W16, out_norm=True, pretrained=str(tmp_path / "hf")))
    check_parity("hf Swinv2Model final layernorm", ours[3:], [peers.hf_final(hf, x)])


@pytest.mark.slow
@pytest.mark.parametrize("kind,head", [("Swinv2ForImageClassification", "classification head"),
                                       ("Swinv2ForMaskedImageModeling", "masked-image-modeling head")])
def test_hf_task_models_load(kind, head, tmp_path):
    hf = peers.hf_model(kind, peers.MINI, peers.W8, seed=13)
    hf.save_pretrained(tmp_path / "hf")
    converted = convert_checkpoint(tmp_path / "hf")
    assert converted.format == "hf" and head in converted.dropped
    x = peers.image()
    ours = run(x, **peers.ours(peers.MINI, peers.W8, out_norm=True, pretrained=str(tmp_path / "hf")))
    check_parity(f"hf {kind} final layernorm", ours[3:], [peers.hf_final(hf.swinv2, x)])


@pytest.mark.slow
@pytest.mark.parametrize("variant,windows", CASES, ids=CASE_IDS)
def test_timm_parity(variant, windows, tmp_path):
    timm_model = peers.timm_model(variant, windows, seed=21)
    if windows is peers.W8:
        path = peers.save_torch(timm_model.state_dict(), str(tmp_path), "timm.pth")
    else:
        path = peers.save_safetensors(timm_model.state_dict(), str(tmp_path), "timm.safetensors")
    converted = convert_checkpoint(path)
    assert converted.format == "timm" and set(converted.dropped) == {"classification head"}
    x = peers.image()
    raw = run(x, **peers.ours(variant, windows, out_norm=False, pretrained=path))
    stages, final = peers.timm_features(timm_model, x)
    check_parity(f"timm {variant.name} {windows.name}", raw, stages)
    check_parity(f"timm final norm {variant.name} {windows.name}",
                 [peers.final_norm(raw[3], converted.state_dict, "norm3")], [final])


@pytest.mark.parametrize("rule", ["timm", "pad"])
def test_timm_features_at_padded_shifted_maps_need_the_timm_rule(rule, tmp_path, caplog):
    """At 288x256 stage 3 is 18x16: padded to 24x16 and shifted. timm rolls it before padding, the
    default ('pad') after, which differs unless the padding equals the shift (stage 2's 36 rows: 4);
    loading timm weights says so unless small_map='timm'."""
    timm_model = peers.timm_model(peers.MINI, peers.W8, seed=5, img_size=(288, 256))
    path = peers.save_torch(timm_model.state_dict(), str(tmp_path), "timm.pth")
    x = torch.randn(1, 3, 288, 256, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        ours = run(x, **peers.ours(peers.MINI, peers.W8, out_norm=False, pretrained=path,
                                   small_map=rule))
    stages, _ = peers.timm_features(timm_model, x)
    hint = [r for r in caplog.records if "whose features small_map='timm' reproduces" in r.getMessage()]
    if rule == "timm":
        check_parity("timm 288x256 small_map='timm'", ours, stages)
        assert not hint
    else:
        diffs = peers.max_abs_diffs(ours, stages)
        assert max(diffs[:2]) <= TOL and diffs[2] > 100 * TOL, diffs  # stages 1-2 are multiples
        assert len(hint) == 1


@pytest.mark.slow
@pytest.mark.parametrize("feature_cls", ["list", "getter"])
def test_timm_features_only_parity(feature_cls, tmp_path):
    import timm

    mini = peers.MINI
    net = timm.create_model("swinv2_tiny_window8_256", features_only=True, feature_cls=feature_cls,
                            embed_dim=mini.embed_dims, depths=mini.depths, num_heads=mini.num_heads)
    net = peers.randomize_(net, seed=22).eval()
    prefix = "layers_0." if feature_cls == "list" else "model."
    assert any(k.startswith(prefix) for k in net.state_dict())
    path = peers.save_torch(net.state_dict(), str(tmp_path), "features.pth")
    x = peers.image()
    with torch.no_grad():
        theirs = list(net(x))
    if str(net.output_fmt).endswith("NHWC"):
        theirs = [f.permute(0, 3, 1, 2) for f in theirs]
    ours = run(x, **peers.ours(mini, peers.W8, out_norm=False, pretrained=path))
    check_parity(f"timm features_only ({feature_cls})", ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("variant,windows", CASES, ids=CASE_IDS)
def test_official_parity_and_windows(variant, windows, tmp_path):
    timm_model = peers.timm_model(variant, windows, seed=31)
    path = peers.save_torch(peers.official_checkpoint(timm_model), str(tmp_path), "official.pth")
    converted = converted_as(path, "official", windows)
    assert converted.windows_from == "relative-coordinate buffers"
    assert set(converted.dropped) == {"recomputed buffers", "classification head"}
    assert torch.equal(converted.state_dict["norm3.weight"], timm_model.norm.weight)  # final 'norm'
    x = peers.image()
    model = Swinv2Backbone(**peers.ours(variant, windows, out_norm=True, out_indices=(3,)), pretrained=path)
    model.init_weights()
    assert torch.equal(model.norm3.bias, timm_model.norm.bias)
    raw = run(x, **peers.ours(variant, windows, out_norm=False, pretrained=path))
    stages, final = peers.timm_features(timm_model, x)
    check_parity(f"official {variant.name} {windows.name}", raw, stages)
    check_parity(f"official final norm {variant.name} {windows.name}",
                 [peers.final_norm(raw[3], converted.state_dict, "norm3")], [final])


def test_simmim_matches_official(tmp_path):
    timm_model = peers.timm_model(peers.MINI, peers.W16, seed=32, num_classes=0)
    simmim = peers.save_torch(peers.simmim_checkpoint(timm_model, seed=1), str(tmp_path), "simmim.pth")
    official = peers.save_torch(peers.official_checkpoint(timm_model), str(tmp_path), "official.pth")
    assert any(".rpe_mlp." in k for k in torch.load(simmim, weights_only=True)["model"])
    got, ref = convert_checkpoint(simmim), convert_checkpoint(official)
    assert got.format == "simmim"
    assert sorted(got.dropped["masked-image-modeling head"]) == ["decoder.0.bias", "decoder.0.weight"]
    assert got.dropped["mask token"] == ["encoder.mask_token"]
    assert got.state_dict.keys() == ref.state_dict.keys()
    assert all(torch.equal(got.state_dict[k], ref.state_dict[k]) for k in ref.state_dict)
    assert got.window_sizes == (16, 16, 16, 8) and got.pretrained_window_sizes == (12, 12, 12, 6)


@pytest.mark.slow
@pytest.mark.parametrize("variant,window", [(v, w) for v in (peers.TINY, peers.BASE_SHALLOW)
                                            for w in (8, 16)],
                         ids=[f"{v}-w{w}" for v in ("tiny", "base-shallow") for w in (8, 16)])
def test_torchvision_parity(variant, window, tmp_path):
    """torchvision has one window for all stages and no pretrained windows: window 16 pads the
    8x8 last stage to one 16x16 window (our small_map='pad' with window 16 everywhere)."""
    tv = peers.torchvision_model(variant, window, seed=41)
    state = tv.state_dict()
    dim = variant.embed_dims
    assert float(state["features.1.0.attn.qkv.bias"][dim:2 * dim].abs().max()) > 0.05  # k third set
    path = peers.save_torch(state, str(tmp_path), "tv.pth")
    converted = convert_checkpoint(path)
    assert converted.format == "torchvision"
    assert converted.window_sizes == (window,) * 4 and converted.pretrained_window_sizes == (0,) * 4
    windows = peers.Windows(f"w{window}", window, (0, 0, 0, 0), (window,) * 4)
    x = peers.image()
    feats, final = peers.torchvision_features(tv, x)
    raw = run(x, **peers.ours(variant, windows, out_norm=False, pretrained=path))
    check_parity(f"torchvision {variant.name} w{window}", raw, feats)
    check_parity(f"torchvision final norm {variant.name} w{window}",
                 [peers.final_norm(raw[3], converted.state_dict, "norm3")], [final])


@pytest.mark.slow
@pytest.mark.parametrize("variant,windows", CASES, ids=CASE_IDS)
def test_mmpretrain_parity(variant, windows, tmp_path):
    model = peers.mmpretrain_classifier(variant, windows, seed=51)
    path = peers.save_torch(peers.mmpretrain_checkpoint(model), str(tmp_path), "mmpretrain.pth")
    converted_as(path, "mmpretrain", windows)
    x = peers.image()
    ours = run(x, **peers.ours(variant, windows, out_norm=True,
                               init_cfg=dict(type="Pretrained", checkpoint=path)))
    check_parity(f"mmpretrain {variant.name} {windows.name}", ours, peers.mmpretrain_features(model, x))


def test_unfold_permutation_matches_official_concat():
    """The mmpretrain merge reorder: Unfold-ordered weights applied to Unfold features equal the
    reordered weights applied to the official x0..x3 concatenation; without it they differ."""
    gen = torch.Generator().manual_seed(0)
    c = 5
    x = torch.randn(1, 4, 6, c, generator=gen)  # (B, H, W, C)
    weight = torch.randn(2 * c, 4 * c, generator=gen)
    unfolded = torch.nn.functional.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2)
    mm_out = unfolded.transpose(1, 2) @ weight.T
    official = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    ours = official.reshape(1, -1, 4 * c) @ unfold_to_official(weight).T
    assert torch.allclose(ours, mm_out, atol=1e-5)
    assert not torch.allclose(official.reshape(1, -1, 4 * c) @ weight.T, mm_out, atol=1e-2)


# ------------------------------------------------------------------------- native / mm model
def _native_model(seed: int, **kwargs: Any) -> Swinv2Backbone:
    return peers.randomize_(Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True, **kwargs)), seed)


def _assert_loaded(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_whole_mmdet_checkpoint_seeds_a_segmentor(tmp_path):
    """A detector's training checkpoint (backbone + neck + heads, mmengine meta and message hub)
    seeds a new backbone exactly; the other modules are reported as dropped."""
    from mmengine.logging import HistoryBuffer

    source = _native_model(seed=61)
    history = HistoryBuffer()
    history.update(0.5)
    ckpt = {
        "meta": {"epoch": 12, "seed": np.int64(3), "dataset_meta": {"classes": ("a", "b")}},
        "state_dict": {**{f"backbone.{k}": v for k, v in source.state_dict().items()},
                       "neck.lateral_convs.0.conv.weight": torch.randn(8, 32, 1, 1),
                       "rpn_head.rpn_conv.weight": torch.randn(8, 8, 3, 3)},
        "message_hub": {"log_scalars": {"train/loss": history}},
    }
    path = peers.save_torch(ckpt, str(tmp_path), "epoch_12.pth")
    converted = convert_checkpoint(path)
    assert converted.format == "native"
    assert converted.dropped["other modules of a whole model"] == [
        "neck.lateral_convs.0.conv.weight", "rpn_head.rpn_conv.weight"]
    target = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True,
                                         init_cfg=dict(type="Pretrained", checkpoint=path)))
    target.init_weights()
    _assert_loaded(target, source.state_dict())
    with_prefix = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True))
    load_pretrained(with_prefix, path, prefix="backbone.")
    _assert_loaded(with_prefix, source.state_dict())


def test_native_round_trip_through_files(tmp_path):
    source = _native_model(seed=62)
    for name in ("backbone.pth", "backbone.safetensors"):
        path = str(tmp_path / name)
        converted = convert_checkpoint(source.state_dict()).with_windows(8)
        from swinv2_backbone.checkpoint import save_native

        save_native(converted, path)
        again = convert_checkpoint(path)
        assert again.format == "native" and again.window_sizes == (8, 8, 8, 8)
        assert again.windows_from == "checkpoint metadata"
        target = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True, pretrained=path))
        target.init_weights()
        _assert_loaded(target, source.state_dict())


# --------------------------------------------------------------------------------- detection
def _detection_sources() -> Dict[str, Any]:
    import timm

    mini, w8 = peers.MINI, peers.W8
    timm_model = peers.timm_model(mini, w8, seed=71)
    hf_kwargs = dict(variant=mini, windows=w8, seed=72)
    dims = dict(embed_dim=mini.embed_dims, depths=mini.depths, num_heads=mini.num_heads)
    return {
        "hf Swinv2Model": ("hf", peers.hf_model("Swinv2Model", **hf_kwargs).state_dict()),
        "hf ForImageClassification": ("hf", peers.hf_model("Swinv2ForImageClassification", **hf_kwargs).state_dict()),
        "hf Backbone": ("hf", peers.hf_model("Swinv2Backbone", **hf_kwargs).state_dict()),
        "hf ForMaskedImageModeling": ("hf", peers.hf_model("Swinv2ForMaskedImageModeling", **hf_kwargs).state_dict()),
        "official": ("official", peers.official_checkpoint(timm_model)),
        "simmim": ("simmim", peers.simmim_checkpoint(timm_model, seed=1)),
        "timm": ("timm", timm_model.state_dict()),
        "timm headless": ("timm", peers.timm_model(mini, w8, seed=73, num_classes=0).state_dict()),
        "timm features_only": ("timm", timm.create_model("swinv2_tiny_window8_256", features_only=True,
                                                         **dims).state_dict()),
        "timm getter": ("timm", timm.create_model("swinv2_tiny_window8_256", features_only=True,
                                                  feature_cls="getter", **dims).state_dict()),
        "torchvision": ("torchvision", peers.torchvision_model(mini, 8, seed=74).state_dict()),
        "native": ("native", _native_model(seed=75).state_dict()),
        "native out_norm=False": ("native", Swinv2Backbone(**peers.ours(mini, w8, out_norm=False)).state_dict()),
        "mm model": ("native", {"state_dict": {f"backbone.{k}": v for k, v in
                                               _native_model(seed=76).state_dict().items()},
                                "meta": {}}),
        "mmpretrain": ("mmpretrain", peers.mmpretrain_checkpoint(peers.mmpretrain_classifier(mini, w8, seed=77))),
    }


@pytest.mark.slow
def test_detection_of_every_source():
    sources = _detection_sources()
    found = {name: convert_checkpoint(obj).format for name, (_, obj) in sources.items()}
    assert found == {name: expected for name, (expected, _) in sources.items()}
    assert set(FORMATS) == {expected for expected, _ in sources.values()}


def test_forced_format_equals_detected_and_wrong_one_fails():
    state = peers.timm_model(peers.MINI, peers.W8, seed=78).state_dict()
    auto, forced = convert_checkpoint(state), convert_checkpoint(state, format="timm")
    assert forced.format == auto.format == "timm"
    assert all(torch.equal(forced.state_dict[k], auto.state_dict[k]) for k in auto.state_dict)
    with pytest.raises(CheckpointError, match=r"layers\.1\.downsample"):
        convert_checkpoint(state, format="native")  # merges at stage starts: not native
    with pytest.raises(ValueError, match=r"unknown checkpoint format 'swin'.*'mmpretrain'"):
        convert_checkpoint(state, format="swin")


def test_unknown_layout_lists_recognised_formats():
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint({"encoder.conv1.weight": torch.zeros(2, 3, 3, 3)})
    message = str(info.value)
    assert "unrecognised checkpoint layout" in message and "encoder.conv1.weight" in message
    assert all(f"  {name}: " in message for name in FORMATS)


def test_unknown_key_in_a_known_layout_is_listed():
    state = peers.timm_model(peers.MINI, peers.W8, seed=79).state_dict()
    state["layers.0.blocks.0.attn.extra_scale"] = torch.ones(1)
    with pytest.raises(CheckpointError, match=r"unknown keys \(1\): \[layers\.0\.blocks\.0\.attn\.extra_scale\]"):
        convert_checkpoint(state)


def test_summary_names_format_windows_and_dropped_parts(tmp_path):
    timm_model = peers.timm_model(peers.MINI, peers.W16, seed=80)
    path = peers.save_torch(peers.official_checkpoint(timm_model), str(tmp_path), "o.pth")
    summary = convert_checkpoint(path).summary()
    assert "\n" not in summary
    for text in ("official checkpoint", "training windows (16, 16, 16, 8)",
                 "pretrained windows (12, 12, 12, 6)", "relative-coordinate buffers",
                 "classification head (2 keys)", "recomputed buffers"):
        assert text in summary, (text, summary)


def test_windows_from_release_file_name(tmp_path):
    state = peers.timm_model(peers.MINI, peers.W16, seed=81).state_dict()
    path = peers.save_torch(state, str(tmp_path), "swinv2_base_window12to24_192to384.pth")
    converted = convert_checkpoint(path)
    assert converted.windows_from == "file name"
    assert converted.window_sizes == (24, 24, 24, 12)
    assert converted.pretrained_window_sizes == (12, 12, 12, 6)
    plain = convert_checkpoint(peers.save_torch(state, str(tmp_path), "weights.pth"))
    assert plain.window_sizes == (None,) * 4 and plain.windows_from is None
    assert "training windows unknown" in plain.summary()


# ----------------------------------------------------------------- windows and load policy
@pytest.fixture(scope="module")
def official_w16(tmp_path_factory):
    timm_model = peers.timm_model(peers.MINI, peers.W16, seed=91)
    directory = str(tmp_path_factory.mktemp("official"))
    return timm_model, peers.save_torch(peers.official_checkpoint(timm_model), directory, "o.pth")


def test_window_warning_gives_exact_value(official_w16, caplog):
    _, path = official_w16
    model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W16, out_norm=True), pretrained=path)
    model.init_weights()  # the matching windows: no warning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    plain = Swinv2Backbone(**{**peers.ours(peers.MINI, peers.W16, out_norm=True),
                              "pretrained_window_sizes": 0}, pretrained=path)
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        plain.init_weights()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pretrained_window_sizes=(12, 12, 12, 6)" in warnings[0]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "official checkpoint" in infos[0]


@pytest.mark.slow
def test_pretrained_window_sizes_from_checkpoint(official_w16, caplog):
    timm_model, path = official_w16
    kwargs = {**peers.ours(peers.MINI, peers.W16, out_norm=False), "pretrained_window_sizes": 0}
    model = Swinv2Backbone(**kwargs, init_cfg=dict(type="Pretrained", checkpoint=path,
                                                   pretrained_window_sizes="checkpoint"))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        model.init_weights()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    got = [layer.blocks[0].attn.pretrained_window_size for layer in model.layers]
    assert got == [12, 12, 12, 6] and tuple(model.pretrained_window_sizes) == (12, 12, 12, 6)
    x = peers.image()
    with torch.no_grad():
        check_parity("official via pretrained_window_sizes='checkpoint'", list(model.eval()(x)),
                     peers.timm_features(timm_model, x)[0])
    with pytest.raises(ValueError, match="None or 'checkpoint'"):
        load_pretrained(model, path, pretrained_window_sizes=(12, 12, 12, 6))


def test_checkpoint_windows_unknown_is_an_error_for_checkpoint_option():
    state = peers.timm_model(peers.MINI, peers.W8, seed=92).state_dict()
    model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True))
    with pytest.raises(CheckpointError, match="does not record the training windows"):
        load_pretrained(model, state, pretrained_window_sizes="checkpoint")


@pytest.mark.parametrize("in_file", [False, True], ids=["dict", "file"])
def test_window_8_checkpoint_in_window_16_model_warns(in_file, tmp_path, caplog):
    source = _native_model(seed=93)
    checkpoint = {"state_dict": source.state_dict(),
                  "meta": {"swinv2_backbone": {"window_size": [8, 8, 8, 8]}}}
    if in_file:
        checkpoint = peers.save_torch(checkpoint, str(tmp_path), "w8.pth")
    model = Swinv2Backbone(**{**peers.ours(peers.MINI, peers.W8, out_norm=True), "window_size": 16})
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(model, checkpoint)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pretrained_window_sizes=(8, 8, 8, 8)" in warnings[0]
    assert "window_size (16, 16, 16, 16)" in warnings[0]


def test_unbuilt_stages_and_output_norm_policy(caplog):
    timm_model = peers.timm_model(peers.MINI, peers.W8, seed=95)
    state = timm_model.state_dict()
    truncated = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True, out_indices=(0, 1)))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        load_pretrained(truncated, state)
    line = caplog.records[-1].getMessage()
    assert "skipped stage(s) [3, 4]" in line and "left out output norm(s) ['norm3']" in line
    assert "output norm(s) ['norm0', 'norm1'] not in the checkpoint" in line
    assert torch.equal(truncated.layers[1].blocks[0].attn.qkv.weight,
                       state["layers.1.blocks.0.attn.qkv.weight"])
    assert torch.equal(truncated.norm0.weight, torch.ones(32)) and torch.equal(truncated.norm0.bias, torch.zeros(32))
    full = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True))
    load_pretrained(full, state)
    assert torch.equal(full.norm3.weight, state["norm.weight"])
    assert torch.equal(full.layers[0].downsample.reduction.weight, state["layers.1.downsample.reduction.weight"])


def test_wrong_architecture_lists_keys_and_both_archs():
    state = peers.timm_model(peers.MINI, peers.W8, seed=96).state_dict()
    model = Swinv2Backbone(**peers.ours(peers.Variant("other", 32, (1, 1, 1, 1), (1, 2, 4, 8)),
                                        peers.W8, out_norm=True))
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model, state)
    message = str(info.value)
    assert "unexpected keys (17): [layers.2.blocks.1.* (17 keys)]" in message
    assert "depths (1, 1, 2, 1)" in message and "depths (1, 1, 1, 1)" in message
    wider = Swinv2Backbone(**peers.ours(peers.Variant("w", 48, (1, 1, 2, 1), (1, 2, 4, 8)),
                                        peers.W8, out_norm=True))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(\d+\): \[layers\.0\.blocks\.0\.attn\.proj\.bias: "
                                              r"checkpoint \(32,\) vs model \(48,\)"):
        load_pretrained(wider, state)


@pytest.mark.slow
def test_backbone_cfg_builds_a_model_that_loads(official_w16):
    timm_model, path = official_w16
    cfg = convert_checkpoint(path).backbone_cfg(checkpoint=path)
    assert cfg["window_size"] == (16, 16, 16, 8) and cfg["pretrained_window_sizes"] == (12, 12, 12, 6)
    assert cfg["init_cfg"] == {"type": "Pretrained", "checkpoint": path}
    assert cfg.pop("type") == "Swinv2Backbone"
    model = Swinv2Backbone(**cfg, drop_path_rate=0.0, out_norm=False)
    model.init_weights()
    x = peers.image()
    with torch.no_grad():
        check_parity("backbone_cfg() model", list(model.eval()(x)), peers.timm_features(timm_model, x)[0])
    shapes = Structure(96, (2, 2, 6, 2), (3, 6, 12, 24), out_norms=(3,)).expected_shapes()
    tiny = convert_checkpoint({"state_dict": {k: torch.zeros(v) for k, v in shapes.items()},
                               "meta": {"swinv2_backbone": {"window_size": [8, 8, 8, 8]}}})
    assert tiny.arch == "tiny" and tiny.backbone_cfg() == {"type": "Swinv2Backbone", "arch": "tiny",
                                                             "window_size": 8}


def test_absolute_position_embedding_cls_slot_and_grid(tmp_path):
    """HF keeps a [CLS] slot in front of the absolute position embedding: dropped on load, added
    back (zeros) on export; a model built for another grid is refused with the size to set."""
    from swinv2_backbone.checkpoint import to_hf

    hf = peers.hf_model("Swinv2Model", peers.MINI, peers.W8, seed=14, use_absolute_embeddings=True)
    hf.save_pretrained(tmp_path / "hf")
    converted = convert_checkpoint(tmp_path / "hf")
    table = hf.embeddings.position_embeddings.detach()
    assert table.shape == (1, 64 * 64 + 1, 32)
    assert torch.equal(converted.state_dict["absolute_pos_embed"], table[:, 1:])
    assert converted.backbone_cfg()["pretrain_img_size"] == 256
    exported = to_hf(converted).state_dict["embeddings.position_embeddings"]
    assert torch.equal(exported[:, 1:], table[:, 1:]) and not exported[:, 0].any()
    model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True, use_abs_pos_embed=True,
                                        pretrain_img_size=256), pretrained=str(tmp_path / "hf"))
    model.init_weights()
    assert torch.equal(model.absolute_pos_embed, table[:, 1:])
    small = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True, use_abs_pos_embed=True,
                                        pretrain_img_size=192))
    with pytest.raises(CheckpointError, match=r"absolute_pos_embed: checkpoint \(1, 4096, 32\) vs model "
                                              r"\(1, 2304, 32\).*pretrain_img_size=256"):
        load_pretrained(small, str(tmp_path / "hf"))


def test_timm_hub_directory_windows_from_architecture(tmp_path):
    import json

    directory = tmp_path / "timm-hub"
    directory.mkdir()
    state = peers.timm_model(peers.MINI, peers.W16, seed=15).state_dict()
    peers.save_safetensors(state, str(directory), "model.safetensors")
    (directory / "config.json").write_text(json.dumps(
        {"architecture": "swinv2_base_window12to16_192to256", "num_classes": 10}))
    converted = convert_checkpoint(directory)
    assert converted.format == "timm" and converted.windows_from == "file name"
    assert converted.window_sizes == (16, 16, 16, 8) and converted.pretrained_window_sizes == (12, 12, 12, 6)
