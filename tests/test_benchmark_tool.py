"""tools/benchmark.py: runs ours beside the peers with the same weights, checks that the outputs
agree, reports ratios, the GEMM floor, the per-pixel scaling table and JSON; refuses bad input."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import benchmark  # noqa: E402
from swinv2_backbone import SwinBackbone  # noqa: E402
from swinv2_backbone.benchmark.measure import (environment, isa_flags, native_bf16,  # noqa: E402
                                                 peak_memory_mib, rss_peak_mib)
from swinv2_backbone.testing import peers_v1  # noqa: E402
from swinv2_backbone.testing.peers import small_map_rule  # noqa: E402

QUICK = ["--repeats", "1", "--warmup", "0"]


def test_compare_runs_peers_on_our_weights_and_writes_json(tmp_path, capsys):
    # Stage maps 16..2 (64) and 24x16..3x2 (96x64): smaller than the window from stage 3 on.
    out = tmp_path / "bench.json"
    results = benchmark.main(["--sizes", "64", "96x64", "--compare", "hf", "timm", "--no-floor",
                              "--json", str(out), *QUICK])
    names = ["ours", "ours (hf weights)", "hf", "ours (timm weights)", "timm"]
    assert [r.impl for r in results] == names * 2
    for r in results:
        assert r.median_s > 0 and r.images_per_s == pytest.approx(1 / r.median_s)
        assert r.peak_mem_mib >= 0 and r.floor_pct is None and r.fp32_rel_err is None
        if r.impl == "hf" or r.impl == "timm" and r.size == (64, 64):
            assert r.max_rel_diff < 1e-4 and r.agrees  # the same function as ours
        elif r.impl == "timm":  # timm's rectangular 6x4 / 3x2 windows are not reproduced
            assert r.max_rel_diff > 1e-2 and r.agrees is False
        else:
            assert r.agrees is None  # ours: nothing to agree with
    # ratios are relative to ours at the same size (which is faster is the benchmark's finding, not
    # something a test may assume: on torch 2.1, under load, a peer won at 64x64)
    assert min(r.ratio_to_ours for r in results[:5] if r.impl.startswith("ours")) == 1.0
    assert all(r.ratio_to_ours > 0 for r in results)
    data = json.loads(out.read_text())
    assert len(data["results"]) == 10 and data["environment"]["threads"]
    printed = capsys.readouterr().out
    assert "| ours (hf weights) | 96x64 |" in printed
    warnings = [line for line in printed.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "timm disagrees with ours on the same weights at 96x64" in warnings[0]
    assert "ours fp32: time/px spread" in printed and "| ours | fp32 | 96x64 |" in printed


def test_timm_agrees_where_shifted_maps_are_padded(capsys):
    # 320x256 ends in a 10x8 map, padded to 16x8 and shifted along its height: timm rolls it before
    # padding, torchvision/HF after; small_map='timm' follows timm.
    assert small_map_rule("timm") == "timm" and small_map_rule("hf") == "hf"
    assert small_map_rule("torchvision") == "pad"
    results = benchmark.main(["--sizes", "320x256", "--compare", "timm", "--no-floor", *QUICK])
    assert results[-1].impl == "timm" and results[-1].max_rel_diff < 1e-4


def test_low_precision_and_training_cases(capsys):
    results = benchmark.main(["--sizes", "64", "--dtypes", "bf16", "--task", "train", "--with-cp",
                              "--batch", "2", *QUICK])
    assert [r.impl for r in results] == ["ours", "ours (bf16 model)"]
    assert all(r.task == "train" and r.batch == 2 and r.dtype == "bf16" for r in results)
    assert 0 < results[0].floor_pct < 1000  # the GEMM floor was measured
    assert results[1].max_rel_diff < 0.1  # bf16 model against the autocast run
    # each against the fp32 output of the same weights
    assert all(0 < r.fp32_rel_err < 0.1 for r in results)
    assert "| rel err vs fp32 |" in capsys.readouterr().out


def test_swin_v1_runs_beside_hf_on_the_same_weights(capsys):
    """--model v1: our SwinBackbone (Swin-T) beside HF SwinModel with the HF weights read from its
    save_pretrained directory; the FLOPs are the V1 model's own. Stage maps 32..4 at window 4 (HF
    SwinModel fails on maps smaller than its window: its bias table is not cropped)."""
    results = benchmark.main(["--model", "v1", "--sizes", "128", "--window", "4", "--compare", "hf",
                              "--no-floor", *QUICK])
    assert [r.impl for r in results] == ["ours", "ours (hf weights)", "hf"]
    assert results[2].max_rel_diff < 1e-4 and results[2].agrees
    assert results[0].agrees is None and results[1].agrees is None
    with torch.device("meta"):
        model = SwinBackbone(arch="tiny", window_size=4).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, 128, 128))
    assert all(r.gflop == pytest.approx(counter.get_total_flops() / 1e9) for r in results)
    assert "model=v1" in capsys.readouterr().out


def test_swin_v1_peers_read_from_their_own_files_agree(monkeypatch):
    """timm, torchvision, mmpretrain and mmdet beside ours, each peer's weights read from the file
    it writes, under its small-map rule: stage 4 (4x4 at window 4) is one window, which mmdet
    shifts and the others do not. A small V1 instead of Swin-T keeps the four builds quick."""
    monkeypatch.setattr(benchmark, "variant_of", lambda arch: peers_v1.V1_MINI)
    others = ["timm", "torchvision", "mmpretrain", "mmdet"]
    results = benchmark.main(["--model", "v1", "--sizes", "128", "--window", "4", "--compare",
                              *others, "--no-floor", *QUICK])
    assert [r.impl for r in results] == ["ours"] + [n for p in others for n in (f"ours ({p} weights)", p)]
    for r in results[2::2]:
        assert r.max_rel_diff < 1e-4 and r.agrees, r.impl


def test_swin_v1_training_case_without_peers(capsys):
    results = benchmark.main(["--model", "v1", "--sizes", "64", "--task", "train", "--with-cp",
                              "--no-floor", *QUICK])
    assert [r.impl for r in results] == ["ours"]
    assert results[0].task == "train" and results[0].median_s > 0 and results[0].peak_mem_mib > 0


@pytest.mark.parametrize("args, message", [
    (["--model", "v2", "--compare", "mmdet"], "--compare mmdet: no such peer for --model v2"),
    (["--model", "v3"], "invalid choice"),
    (["--sizes", "0x64"], "size must be N or HxW"),
    (["--batch", "0"], "--batch and --repeats must be >= 1"),
    (["--dtypes", "fp8"], "invalid choice"),
])
def test_bad_arguments_are_refused(args, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(args)
    assert message in capsys.readouterr().err


def test_cpu_peak_memory_counts_the_tensors_alive_together():
    def run():
        a = torch.ones(16 * 2 ** 20)  # 64 MiB, written: resident
        b = torch.ones(8 * 2 ** 20)  # 32 MiB, while a is alive
        del a, b
        c = torch.ones(4 * 2 ** 20)  # 16 MiB after both were freed
        del c

    assert peak_memory_mib(run, torch.device("cpu")) == pytest.approx(96, abs=0.1)
    assert 90 < rss_peak_mib(run) < 130


def test_environment_names_the_isa_and_whether_bf16_is_native():
    avx512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni\n"
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
    amx = "flags\t\t: avx2 avx512f amx_tile amx_bf16\n"
    assert isa_flags(avx512) == ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16")
    assert isa_flags(avx2) == ("avx2", "fma") and isa_flags("no flags line") == ()
    assert native_bf16(isa_flags(avx512)) and native_bf16(isa_flags(amx))
    assert not native_bf16(isa_flags(avx2))
    env = environment()
    assert env["native_bf16"].startswith("yes" if native_bf16(tuple(env["isa"].split())) else "no")
    assert env["cpu"] and env["onednn"]
