"""tools/convert_checkpoint.py end to end: conversion with the printed report and config, export to
Hugging Face and timm (which load it and reproduce our features), and exact round trips back; a
classifier or a SimMIM checkpoint exports to the HF task model (or the encoder, --encoder-only) and
the native output names the heads it leaves out."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import pytest
import torch

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint import convert_checkpoint
from swinv2_backbone.models import SimMIM
from swinv2_backbone.models.simmim import simmim_mask
from swinv2_backbone.testing import peers
from kit import load_tool, run_script, run_tool

TOOL = "convert_checkpoint"
TOL = 1e-4


def tool_main():
    """The tool's ``main`` imported in-process (cheaper than a subprocess)."""
    return load_tool(TOOL).main


def features(x: torch.Tensor, **kwargs: Any) -> List[torch.Tensor]:
    model = Swinv2Backbone(**kwargs)
    model.init_weights()
    with torch.no_grad():
        return list(model.eval()(x))


@pytest.fixture(scope="module")
def native_w16(tmp_path_factory) -> Dict[str, Any]:
    """A 'fine-tuned' native backbone (random weights, every output norm) at windows
    (16, 16, 16, 8) / (12, 12, 12, 6), saved with its windows in the metadata."""
    kwargs = peers.ours(peers.MINI, peers.W16, out_norm=True)
    model = peers.randomize_(Swinv2Backbone(**kwargs), seed=5)
    directory = tmp_path_factory.mktemp("cli")
    path = str(directory / "finetuned.pth")
    torch.save({"state_dict": model.state_dict(),
                "meta": {"swinv2_backbone": {"window_size": [16, 16, 16, 8],
                                             "pretrained_window_sizes": [12, 12, 12, 6]}}}, path)
    return {"path": path, "state": model.state_dict(), "kwargs": kwargs, "dir": directory}


def _assert_round_trip(path: str, original: Dict[str, torch.Tensor]) -> None:
    """Every tensor that came back is bit-identical; only the inner output norms were lost."""
    back = convert_checkpoint(path).state_dict
    assert set(original) - set(back) == {f"norm{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert set(back) <= set(original)
    assert all(torch.equal(back[k], original[k]) for k in back)


@pytest.mark.slow
def test_convert_official_prints_report_and_config(tmp_path):
    timm_model = peers.timm_model(peers.MINI, peers.W16, seed=6)
    src = peers.save_torch(peers.official_checkpoint(timm_model), str(tmp_path), "official.pth")
    dst = str(tmp_path / "converted.safetensors")
    done = run_script(TOOL, src, dst)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "detected format:  official" in out
    assert "custom arch (embed_dims 32, depths (1, 1, 2, 1), num_heads (1, 2, 4, 8))" in out
    assert "training windows (16, 16, 16, 8), pretrained windows (12, 12, 12, 6)" in out
    assert "dropped:          classification head (2 keys); recomputed buffers" in out
    config_line = [line for line in out.splitlines() if line.strip().startswith("backbone=dict(")]
    assert len(config_line) == 1
    namespace: Dict[str, Any] = {}
    exec(config_line[0].strip(), {}, namespace)  # the pasted config line is valid Python
    cfg = namespace["backbone"]
    assert cfg["init_cfg"] == {"type": "Pretrained", "checkpoint": dst} and cfg.pop("type") == "Swinv2Backbone"
    x = peers.image()
    ours = features(x, **cfg, drop_path_rate=0.0, out_norm=False)
    diffs = peers.max_abs_diffs(ours, peers.timm_features(timm_model, x)[0])
    assert max(diffs) <= TOL, diffs


def exported(capsys: pytest.CaptureFixture, native: dict, out: str, to: str) -> str:
    """The tool's stdout after it exported the native checkpoint ``native`` to ``out`` ``--to``
    ``to`` in this process (exit status 0 checked; the script itself runs in
    :func:`test_convert_official_prints_report_and_config`)."""
    status, stdout, stderr = run_tool(capsys, TOOL, native["path"], out, "--to", to)
    assert status == 0, stderr
    return stdout


@pytest.mark.slow
def test_export_to_hf_loads_in_transformers_and_round_trips(native_w16, capsys):
    from transformers import Swinv2Backbone as HFBackbone
    from transformers import Swinv2Model

    out_dir = str(native_w16["dir"] / "hf")
    assert "left out output norm(s) ['norm0', 'norm1', 'norm2']" in exported(capsys, native_w16, out_dir, "hf")
    assert sorted(os.listdir(out_dir)) == ["config.json", "model.safetensors"]
    x = peers.image()
    hf_model = Swinv2Model.from_pretrained(out_dir).eval()
    hf_backbone = HFBackbone.from_pretrained(out_dir, out_features=["stage1", "stage2", "stage3", "stage4"]).eval()
    raw = features(x, **{**native_w16["kwargs"], "out_norm": False}, pretrained=native_w16["path"])
    stages = peers.max_abs_diffs(raw, peers.hf_features(hf_backbone, x))
    final = peers.max_abs_diffs([peers.final_norm(raw[3], native_w16["state"], "norm3")],
                                [peers.hf_final(hf_model, x)])
    print(f"PARITY export hf: final {final}, stages {stages}")
    assert max(final + stages) <= TOL
    back = str(native_w16["dir"] / "from_hf.pth")
    assert tool_main()([out_dir, back]) == 0
    _assert_round_trip(back, native_w16["state"])
    assert convert_checkpoint(back).window_sizes == (16, 16, 16, 8)


@pytest.mark.slow
def test_export_to_timm_loads_in_timm_and_round_trips(native_w16, capsys):
    import timm

    out_file = str(native_w16["dir"] / "timm.safetensors")
    stdout = exported(capsys, native_w16, out_file, "timm")
    assert "window_size=(16, 16, 16, 8), pretrained_window_sizes=(12, 12, 12, 6)" in stdout
    mini = peers.MINI
    timm_model = timm.create_model(
        "swinv2_tiny_window16_256", pretrained=True, pretrained_cfg_overlay=dict(file=out_file),
        num_classes=0, embed_dim=mini.embed_dims, depths=mini.depths, num_heads=mini.num_heads,
        pretrained_window_sizes=(12, 12, 12, 6)).eval()
    x = peers.image()
    raw = features(x, **{**native_w16["kwargs"], "out_norm": False}, pretrained=native_w16["path"])
    timm_stages, timm_final = peers.timm_features(timm_model, x)
    stages = peers.max_abs_diffs(raw, timm_stages)
    final = peers.max_abs_diffs([peers.final_norm(raw[3], native_w16["state"], "norm3")], [timm_final])
    print(f"PARITY export timm: final {final}, stages {stages}")
    assert max(final + stages) <= TOL
    back = str(native_w16["dir"] / "from_timm.safetensors")
    assert tool_main()([out_file, back, "--window-size", "16", "16", "16", "8",
                        "--pretrained-window-sizes", "12", "12", "12", "6"]) == 0
    _assert_round_trip(back, native_w16["state"])


@pytest.fixture(scope="module")
def simmim_training_checkpoint(tmp_path_factory) -> Dict[str, Any]:
    """A SimMIM pre-training checkpoint as mmengine's runner saves it (encoder, mask token, decoder;
    no windows recorded), of the mini variant at window 8, and its model."""
    model = peers.randomize_(SimMIM(peers.ours(peers.MINI, peers.W8, out_norm=True)), seed=8)
    path = str(tmp_path_factory.mktemp("simmim") / "iter_100.pth")
    torch.save({"meta": {"iter": 100}, "state_dict": model.state_dict()}, path)
    return {"path": path, "model": model.eval()}


@pytest.mark.slow
def test_hf_classifier_exports_as_classifier_with_its_labels(tmp_path, capsys):
    from transformers import Swinv2ForImageClassification, Swinv2Model

    labels = {i: f"class {i}" for i in range(10)}
    source = peers.hf_model("Swinv2ForImageClassification", peers.MINI, peers.W8, seed=62,
                            num_labels=len(labels), id2label=labels)
    source.save_pretrained(tmp_path / "src")
    out_dir = str(tmp_path / "hf")
    status, out, err = run_tool(capsys, TOOL, tmp_path / "src", out_dir, "--to", "hf")
    assert status == 0, err
    assert "(hf Swinv2ForImageClassification," in out
    assert "classification head" not in out.split("wrote:")[0]  # written, so not dropped
    exported, info = Swinv2ForImageClassification.from_pretrained(out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert exported.config.id2label == labels
    x = peers.image()
    with torch.no_grad():
        expected, got = source(x).logits, exported.eval()(x).logits
    assert float(expected.abs().max()) > 0.1, "logits are trivially small"
    diff = float((expected - got).abs().max())
    print(f"PARITY classifier -> CLI HF export: {diff:.2e}")
    assert diff <= TOL

    encoder_dir = str(tmp_path / "encoder")
    status, out, err = run_tool(capsys, TOOL, tmp_path / "src", encoder_dir, "--to", "hf",
                                "--encoder-only")
    assert status == 0, err
    assert "(hf Swinv2Model," in out
    assert "left out:         classification head (--encoder-only)" in out
    with open(os.path.join(encoder_dir, "config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["architectures"] == ["Swinv2Model"]
    _, info = Swinv2Model.from_pretrained(encoder_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


@pytest.mark.slow
def test_simmim_checkpoint_exports_as_masked_image_modeling(simmim_training_checkpoint, tmp_path,
                                                            capsys):
    from transformers import Swinv2ForMaskedImageModeling

    out_dir = str(tmp_path / "hf")
    # the training checkpoint does not record its windows
    status, out, err = run_tool(capsys, TOOL, simmim_training_checkpoint["path"], out_dir, "--to",
                                "hf", "--window-size", "8")
    assert status == 0, err
    assert "(hf Swinv2ForMaskedImageModeling," in out
    assert "load with:        transformers.Swinv2ForMaskedImageModeling.from_pretrained(" in out
    hf, info = Swinv2ForMaskedImageModeling.from_pretrained(out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    size = hf.config.image_size
    x = peers.image(seed=9, size=size)
    mask = simmim_mask(size, generator=torch.Generator().manual_seed(9))[None]
    with torch.no_grad():
        expected = simmim_training_checkpoint["model"](x, mask)
        got = hf.eval()(x, bool_masked_pos=mask.flatten(1)).reconstruction
    diff = float((expected - got).abs().max())
    print(f"PARITY SimMIM -> CLI HF export: reconstruction {diff:.2e}")
    assert diff <= TOL


def test_native_output_and_unexportable_heads_are_named(simmim_training_checkpoint, tmp_path,
                                                        capsys):
    main = tool_main()
    path = simmim_training_checkpoint["path"]
    assert main([path, str(tmp_path / "backbone.pth"), "--window-size", "8"]) == 0
    left = [line for line in capsys.readouterr().out.splitlines() if line.startswith("left out:")]
    assert len(left) == 1 and "mask token" in left[0] and "masked-image-modeling head" in left[0]
    assert not convert_checkpoint(str(tmp_path / "backbone.pth")).heads

    state = dict(torch.load(path, weights_only=True)["state_dict"])
    stride = 16  # the encoder's is 32: this decoder cannot go into Swinv2ForMaskedImageModeling
    state["decoder.0.weight"] = state["decoder.0.weight"][:stride ** 2 * 3]
    state["decoder.0.bias"] = state["decoder.0.bias"][:stride ** 2 * 3]
    other = peers.save_torch({"state_dict": state}, str(tmp_path), "stride16.pth")
    assert main([other, str(tmp_path / "hf"), "--to", "hf", "--window-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "decoder does not fit" in err and "--encoder-only" in err
    assert main([other, str(tmp_path / "hf"), "--to", "hf", "--window-size", "8",
                 "--encoder-only"]) == 0


def test_errors_are_reported_with_exit_status_2(native_w16, tmp_path, capsys):
    main = tool_main()
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "out.pth")]) == 2
    assert "error: checkpoint not found" in capsys.readouterr().err
    assert main([native_w16["path"], str(tmp_path / "o.pth"), "--format", "swin"]) == 2
    assert "unknown checkpoint format 'swin'" in capsys.readouterr().err
    plain = peers.save_torch(native_w16["state"], str(tmp_path), "plain.pth")
    assert main([plain, str(tmp_path / "hf"), "--to", "hf"]) == 2
    assert "does not record its training windows" in capsys.readouterr().err
    assert main([plain, str(tmp_path / "hf"), "--to", "hf", "--window-size", "16", "16", "16", "8",
                 "--image-size", "200"]) == 2
    assert "cannot be expressed" in capsys.readouterr().err
    assert main([plain, str(tmp_path / "ok.pth"), "--window-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "training windows (8, 8, 8, 8) (from given explicitly)" in out and "window_size=8" in out


def test_help_lists_formats(capsys):
    with pytest.raises(SystemExit) as done:
        tool_main()(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in ("hf", "official", "simmim", "timm", "torchvision", "mmpretrain", "native"):
        assert f"  {name}: " in out
