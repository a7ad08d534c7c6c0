"""tools/benchmark.py: runs ours beside the peers with the same weights, alternating in one process
or each in a process of its own (--isolate), checks that the outputs agree, reports ratios, the GEMM
floor and its throughput, the per-pixel and per-batch tables, oneDNN's ISA and JSON; refuses bad
input."""
import itertools
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from swinv2_backbone import SwinBackbone
from swinv2_backbone.benchmark.cases import Measured, Result, compare
from swinv2_backbone.benchmark.isolate import ALTERNATING, ISOLATED
from swinv2_backbone.benchmark.measure import (environment, isa_flags, native_bf16, onednn_isa,
                                                 parse_onednn_isa, peak_memory_mib, rss_peak_mib)
from swinv2_backbone.complexity import analyze, spec_from_config
from swinv2_backbone.testing import peers_v1
from swinv2_backbone.testing.peers import small_map_rule
from kit import load_tool

benchmark = load_tool("benchmark")

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
        assert r.floor_s is None and r.floor_gflops_per_s is None and r.pid == os.getpid()
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
    assert data["environment"]["runs"] == ALTERNATING and data["failures"] == []
    printed = capsys.readouterr().out
    assert printed.count(f"runs={ALTERNATING}") == 3  # the environment line and both tables
    assert "| ours (hf weights) | 96x64 |" in printed
    warnings = [line for line in printed.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "timm disagrees with ours on the same weights at 96x64" in warnings[0]
    assert "ours fp32 batch 1: time/px spread" in printed and "| ours | fp32 | 1 | 96x64 |" in printed


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
    assert [r.impl for r in results] == ["ours", "ours (no checkpointing)", "ours (bf16 model)"]
    assert all(r.task == "train" and r.batch == 2 and r.dtype == "bf16" for r in results)
    assert 0 < results[0].floor_pct < 1000  # the GEMM floor was measured
    for r in results:  # ours and ours as a bf16 model: the floor of the same GEMMs in bf16
        assert r.floor_pct == pytest.approx(100 * r.floor_s / r.median_s)
        assert r.floor_gflops_per_s == pytest.approx(r.floor_gflop / r.floor_s)
    assert results[0].floor_gflop == pytest.approx(results[2].floor_gflop)
    assert results[1].agrees  # without checkpointing: the same step
    assert results[2].max_rel_diff < 0.1  # bf16 model against the autocast run
    # each against the fp32 output of the same weights
    assert all(0 < r.fp32_rel_err < 0.1 for r in results)
    printed = capsys.readouterr().out
    assert "| rel err vs fp32 |" in printed
    ratio = results[0].median_s / results[1].median_s
    assert (f"with_cp, ours, 64x64 batch 2 bf16 train: {results[0].median_s:.3f} s, without "
            f"checkpointing {results[1].median_s:.3f} s ({ratio:.2f}x)") in printed


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


def test_swin_v1_training_case_without_peers_with_its_time_breakdown(capsys):
    results = benchmark.main(["--model", "v1", "--sizes", "64", "--task", "train", "--with-cp",
                              "--no-floor", "--breakdown", *QUICK])
    assert [r.impl for r in results] == ["ours", "ours (no checkpointing)"]
    assert results[0].task == "train" and results[0].median_s > 0 and results[0].peak_mem_mib > 0
    parts = results[0].breakdown_ms
    assert parts["Linear GEMMs"] > 0 and parts["attention GEMMs"] > 0 and parts["softmax"] > 0
    printed = capsys.readouterr().out
    assert "where the time goes, ours (one profiled step, " in printed
    assert "  Linear GEMMs: " in printed


def test_batches_run_as_cases_with_the_floor_throughput_and_per_image_times(capsys):
    """--batch 1 2: two cases; the GEMM floor's work is exactly the model's Linear GEMMs (the
    position-bias MLP's output is cached at inference, so its GEMMs are not in the step)."""
    results = benchmark.main(["--sizes", "64", "--batch", "1", "2", *QUICK])
    assert [(r.impl, r.batch) for r in results] == [("ours", 1), ("ours", 2)]
    macs = analyze(spec_from_config(arch="tiny", window_size=8), (64, 64)).macs
    linear_gflop = 2 * sum(macs[op] for op in ("qkv", "proj", "mlp", "patch_merging")) / 1e9
    for r in results:
        assert r.floor_gflop == pytest.approx(r.batch * linear_gflop)
        assert r.floor_gflops_per_s == pytest.approx(r.floor_gflop / r.floor_s)
        assert r.floor_pct == pytest.approx(100 * r.floor_s / r.median_s)
    printed = capsys.readouterr().out
    assert "| s / image | img/s |" in printed and "| % GEMM floor | floor GFLOP/s |" in printed
    one, two = (r.median_s / r.batch for r in results)
    assert (f"per-image time, ours, 64x64 fp32: batch 1 {one:.3f} s, batch 2 {two:.3f} s "
            f"({two / one:.2f}x)") in printed.splitlines()
    assert f"| ours | 64x64 | 2 | fp32 | inference | eager | {results[1].median_s:.3f} | {two:.3f} |" in printed


def test_isolate_times_each_implementation_in_a_process_of_its_own(tmp_path, capsys, monkeypatch):
    """--isolate: every implementation runs in a child process, and the parent compares what they
    saved. A child that fails (ours here: its command is swapped for a Python that raises) is
    reported with the end of its stderr and costs only its own row."""
    child_command = benchmark._child_command

    def sabotaged(args, peers, hw, batch, dtype_name, impl, out):
        if impl == "ours":
            return [sys.executable, "-c", "raise RuntimeError('child failed on purpose')"]
        return child_command(args, peers, hw, batch, dtype_name, impl, out)

    monkeypatch.setattr(benchmark, "_child_command", sabotaged)
    out = tmp_path / "bench.json"
    results = benchmark.main(["--sizes", "64", "--compare", "hf", "--no-floor", "--isolate",
                              "--json", str(out), *QUICK])
    assert [r.impl for r in results] == ["ours (hf weights)", "hf"]
    assert results[1].max_rel_diff < 1e-4 and results[1].agrees  # the same function, two processes
    assert results[0].ratio_to_ours == 1.0 and results[1].ratio_to_ours > 0
    pids = [r.pid for r in results]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    printed = capsys.readouterr().out
    assert printed.count(f"runs={ISOLATED}") == 2  # the environment line and the table
    # The child's stderr is the indented block under the FAILED line; how many lines its traceback
    # takes depends on the Python version (3.13 also prints the `-c` source line).
    heading, *rest = printed[printed.index("FAILED"):].splitlines()
    block = list(itertools.takewhile(lambda line: line.startswith("    "), rest))
    assert heading == ("FAILED: ours at 64x64, batch 1, fp32 inference: its process exited with "
                       "status 1; the end of its stderr:")
    assert block[0] == "    Traceback (most recent call last):"
    assert block[-1] == "    RuntimeError: child failed on purpose"
    data = json.loads(out.read_text())
    assert data["environment"]["runs"] == ISOLATED
    assert [r["pid"] for r in data["results"]] == pids
    assert [f["impl"] for f in data["failures"]] == ["ours"]
    assert data["failures"][0]["error"].endswith("RuntimeError: child failed on purpose")


def test_isolate_children_get_every_option_of_the_run(tmp_path):
    """A child's command line parses back to the parent's options, but for its one case."""
    parser = benchmark._parser()
    parent = parser.parse_args(["--model", "v1", "--arch", "small", "--window", "6", "--sizes", "64",
                                "96x64", "--batch", "1", "3", "--dtypes", "fp32", "bf16", "--task",
                                "train", "--mode", "compile", "--compare", "hf", "--with-cp",
                                "--warmup", "3", "--repeats", "4", "--no-floor", "--device", "cpu",
                                "--json", "x.json", "--seed", "5", "--isolate", "--breakdown"])
    command = benchmark._child_command(parent, ["hf"], (96, 64), 3, "bf16", "ours (hf weights)",
                                       tmp_path / "out.pt")
    assert command[:2] == [sys.executable, str(Path(benchmark.__file__).resolve())]
    child = vars(parser.parse_args(command[2:]))
    per_case = dict(sizes=[(96, 64)], batch=[3], dtypes=["bf16"], isolate=False, json=None,
                    run_impl="ours (hf weights)", child_out=tmp_path / "out.pt")
    assert child == {**vars(parent), **per_case}


def test_compare_takes_yardsticks_and_references_from_other_runs():
    """compare() on measurements merged from separate processes: a model cast to bf16 is held to
    its reference's fp32 output; a missing reference (its process failed) leaves nothing to
    compare, and without ours there is no ratio."""
    def result(impl, reference=None, median=1.0):
        return Result(impl, (8, 8), 1, "bf16", "inference", "eager", median, 1 / median, 1.0,
                      1.0, 0.0, pid=1, reference=reference)

    exact, off = [torch.tensor([3.0, 4.0])], [torch.tensor([3.0, 4.0]) * 1.01]
    measured = Measured([result("ours", median=2.0), result("ours (bf16 model)", "ours", 3.0),
                         result("hf", "ours (hf weights)", 1.0)],
                        {"ours": exact, "ours (bf16 model)": off, "hf": exact}, {"ours": exact})
    ours, low, hf = compare(measured)
    assert ours.fp32_rel_err == 0 and low.fp32_rel_err == pytest.approx(0.01)
    assert low.max_rel_diff == pytest.approx(0.01) and low.agrees
    assert hf.max_rel_diff is None and hf.agrees is None and hf.fp32_rel_err is None
    assert [r.ratio_to_ours for r in (ours, low, hf)] == [1.0, 1.5, 0.5]
    alone = compare(Measured([result("hf", "ours (hf weights)")], {"hf": exact}, {}))
    assert alone[0].ratio_to_ours is None


@pytest.mark.parametrize("args, message", [
    (["--model", "v2", "--compare", "mmdet"], "--compare mmdet: no such peer for --model v2"),
    (["--model", "v3"], "invalid choice"),
    (["--sizes", "0x64"], "size must be N or HxW"),
    (["--batch", "1", "0"], "argument --batch: must be an int >= 1, got '0'"),
    (["--repeats", "0"], "argument --repeats: must be an int >= 1, got '0'"),
    (["--warmup", "-1"], "argument --warmup: must be an int >= 0, got '-1'"),
    (["--dtypes", "fp8"], "invalid choice"),
    (["--runtimes", "torch,tensorrt"], "--runtimes tensorrt: choose from torch, onnxruntime, openvino"),
    (["--runtimes", "openvino", "--task", "train"],
     "--runtimes onnxruntime/openvino time CPU inference next to the eager rows"),
    (["--runtimes", "onnxruntime", "--isolate"], "without --isolate"),
    (["--fixed-size-rows"], "--fixed-size-rows adds exported rows: give --runtimes onnxruntime"),
    (["--runtimes", "openvino-int8", "--fixed-size-rows"], "--fixed-size-rows adds exported rows"),
    (["--run-impl", "ours"], "--run-impl and --child-out (internal to --isolate) go together"),
    (["--run-impl", "ours", "--child-out", "x.pt", "--sizes", "64", "96"],
     "--run-impl (internal to --isolate) times one case"),
    (["--run-impl", "bogus", "--child-out", "x.pt", "--sizes", "64", "--compare", "hf"],
     "--run-impl bogus: not an implementation of this case (its implementations: ours, "
     "ours (hf weights), hf)"),
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
    # oneDNN, run for real, dispatches to the best ISA the CPU has (no ONEDNN_MAX_CPU_ISA here)
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
    # AVX-512 CPUs are named "AVX-512 ..." by oneDNN, or by a later ISA ("AVX10.1 and AMX")
    best = ("AVX-512", "AVX10", "AMX") if "avx512f" in env["isa"] else ("AVX2",)
    assert any(name in env["onednn_isa"] for name in best), env["onednn_isa"]


#: oneDNN's verbose output of one Linear under torch 2.14.1 (oneDNN 3.12) and 2.1.2 (oneDNN 3.1.1).
ONEDNN_3_12 = """\
onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
onednn_verbose,v1,info,gpu,runtime:none
onednn_verbose,v1,info,graph,backend,0:dnnl_backend
onednn_verbose,v1,primitive,exec,cpu,inner_product,brg_matmul:avx512_core,forward_inference,\
src:f32::blocked:ab::f0 wei:f32::blocked:ab::f0 bia:undef::undef::: dst:f32::blocked:ab::f0,\
attr-scratchpad:user,,mb4ic8oc16,0.0231934
"""
ONEDNN_3_1 = """\
onednn_verbose,info,oneDNN v3.1.1 (commit 64f6bcbcbab628e96f33a62c3e975f8535a7bde4)
onednn_verbose,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
onednn_verbose,info,gpu,runtime:none
onednn_verbose,exec,cpu,inner_product,x64:gemm:jit,forward_training,src_f32::blocked:ab:f0 \
wei_f32::blocked:ab:f0 bia_undef::undef:: dst_f32::blocked:ab:f0,attr-scratchpad:user ,,mb4ic8oc16,64.687
"""


def test_onednn_isa_is_read_from_the_verbose_info_line():
    for text in (ONEDNN_3_12, ONEDNN_3_1):
        assert parse_onednn_isa(text) == "Intel AVX-512 with Intel DL Boost and bfloat16 support"
    assert parse_onednn_isa("dnnl_verbose,info,cpu,isa:Intel AVX2\n") == "Intel AVX2"
    without = "\n".join(line for line in ONEDNN_3_12.splitlines() if "isa:" not in line)
    assert parse_onednn_isa(without) is None  # the exec line's kernel name is not the ISA line


def test_onednn_isa_probe_follows_the_isa_limit(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the probe inherits the environment
    assert onednn_isa() == "Intel AVX2"
    assert onednn_isa(timeout_s=0.001) == "unknown (the oneDNN probe ran over 0.001 s)"
