"""The tools' ``--runtime`` (``tools/extract_features.py``, ``tools/classify.py``,
``tools/benchmark.py``): an exported copy of the model in onnxruntime or OpenVINO, exported on the
fly or given with ``--exported``, computes what the eager model computes (within 1e-4, fp32) at
sizes that are no multiple of 32; a missing runtime package, a file whose range excludes an input
and a model the runtimes cannot run are refused with one line and no output."""
from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from capabilities import needs_dynamic_export
from kit import TINY, load_tool, run_tool, save_backbone
from swinv2_backbone.benchmark.cases import Measured, Result, compare
from swinv2_backbone.benchmark.report import markdown
from swinv2_backbone.checkpoint.build import build_backbone
from swinv2_backbone.deploy import ExportError, export, runtime_forward
from swinv2_backbone.deploy import forward as forward_module
from swinv2_backbone.features import load_features
from swinv2_backbone.features.classify import load_classifier
from swinv2_backbone.testing import peers

TOLERANCE = 1e-4  # max abs difference, fp32
RUNTIMES = ["onnxruntime", "openvino"]
#: Two image sizes, neither side a multiple of 32 (nor of the window): one batch each.
IMAGE_SIZES = [(45, 70), (100, 61)]
LABELS = ["circle", "square", "triangle", "star", "moon"]
#: A classifier preprocessing that keeps the aspect ratio: the images above become 60 x 93 and
#: 98 x 60 (above the 57 px floor of the HF checkpoint's small-map rule).
CLASSIFIER_SIZES = [(60, 93), (98, 60)]
PREPROCESSOR = {"do_resize": True, "size": {"shortest_edge": 60}, "resample": 2,
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}

extract_tool = load_tool("extract_features")
classify_tool = load_tool("classify")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Dict[str, Path]:
    """Two images, a native checkpoint of a tiny backbone (window 4) and its export (ONNX)."""
    root = tmp_path_factory.mktemp("runtime")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(IMAGE_SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    checkpoint = root / "tiny.pth"
    save_backbone(checkpoint, TINY, seed=5)
    return {"root": root, "checkpoint": checkpoint, "images": [root / f"img{i}.png" for i in range(2)]}


@pytest.fixture(scope="module")
def backbone_onnx(files) -> Path:
    path = files["root"] / "backbone.onnx"
    export(build_backbone(checkpoint=files["checkpoint"]).eval(), path, max_side=512, max_batch=4)
    return path


def error_line(err: str) -> str:
    """The tool's one ``error:`` line, which must end its stderr (a logger that an earlier test
    bound to its own, since closed, capture may print a traceback before it in this process)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    return errors[0]


def features(folder: Path) -> Dict[str, Dict[str, torch.Tensor]]:
    return {p.stem: load_features(p)[0] for p in sorted(folder.glob("*.safetensors"))}


def extract(capsys, files, out: Path, *args) -> Tuple[int, str, str]:
    return run_tool(capsys, extract_tool, *files["images"], "--out", out, "--checkpoint",
                    files["checkpoint"], "--prefetch", "0", "--no-progress", *args)


def assert_equal_features(got: Dict[str, Dict[str, torch.Tensor]],
                          want: Dict[str, Dict[str, torch.Tensor]]) -> None:
    assert got.keys() == want.keys() and len(want) == len(IMAGE_SIZES)
    for image, maps in want.items():
        assert got[image].keys() == maps.keys()
        for stage, tensor in maps.items():
            assert got[image][stage].shape == tensor.shape
            assert (got[image][stage] - tensor).abs().max().item() < TOLERANCE, (image, stage)


# ------------------------------------------------------------------------------ extract_features
@needs_dynamic_export
@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_extract_features_in_a_runtime_equals_eager(files, backbone_onnx, runtime, tmp_path, capsys):
    status, _, err = extract(capsys, files, tmp_path / "eager")
    assert status == 0, err
    status, out, err = extract(capsys, files, tmp_path / runtime, "--runtime", runtime,
                               "--exported", backbone_onnx, "--stages", "stage1", "stage3")
    assert status == 0, err
    want = {k: {s: v[s] for s in ("stage1", "stage3")} for k, v in features(tmp_path / "eager").items()}
    assert_equal_features(features(tmp_path / runtime), want)


@needs_dynamic_export
@pytest.mark.slow
def test_extract_features_exports_on_the_fly(files, tmp_path, capsys):
    status, _, err = extract(capsys, files, tmp_path / "eager")
    assert status == 0, err
    status, _, err = extract(capsys, files, tmp_path / "fly", "--runtime", "onnxruntime")
    assert status == 0, err
    assert_equal_features(features(tmp_path / "fly"), features(tmp_path / "eager"))


@needs_dynamic_export
@pytest.mark.slow
def test_inputs_of_one_size_get_a_fixed_size_copy_on_the_fly(files, backbone_onnx, monkeypatch):
    """All inputs of one size: the copy exported on the fly serves that size alone (the faster
    graph) and computes what the model does; two sizes: a range (the export asked for is recorded
    and the range file of ``backbone_onnx`` stands in for it)."""
    model = build_backbone(checkpoint=files["checkpoint"]).eval()
    x = torch.randn(2, 3, *IMAGE_SIZES[0], generator=torch.Generator().manual_seed(1))
    forward = runtime_forward(model, "openvino", sizes=[IMAGE_SIZES[0]] * 3, batch=2)
    assert forward.sizes.fixed and (forward.sizes.min_height, forward.sizes.min_width) == IMAGE_SIZES[0]
    with torch.no_grad():
        for got, want in zip(forward(x), model(x)):
            assert (got - want).abs().max().item() < TOLERANCE
    with pytest.raises(ExportError, match="outside the exported range"):
        forward(torch.zeros(1, 3, *IMAGE_SIZES[1]))
    asked = []

    @contextlib.contextmanager
    def range_file(model, max_side, max_batch, fixed_size=None):
        asked.append((max_side, max_batch, fixed_size))
        yield backbone_onnx

    monkeypatch.setattr(forward_module, "exported_copy", range_file)
    assert not runtime_forward(model, "onnxruntime", sizes=IMAGE_SIZES).sizes.fixed
    assert asked == [(4096, 64, None)]


@needs_dynamic_export
@pytest.mark.slow
def test_an_exported_file_that_does_not_serve_an_input_is_refused_before_any_output(
        files, backbone_onnx, tmp_path, capsys):
    big = files["root"] / "big.png"  # wider than the file's 512 px
    Image.fromarray(np.zeros((40, 600, 3), np.uint8)).save(big)
    status, out, err = run_tool(capsys, extract_tool, *files["images"], big, "--out", tmp_path / "o",
                                "--checkpoint", files["checkpoint"], "--runtime", "onnxruntime",
                                "--exported", backbone_onnx, "--prefetch", "0")
    assert status == 2
    assert error_line(err).startswith("error: input shape (1, 3, 40, 600) is outside the exported "
                                      "range"), err
    assert not (tmp_path / "o").exists()


def test_a_missing_runtime_package_is_named_with_its_install_command(files, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # importing it raises ImportError
    status, _, err = extract(capsys, files, tmp_path / "o", "--runtime", "openvino")
    assert status == 2
    assert "pip install 'swinv2-backbone[deploy]'" in error_line(err) and "openvino" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--runtime", "onnxruntime", "--dtype", "bf16"],
     "onnxruntime runs an exported float32 copy on the CPU; the model is bfloat16 on cpu"),
    (["--runtime", "onnxruntime", "--precision", "bf16"],
     "precision 'bf16' is an OpenVINO setting; onnxruntime runs f32"),
    (["--runtime", "torch", "--exported", "{root}/backbone.xml"], "no exported file at"),
])
def test_runtime_settings_the_runtimes_cannot_take_are_refused(files, tmp_path, capsys, args,
                                                               message):
    filled = [a.format(root=files["root"]) for a in args]
    status, _, err = extract(capsys, files, tmp_path / "o", *filled)
    assert status == 2 and message in error_line(err)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ classify
@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Tuple[Path, Path]:
    """An HF classification directory (window 8, aspect-keeping preprocessing) and its classifier
    exported by ``tools/export.py --what model`` (ONNX)."""
    directory = tmp_path_factory.mktemp("hf")
    model = peers.hf_model("Swinv2ForImageClassification", peers.MINI, peers.W8, 71, image_size=64,
                           num_labels=len(LABELS), id2label=dict(enumerate(LABELS)))
    model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    path = directory.parent / "classifier.onnx"
    status = load_tool("export").main([str(directory), "--what", "model", "--output", str(path),
                                       "--max-side", "256", "--max-batch", "2"])
    assert status == 0
    return directory, path


def predictions(out: str) -> List[Tuple[str, float]]:
    return [(m.group(1), float(m.group(2)))
            for m in re.finditer(r"^  \d\. (\S+ \(\d\))  ([0-9.]+)$", out, re.MULTILINE)]


@needs_dynamic_export
@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_classify_in_a_runtime_equals_eager(files, classifier, runtime, capsys):
    directory, onnx = classifier
    model, _ = load_classifier(directory)
    forward = runtime_forward(model, runtime, exported=onnx, sizes=CLASSIFIER_SIZES)
    for h, w in CLASSIFIER_SIZES:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            assert (forward(x) - model(x)).abs().max().item() < TOLERANCE
    common = [*files["images"], "--checkpoint", directory, "--topk", "3"]
    status, eager, err = run_tool(capsys, classify_tool, *common)
    assert status == 0, err
    status, out, err = run_tool(capsys, classify_tool, *common, "--runtime", runtime,
                                "--exported", onnx)
    assert status == 0, err
    want, got = predictions(eager), predictions(out)
    assert len(want) == 6 and [g[0] for g in got] == [w[0] for w in want]
    # printed with 4 decimals: values closer than 1e-4 print at most one last digit apart
    assert all(abs(g[1] - w[1]) <= TOLERANCE + 1e-9 for g, w in zip(got, want))


@needs_dynamic_export
@pytest.mark.slow
def test_classify_refuses_a_backbone_file_for_a_classifier(files, classifier, backbone_onnx, capsys):
    directory, _ = classifier
    status, out, err = run_tool(capsys, classify_tool, *files["images"], "--checkpoint", directory,
                                "--runtime", "onnxruntime", "--exported", backbone_onnx)
    assert status == 2 and "has 4 outputs" in error_line(err)
    assert out == ""


# ------------------------------------------------------------------------------ benchmark
def test_runtime_rows_add_a_column_only_to_cases_that_have_them():
    def result(impl, reference=None, runtime=None):
        return Result(impl, (8, 8), 1, "fp32", "inference", "eager", 1.0, 1.0, 1.0, 1.0, 0.0,
                      pid=1, reference=reference, runtime=runtime)

    eager = [torch.tensor([3.0, -4.0])]
    measured = Measured([result("ours"), result("onnxruntime f32: ours", "ours", "onnxruntime f32")],
                        {"ours": eager, "onnxruntime f32: ours": [eager[0] + 2e-5]}, {})
    ours, row = compare(measured)
    assert row.fp32_max_abs == pytest.approx(2e-5, abs=1e-7) and row.agrees and ours.fp32_max_abs is None
    with_rows, without = markdown([ours, row], "x").splitlines(), markdown([ours], "x").splitlines()
    assert with_rows[0].endswith("| rel err vs fp32 | max abs vs eager fp32 |")
    assert with_rows[3].endswith("| 2.0e-05 |") and with_rows[2].endswith("|  |  |  |")
    assert without[0].endswith("| rel err vs fp32 |") and without[1] == "|" + "---|" * 17


@needs_dynamic_export
@pytest.mark.slow
def test_benchmark_runtime_rows_run_beside_eager_on_the_same_weights(monkeypatch, capsys):
    benchmark = load_tool("benchmark")
    # cheap exports: one block per stage, 16 channels in stage 1
    micro = peers.Variant("micro", 16, (1, 1, 1, 1), (1, 1, 2, 2))
    monkeypatch.setattr(benchmark, "variant_of", lambda arch: micro)
    exported = []  # the sizes each of our exports serves: every size, then the case's one size
    export = benchmark.export
    monkeypatch.setattr(benchmark, "export", lambda *a, **kw: exported.append(
        kw.get("fixed_size")) or export(*a, **kw))
    results = benchmark.main(["--sizes", "96x64", "--compare", "hf", "--runtimes",
                              "torch,onnxruntime,openvino", "openvino-int8", "--fixed-size-rows",
                              "--no-floor", "--repeats", "1", "--warmup", "0"])
    assert exported == [None, (96, 64)]  # one file per kind, run in both runtimes
    eager = ["ours", "ours (hf weights)", "hf"]
    rows = [f"{runtime} f32: {impl}" for runtime in RUNTIMES
            for impl in ("ours", "ours (fixed size)", "hf")]
    assert [r.impl for r in results] == eager + rows + ["openvino int8: ours"]
    int8 = results.pop()  # quantized (not f32 under another name); random weights: not judged
    assert int8.reference == "ours" and int8.agrees is None and int8.median_s > 0
    assert 1e-4 < int8.fp32_max_abs and 0 < int8.max_rel_diff < 1
    for r in results[3:]:
        assert r.runtime in ("onnxruntime f32", "openvino f32") and r.median_s > 0
        assert r.reference == ("ours (hf weights)" if r.impl.endswith("hf") else "ours")
        assert r.agrees and r.fp32_max_abs < TOLERANCE
    printed = capsys.readouterr().out
    assert "| max abs vs eager fp32 |" in printed and "| openvino f32: hf | 96x64 |" in printed
    assert "WARNING" not in printed
