"""Analytic parameter and FLOP counts (swinv2_backbone.complexity, tools/analyze_complexity.py)
against the built model: parameters against ``sum(p.numel())``, FLOPs against torch's
``FlopCounterMode`` over a forward pass on the 'meta' device."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Tuple

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.models.blocks import DropPath
from swinv2_backbone.complexity import (OPERATIONS, ArchSpec, analyze, count_macs, count_params,
                                        spec_from_config)
from kit import SMALL, run_script, run_tool

TOOL = "analyze_complexity"


def meta_model(**kwargs: Any) -> Swinv2Backbone:
    """A backbone on the 'meta' device: no memory, no compute, fresh position-bias caches."""
    with torch.device("meta"):
        return Swinv2Backbone(**{**SMALL, **kwargs}).eval()


def counted_flops(model: Swinv2Backbone, batch: int, hw: Tuple[int, int]) -> int:
    """FLOPs FlopCounterMode sees in one forward pass of ``model`` on ``batch`` images."""
    x = torch.empty(batch, model.in_channels, *hw, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


CONFIGS = {
    "default": {},
    "sdpa": dict(use_sdpa="always"),
    "per_stage_windows": dict(window_size=(4, 3, 2, 1), pretrained_window_sizes=(4, 4, 2, 0)),
    "official_small_map": dict(small_map="official", window_size=7),
    "out_stage2": dict(out_indices=(1,)),
    "stem_and_stage3": dict(out_features=("stem", "stage3")),
    "no_qkv_bias_mlp2": dict(qkv_bias=False, mlp_ratio=2.0),
    "patch8_abs_pos": dict(patch_size=8, use_abs_pos_embed=True, pretrain_img_size=64),
}


@pytest.mark.parametrize("hw", [(64, 64), (50, 77), (33, 17), (7, 130)])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_analytic_flops_equal_flop_counter(name: str, hw: Tuple[int, int]):
    model = meta_model(**CONFIGS[name])
    macs = count_macs(ArchSpec.from_model(model), hw, batch=2)
    assert set(macs) == set(OPERATIONS)
    assert 2 * sum(macs.values()) == counted_flops(model, 2, hw)


def test_position_bias_mlp_counted_once_per_block_and_forward():
    model = meta_model()
    spec = ArchSpec.from_model(model)
    macs = count_macs(spec, (40, 40), batch=3)
    first = counted_flops(model, 3, (40, 40))
    # Meta tensors hold no values to validate a cached mask against, so nothing is cached there:
    # every forward counts the bias MLP once per block.
    second = counted_flops(model, 3, (40, 40))
    assert first == second == 2 * sum(macs.values())
    assert macs["cpb_mlp"] > 0
    # Everything but the bias MLP scales with the batch.
    one = count_macs(spec, (40, 40), batch=1)
    assert all(macs[op] == 3 * one[op] for op in OPERATIONS if op != "cpb_mlp")
    assert macs["cpb_mlp"] == one["cpb_mlp"]


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["no_out_norm", "no_patch_norm", "heads_8"])
def test_analytic_params_equal_model_numel(name: str):
    extra = {"no_out_norm": dict(out_norm=False), "no_patch_norm": dict(patch_norm=False),
             "heads_8": dict(embed_dims=32, num_heads=(8, 8, 8, 8))}
    with torch.device("meta"):
        model = Swinv2Backbone(**{**SMALL, **CONFIGS.get(name, {}), **extra.get(name, {})})
    assert count_params(ArchSpec.from_model(model)) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch, params", [("tiny", 27_579_498), ("small", 48_960_762),
                                          ("base", 86_895_608), ("large", 195_205_620)])
def test_preset_params(arch: str, params: int):
    spec = spec_from_config(arch=arch)
    with torch.device("meta"):
        numel = sum(p.numel() for p in Swinv2Backbone(arch=arch).parameters())
    assert count_params(spec) == numel == params


def test_tiny_matches_the_numbers_quoted_in_the_issue():
    """The issue quotes SwinV2-T at 47.4 GFLOPs (512x512) and 205 GFLOPs (800x1344): FLOPs = 2 MACs,
    window 8."""
    spec = spec_from_config(arch="tiny", window_size=8)
    assert round(analyze(spec, (512, 512)).flops / 1e9, 1) == 47.4
    assert round(analyze(spec, (800, 1344)).flops / 1e9) == 205
    small = analyze(spec, (256, 256))
    assert small.flops == 2 * small.total_macs == 11_877_844_992


def test_tiny_preset_at_256_equals_flop_counter():
    with torch.device("meta"):
        model = Swinv2Backbone(arch="tiny", window_size=8).eval()
    assert analyze(ArchSpec.from_model(model), (256, 256)).flops == counted_flops(model, 1, (256, 256))


def test_hand_count_of_one_block():
    """One stage, one block, 8x8 map, window 4, C=16, 1 head: every term by hand."""
    spec = spec_from_config(arch=None, embed_dims=16, depths=(1,), num_heads=(1,), window_size=4)
    macs = count_macs(spec, (32, 32))
    tokens, c = 64, 16
    assert macs == {
        "patch_embed": tokens * c * 3 * 16,
        "qkv": tokens * c * 3 * c,
        "attn_qk": tokens * 16 * c,
        "attn_v": tokens * 16 * c,
        "proj": tokens * c * c,
        "mlp": 2 * tokens * c * 4 * c,
        "cpb_mlp": 7 * 7 * 512 * (2 + 1),
        "patch_merging": 0,
    }


def test_attention_uses_padded_token_count():
    spec = spec_from_config(arch=None, embed_dims=16, depths=(2,), num_heads=(1,), window_size=4)
    # 20x24 image -> 5x6 map, padded to 8x8 for window 4 (both blocks, shift on both axes).
    macs = count_macs(spec, (20, 24))
    assert macs["qkv"] == 2 * 64 * 16 * 48
    assert macs["mlp"] == 2 * 2 * 30 * 16 * 64


@pytest.mark.parametrize("bad, match", [((0, 5), "two positive ints"), ((5,), "two positive ints"),
                                        ((5.0, 5), "two positive ints")])
def test_bad_image_size_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        count_macs(spec_from_config(**SMALL), bad)


def test_from_model_refuses_other_modules_and_stem_only():
    with pytest.raises(TypeError, match="expects a Swinv2Backbone, got Linear"):
        ArchSpec.from_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="builds no stage"):
        spec_from_config(**SMALL, out_features=("stem",))


@pytest.mark.slow
def test_tool_runs_as_a_script(tmp_path: Path):
    out = tmp_path / "c.json"
    result = run_script(TOOL, "--arch", "small", "--sizes", "256", "--json", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == "| small | 256x256 | 48.96 | 11.55 | 23.09 |"
    assert json.loads(out.read_text())[0]["params"] == 48_960_762


def test_tool_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "sub" / "c.json"
    status, stdout, _ = run_tool(capsys, TOOL, "--arch", "tiny", "base", "--sizes", "512",
                                 "800x1344", "--json", out, "--breakdown")
    assert status == 0
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("| Variant | Input (HxW) | Params (M) | GMACs | GFLOPs |")
    assert lines[0].count("|") == 6 + len(OPERATIONS)
    assert len(lines) == 2 + 4
    assert lines[2].startswith("| tiny | 512x512 | 27.58 | 23.70 | 47.40 |")
    assert lines[3].startswith("| tiny | 800x1344 | 27.58 | 102.56 | 205.12 |")
    rows = json.loads(out.read_text())
    assert [(r["arch"], r["input"]) for r in rows] == [
        ("tiny", [512, 512]), ("tiny", [800, 1344]), ("base", [512, 512]), ("base", [800, 1344])]
    for r in rows:
        assert r["flops"] == 2 * r["macs"] == 2 * sum(r["macs_per_op"].values())
    assert rows[2]["params"] == 86_895_608


def test_tool_measure_column_agrees(tmp_path: Path, capsys: pytest.CaptureFixture):
    status, stdout, _ = run_tool(capsys, TOOL, "--arch", "tiny", "--sizes", "64x96", "--window-size",
                                 "4", "4", "2", "2", "--out-features", "stage1", "stage2",
                                 "--measure", "--json", tmp_path / "m.json")
    assert status == 0
    (row,) = json.loads((tmp_path / "m.json").read_text())
    assert row["measured_flops"] == row["flops"]
    assert "GFLOPs (FlopCounterMode)" in stdout.splitlines()[0]


def test_tool_without_out_norm_has_fewer_params(capsys: pytest.CaptureFixture, tmp_path: Path):
    rows = []
    for extra in ((), ("--no-out-norm",)):
        path = tmp_path / f"{len(extra)}.json"
        assert run_tool(capsys, TOOL, "--arch", "tiny", "--sizes", "64", "--json", path, *extra)[0] == 0
        rows.append(json.loads(path.read_text())[0])
    assert rows[0]["params"] - rows[1]["params"] == 2 * (96 + 192 + 384 + 768)
    assert rows[0]["flops"] == rows[1]["flops"]


@pytest.mark.parametrize("args, message", [
    (("--sizes", "12x0"), "invalid size '12x0'"),
    (("--sizes", "big"), "invalid size 'big'"),
    (("--arch", "huge"), "invalid choice: 'huge'"),
    (("--out-features", "stage9"), "unknown out_features ['stage9']"),
    (("--window-size", "8", "8"), "window_size must be an int or a sequence of 4 ints"),
])
def test_tool_errors(args: Tuple[str, ...], message: str, capsys: pytest.CaptureFixture):
    status, stdout, stderr = run_tool(capsys, TOOL, *args)
    assert status == 2
    assert message in stderr
    assert stdout == ""


def test_flops_grow_with_input_and_window():
    spec8 = spec_from_config(arch="tiny", window_size=8)
    spec16 = spec_from_config(arch="tiny", window_size=16)
    for hw in [(256, 256), (512, 512)]:
        assert analyze(spec16, hw).macs["attn_qk"] > analyze(spec8, hw).macs["attn_qk"]
        assert analyze(spec16, hw).macs["mlp"] == analyze(spec8, hw).macs["mlp"]
    assert analyze(spec8, (512, 512)).total_macs > 3.9 * analyze(spec8, (256, 256)).total_macs


@pytest.mark.parametrize("hw", [(256, 256), (200, 296)])
def test_mmengine_flop_counter_traces_the_default_model_and_agrees(hw):
    """mmengine's FLOP counter (what mmdet's get_flops.py runs) traces the model with its default
    fast paths on (a trace takes the reference kernels), counts the parameters exactly and the
    multiply-adds within 1 % of :func:`count_macs` (it also counts a few elementwise products)."""
    from mmengine.analysis import get_model_complexity_info

    model = Swinv2Backbone(arch="tiny", window_size=8).eval()
    info = get_model_complexity_info(model, input_shape=(3, *hw), show_table=False, show_arch=False)
    spec = spec_from_config(arch="tiny", window_size=8)
    assert info["params"] == count_params(spec)
    ours = sum(count_macs(spec, hw).values())
    assert abs(info["flops"] - ours) / ours < 0.01, (info["flops"], ours)


@pytest.mark.parametrize("hw", [(64, 64), (50, 77)])
def test_mmengine_flop_counter_attributes_the_projections_to_their_modules(hw):
    """Tracing takes the reference kernels, which call the qkv, output and patch-merging
    projections as modules: mmengine's per-module counts (the table of mmdet's get_flops.py) give
    each Linear its work, equal to :func:`count_macs`' share, and list none of them as not called."""
    from mmengine.analysis import FlopAnalyzer

    model = Swinv2Backbone(**SMALL).eval()
    analyzer = FlopAnalyzer(model, (torch.randn(1, 3, *hw),))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    linears = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert not linears & analyzer.uncalled_modules()
    by_module = analyzer.by_module()
    ours = count_macs(spec_from_config(**SMALL), hw)
    for suffix, operation in [(".attn.qkv", "qkv"), (".attn.proj", "proj"),
                              (".downsample.reduction", "patch_merging")]:
        counted = sum(v for k, v in by_module.items() if k.endswith(suffix))
        assert counted == ours[operation] > 0, (suffix, counted, ours[operation])


@pytest.mark.slow
def test_mmdet_get_flops_lists_every_backbone_module_as_called(tmp_path: Path):
    """mmdet's own ``tools/analysis_tools/get_flops.py`` on the demo Mask R-CNN: it runs with the
    default fast paths (its trace takes the reference) and no backbone module with weights is listed
    as "not called" (the dropout and drop-path holders are: the kernels apply their probabilities
    themselves, and they do no work at inference)."""
    import mmdet
    from swinv2_backbone.openmmlab.toy_data import write_toy_dataset

    script = Path(mmdet.__file__).parent / ".mim" / "tools" / "analysis_tools" / "get_flops.py"
    write_toy_dataset(tmp_path / "work_dirs" / "demo" / "data", num_train=1, num_val=2)
    config = Path(__file__).resolve().parents[1] / "configs" / "demo" / "mask-rcnn_swinv2-compact_fpn_toy-shapes.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(config.parents[2]), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script), str(config), "--num-images", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^Flops: [\d.]+G$", done.stdout, re.M), done.stdout[-2000:]
    uncalled = set(re.findall(r"backbone\.([\w.]+)", done.stdout + done.stderr))
    from mmengine.config import Config
    settings = {k: v for k, v in Config.fromfile(config).model.backbone.items() if k != "type"}
    holders = {name for name, m in Swinv2Backbone(**settings).named_modules()
               if isinstance(m, (torch.nn.Dropout, DropPath))}
    assert uncalled and not uncalled - holders, sorted(uncalled - holders)[:10]
