"""Loading never runs code from a checkpoint; broken files and mismatched weights give clear errors
naming the file and the keys, through every entry point a user has (convert_checkpoint.py,
extract_features.py --checkpoint, init_cfg, train.py --resume, test.py)."""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.checkpoint import CheckpointError, convert_checkpoint, load_checkpoint_file, \
    load_pretrained
from swinv2_backbone.openmmlab.resume import ResumeError, resolve_resume
from swinv2_backbone.testing import peers
from kit import RunsCode, load_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mini_state():
    return Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True)).state_dict()


def _write_malicious(path: str, marker: str, state) -> None:
    torch.save({"state_dict": dict(state), "payload": RunsCode(marker)}, path)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, mini_state):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.pth")
    _write_malicious(path, marker, mini_state)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pth: it references the Python object posix\.system.*could run code"):
        load_checkpoint_file(path)
    model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True), pretrained=path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        model.init_weights()
    assert not os.path.exists(marker)


def test_malicious_hf_directory_is_refused(tmp_path, mini_state):
    marker = str(tmp_path / "pwned")
    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "swinv2"}))
    _write_malicious(str(directory / "pytorch_model.bin"), marker, mini_state)
    with pytest.raises(CheckpointError, match=r"refusing to load .*pytorch_model\.bin"):
        convert_checkpoint(directory)
    assert not os.path.exists(marker)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_legacy_pickle_with_code_is_refused(tmp_path):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "legacy.pth")
    with open(path, "wb") as handle:
        pickle.dump({"model": RunsCode(marker)}, handle)
    with pytest.raises(CheckpointError, match=r"legacy\.pth"):
        load_checkpoint_file(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files_name_the_file(tmp_path, mini_state, suffix):
    path = str(tmp_path / f"whole{suffix}")
    if suffix == ".pth":
        torch.save(mini_state, path)
    else:
        peers.save_safetensors(mini_state, str(tmp_path), f"whole{suffix}")
    data = open(path, "rb").read()
    cut = str(tmp_path / f"cut{suffix}")
    with open(cut, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"cannot read .*cut\{suffix}.*truncated or corrupt"):
        load_checkpoint_file(cut)


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"\x00garbage that is not a checkpoint" * 10, "truncated or corrupt"),
])
def test_empty_and_garbage_files(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"bad\.pth.*{message}|{message}.*bad\.pth"):
        load_checkpoint_file(path)


def test_corrupt_zip_member(tmp_path, mini_state):
    path = str(tmp_path / "flipped.pth")
    torch.save(mini_state, path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    data = bytearray(open(path, "rb").read())
    start = data.find(b"PK\x03\x04", len(data) // 2)
    data[start:start + 4] = b"XXXX"
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    assert names  # it was a zip checkpoint before the damage
    with pytest.raises(CheckpointError, match=r"flipped\.pth"):
        load_checkpoint_file(path)


def test_not_a_dict_and_no_state_dict(tmp_path):
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match=r"list\.pth holds a list"):
        convert_checkpoint(listed)
    nested = tmp_path / "nested.pth"
    torch.save({"weights": {"a": torch.zeros(1)}, "epoch": 3}, nested)
    with pytest.raises(CheckpointError, match=r"no state dict found; top-level keys \[epoch, weights\]"):
        convert_checkpoint(nested)


def test_missing_paths_and_incomplete_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint_file(tmp_path / "nope.pth")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"expected config\.json and one of"):
        load_checkpoint_file(tmp_path / "dir")


def test_non_swinv2_hf_config_is_refused(tmp_path):
    model = peers.hf_model("Swinv2Model", peers.MINI, peers.W8, seed=1)
    model.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["model_type"] = "swin"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type 'swin'"):
        convert_checkpoint(tmp_path / "hf")


def test_mmengine_training_checkpoint_loads_weights_only(tmp_path, mini_state):
    """mmengine's message hub (HistoryBuffer) and numpy metadata pass the weights-only loader."""
    from mmengine.logging import HistoryBuffer

    history = HistoryBuffer()
    history.update(1.0)
    path = str(tmp_path / "iter_10.pth")
    torch.save({"meta": {"seed": np.int64(1), "lr": np.float64(0.1)},
                "state_dict": {f"backbone.{k}": v for k, v in mini_state.items()},
                "message_hub": {"log_scalars": {"loss": history}}}, path)
    assert convert_checkpoint(path).format == "native"


def test_missing_block_lists_keys(mini_state):
    state = {k: v for k, v in mini_state.items() if not k.startswith("layers.2.blocks.0.")}
    with pytest.raises(CheckpointError, match=r"missing keys \(17\): \[layers\.2\.blocks\.0\.\* \(17 keys\)\]"):
        convert_checkpoint(state)


def test_wrong_shape_is_listed(mini_state):
    state = dict(mini_state)
    state["layers.1.blocks.0.mlp.fc1.weight"] = torch.zeros(10, 64)
    with pytest.raises(CheckpointError, match=r"layers\.1\.blocks\.0\.mlp\.fc1\.weight: file \(10, 64\) "
                                              r"vs expected \(256, 64\)"):
        convert_checkpoint(state)


def test_partial_load_is_never_silent(mini_state):
    """A tiny model refuses the mini checkpoint with the offending keys, and keeps its weights."""
    model = Swinv2Backbone(arch="tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model, mini_state)
    message = str(info.value)
    assert "shape mismatches" in message and "layers.0.blocks.0.attn.proj.bias: checkpoint (32,) vs model (96,)" in message
    assert "missing keys (119): [layers.0.blocks.1.* (17 keys), layers.1.blocks.1.* (17 keys), " \
        "layers.2.blocks.2.* (17 keys)" in message and "layers.3.blocks.1.* (17 keys)]" in message
    assert "custom arch (embed_dims 32" in message and "embed_dims 96" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_hf_config_contradicting_the_weights_is_refused(tmp_path):
    model = peers.hf_model("Swinv2Model", peers.MINI, peers.W8, seed=2)
    model.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["depths"] = [1, 1, 6, 1]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"depths \[1, 1, 6, 1\] in the metadata vs \[1, 1, 2, 1\]"):
        convert_checkpoint(tmp_path / "hf")


# ------------------------------------------------------------- every entry point a user has

@pytest.fixture(scope="module")
def entry_points(tmp_path_factory):
    """name -> a function that feeds a checkpoint file to that entry point and returns the error
    text it gives (each entry point must refuse the file, never raise anything else)."""
    root = tmp_path_factory.mktemp("entry_points")
    image = root / "image.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    convert, extract, test_tool = (load_tool("convert_checkpoint"), load_tool("extract_features"),
                                   load_tool("test"))

    def through_convert(path: str, capsys) -> str:
        assert convert.main([path, str(root / "out.safetensors")]) == 2
        return capsys.readouterr().err

    def through_extract(path: str, capsys) -> str:
        assert extract.main([str(image), "--out", str(root / "features"), "--checkpoint", path,
                             "--no-progress"]) == 2
        return capsys.readouterr().err

    def through_init_cfg(path: str, capsys) -> str:
        model = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True),
                               init_cfg=dict(type="Pretrained", checkpoint=path))
        with pytest.raises(CheckpointError) as info:
            model.init_weights()
        return str(info.value)

    def through_resume(path: str, capsys) -> str:
        with pytest.raises(ResumeError) as info:
            resolve_resume(str(root), path)
        return str(info.value)

    def through_test(path: str, capsys) -> str:
        with pytest.raises(SystemExit) as info:
            test_tool.main([str(ROOT / "configs/demo/upernet_swinv2-compact_toy-shapes.py"), path,
                            "--work-dir", str(root / "test")])
        assert info.value.code == 2
        return capsys.readouterr().err

    return {"convert_checkpoint.py": through_convert, "extract_features.py --checkpoint": through_extract,
            "init_cfg": through_init_cfg, "train.py --resume": through_resume,
            "test.py": through_test}


def truncation_offsets(size: int) -> List[int]:
    """Cuts from the first bytes (magic, header length) through the middle to the last bytes (the
    zip central directory and end record, the safetensors data end)."""
    return sorted({1, 4, 8, 30, 100, 512, size // 10, size // 4, size // 2, 3 * size // 4,
                   9 * size // 10, size - 4096, size - 512, size - 100, size - 22, size - 1})


@pytest.mark.parametrize("entry", ["convert_checkpoint.py", "extract_features.py --checkpoint",
                                   "init_cfg", "train.py --resume", "test.py"])
def test_truncated_and_zeroed_checkpoints_are_refused_by_every_entry_point(
        tmp_path, mini_state, entry_points, capsys, entry):
    """A training checkpoint (zip) and a safetensors file, each cut at 16 offsets and zeroed."""
    whole = {".pth": tmp_path / "whole.pth", ".safetensors": tmp_path / "whole.safetensors"}
    torch.save({"state_dict": dict(mini_state), "meta": {"iter": 2}}, whole[".pth"])
    peers.save_safetensors(mini_state, str(tmp_path), "whole.safetensors")
    tried = 0
    for suffix, source in whole.items():
        data = source.read_bytes()
        cases = [(f"cut{n}{suffix}", data[:n]) for n in truncation_offsets(len(data))]
        cases.append((f"zeroed{suffix}", bytes(len(data))))
        for name, content in cases:
            path = tmp_path / name
            path.write_bytes(content)
            message = entry_points[entry](str(path), capsys)
            assert f"cannot read {path}" in message, (name, message)
            assert any(why in message for why in ("truncated or corrupt",
                                                  "not a valid safetensors file")), (name, message)
            tried += 1
    assert tried == 2 * 17


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize("entry", ["convert_checkpoint.py", "extract_features.py --checkpoint",
                                   "init_cfg", "train.py --resume", "test.py"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoints_are_refused_by_every_entry_point(tmp_path, mini_state, entry_points,
                                                                capsys, entry, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "iter_2.pth"
    torch.save({"state_dict": dict(mini_state), "meta": {"iter": 2}, "payload": RunsCode(str(marker))},
               path, _use_new_zipfile_serialization=not legacy)
    message = entry_points[entry](str(path), capsys)
    assert f"refusing to load {path}: it references the Python object posix.system" in message
    assert not marker.exists()
