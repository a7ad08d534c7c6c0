"""Faults in a feature-extraction run (tools/extract_features.py): a folder where some files are
unreadable or unusual, a rerun after it, a run killed while writing an output."""
from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from swinv2_backbone.checkpoint import atomic
from swinv2_backbone.features import (MAX_PIXELS, FeatureExtractor, ImageReadError, image_size,
                                      load_features, read_image)
from kit import TINY, load_tool, run_tool, save_backbone

ROOT = Path(__file__).resolve().parents[1]
GOOD = ["cmyk", "good_jpg", "good_png", "grey16", "rgba"]
#: bad file -> the reason its error must give
BAD = {
    "cut_png.png": "image file is truncated",
    "cut_jpg.jpg": "image file is truncated",
    "empty.jpg": "cannot identify image file",
    "text.jpg": "cannot identify image file",
    "float.tif": "mode 'F' (floating-point pixels) has no defined 0-255 range",
    "huge.png": f"more than max_pixels={MAX_PIXELS}",
    "bomb.png": "decompression bomb",
}


TOOL = load_tool("extract_features")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with a tiny image stream: what a
    decompression bomb looks like before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("faulty_images")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "good_png.png")
    Image.fromarray(rgb).save(images / "good_jpg.jpg", quality=90)
    Image.fromarray(rgb).convert("CMYK").save(images / "cmyk.jpg")
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (24, 32, 1), dtype=np.uint8)])).save(
        images / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (24, 32), dtype=np.uint16)).save(images / "grey16.png")
    png, jpg = (images / "good_png.png").read_bytes(), (images / "good_jpg.jpg").read_bytes()
    (images / "cut_png.png").write_bytes(png[: len(png) // 2])
    (images / "cut_jpg.jpg").write_bytes(jpg[: len(jpg) // 2])
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("this is a text file, not a JPEG\n")
    Image.fromarray(rng.random((24, 32), dtype=np.float32)).save(images / "float.tif")
    (images / "huge.png").write_bytes(png_header_only(10000, 9000))  # over ours, under Pillow's 2x
    (images / "bomb.png").write_bytes(png_header_only(40000, 40000))  # over Pillow's own limit
    checkpoint = root / "small.pth"
    save_backbone(checkpoint, TINY)
    return {"images": images, "checkpoint": checkpoint, "root": root}


def extract(capsys, folder: Dict[str, Path], out: Path, *extra: str) -> Tuple[int, str, str]:
    """The tool's ``main`` on the folder, stages 1 and 4 (:func:`kit.run_tool`)."""
    return run_tool(capsys, TOOL, folder["images"], "--out", out, "--checkpoint",
                    folder["checkpoint"], "--stages", "stage1", "stage4", "--no-progress", *extra)


def outputs(out: Path) -> Dict[str, int]:
    """Output file name -> modification time (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_every_good_image_is_processed_and_every_bad_one_reported(folder, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, stderr = extract(capsys, folder, out)
    assert status == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(BAD), stderr
    for name, reason in BAD.items():
        assert any(name in line and reason in line for line in errors), (name, errors)
    assert f"wrote features of {len(GOOD)} image(s) (stage1, stage4) to {out}; 0 already complete, " \
           f"skipped; {len(BAD)} could not be read" in stdout
    assert sorted(outputs(out)) == sorted(f"{n}.safetensors" for n in GOOD)
    extractor = FeatureExtractor(checkpoint=folder["checkpoint"], out_features=("stage1", "stage4"))
    for name in GOOD:
        tensors, meta = load_features(out / f"{name}.safetensors")
        source = Path(meta["source"])
        expected = extractor(read_image(source)[None])
        assert meta["input_size"] == [24, 32] and tensors["stage4"].shape == (64, 1, 1)
        for s in ("stage1", "stage4"):  # computed in a batch of 4 there, alone here
            torch.testing.assert_close(tensors[s], expected[s][0], rtol=1e-5, atol=1e-5)


def test_unusual_images_are_converted_as_documented(folder):
    grey = np.array(Image.open(folder["images"] / "grey16.png")).astype(np.float64)
    rgb = read_image(folder["images"] / "grey16.png")
    assert rgb.shape == (3, 24, 32)
    assert torch.equal(rgb[0], torch.from_numpy(np.floor(grey / 257 + 0.5).astype(np.uint8)))
    assert torch.equal(rgb[0], rgb[2])
    with Image.open(folder["images"] / "rgba.png") as rgba:
        assert torch.equal(read_image(folder["images"] / "rgba.png"),
                           torch.from_numpy(np.array(rgba)[..., :3]).permute(2, 0, 1))
    assert read_image(folder["images"] / "cmyk.jpg").shape == (3, 24, 32)
    with pytest.raises(ImageReadError, match=r"huge\.png': 10000x9000 is 90000000 pixels, more than "
                                             rf"max_pixels={MAX_PIXELS} \(a guard against"):
        read_image(folder["images"] / "huge.png")  # refused from the header, before decoding
    with pytest.raises(ImageReadError, match=r"24x32|32x24"):
        image_size(folder["images"] / "good_png.png", max_pixels=100)


def test_a_rerun_skips_exactly_the_complete_outputs(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert extract(capsys, folder, out)[0] == 1
    first = outputs(out)
    status, stdout, stderr = extract(capsys, folder, out)
    assert status == 1 and stderr.count("error: ") == len(BAD)  # the bad ones are still reported
    assert f"wrote features of 0 image(s) (stage1, stage4) to {out}; {len(GOOD)} already complete, " \
           "skipped" in stdout
    assert outputs(out) == first  # nothing rewritten
    # a truncated output, an output of other settings and a killed write's leftover
    data = (out / "good_png.safetensors").read_bytes()
    (out / "good_png.safetensors").write_bytes(data[: len(data) - 7])
    (out / ".rgba.safetensors.999.partial").write_bytes(b"half")
    extract(capsys, folder, tmp_path / "other", "--dtype", "bf16")
    (out / "grey16.safetensors").write_bytes((tmp_path / "other" / "grey16.safetensors").read_bytes())
    touched = outputs(out)
    status, stdout, _ = extract(capsys, folder, out)
    assert status == 1
    assert f"wrote features of 2 image(s) (stage1, stage4) to {out}; 3 already complete, " \
           "skipped" in stdout
    now = outputs(out)
    assert ".rgba.safetensors.999.partial" not in now
    assert {n for n in now if now[n] != touched.get(n)} == {"good_png.safetensors", "grey16.safetensors"}
    assert load_features(out / "grey16.safetensors")[1]["dtype"] == "fp32"
    status, stdout, _ = extract(capsys, folder, out, "--overwrite")
    assert f"wrote features of {len(GOOD)} image(s)" in stdout


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of the writer runs after it (no cleanup, no rename)."""


def test_a_killed_write_leaves_no_output_a_rerun_would_take_as_done(folder, tmp_path, capsys,
                                                                    monkeypatch):
    out = tmp_path / "out"
    real, calls = atomic._write_and_sync, []

    def dies_in_the_third_write(fd: int, data: bytes) -> None:
        calls.append(fd)
        if len(calls) == 3:
            os.write(fd, data[: len(data) // 2])
            raise _Killed()
        real(fd, data)

    monkeypatch.setattr(atomic, "_write_and_sync", dies_in_the_third_write)
    with pytest.raises(_Killed):
        extract(capsys, folder, out)
    monkeypatch.undo()
    written = sorted(p.name for p in out.glob("*.safetensors"))
    partial = sorted(p.name for p in out.glob(".*.partial"))
    assert len(written) == 2 and len(partial) == 1  # the third output exists only as a temporary
    stem = partial[0][1:].split(".safetensors")[0]
    assert not (out / f"{stem}.safetensors").exists()
    status, stdout, _ = extract(capsys, folder, out)
    assert f"wrote features of {len(GOOD) - 2} image(s) (stage1, stage4) to {out}; 2 already " \
           "complete, skipped" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.safetensors" for n in GOOD)


def test_pca_pictures_count_for_completeness(folder, tmp_path, capsys):
    out = tmp_path / "out"
    extract(capsys, folder, out, "--pca")
    (out / "rgba_stage4_pca.png").unlink()
    status, stdout, _ = extract(capsys, folder, out, "--pca")
    assert f"wrote features of 1 image(s) (stage1, stage4) to {out}; {len(GOOD) - 1} already " \
           "complete" in stdout
    assert (out / "rgba_stage4_pca.png").is_file()


def test_max_pixels_argument(folder, tmp_path, capsys):
    status, stdout, stderr = extract(capsys, folder, tmp_path / "o", "--max-pixels", "700")
    lines: List[str] = [x for x in stderr.splitlines() if "more than max_pixels=700" in x]
    refused = {Path(x.split("'")[1]).name for x in lines}  # every header of 24x32 pixels or more
    assert status == 1 and refused == {"cmyk.jpg", "good_jpg.jpg", "good_png.png", "grey16.png",
                                       "rgba.png", "cut_png.png", "cut_jpg.jpg", "float.tif",
                                       "huge.png"}, stderr
    with pytest.raises(SystemExit):
        TOOL.parse_args(["x", "--out", "o", "--max-pixels", "0"])


def test_feature_files_leave_the_page_cache_once_synced(folder, tmp_path, capsys, monkeypatch):
    """Every features file is dropped from the page cache (``POSIX_FADV_DONTNEED`` over the whole
    file) after its content is synced and before its rename; a system that refuses the advice
    still gets every file."""
    out = tmp_path / "out"
    real_sync, advised, synced = atomic._write_and_sync, [], set()

    def sync(fd: int, data: bytes) -> None:
        real_sync(fd, data)
        synced.add(fd)

    def advise(fd: int, offset: int, length: int, advice: int) -> None:
        assert fd in synced  # only once the content is on disk
        advised.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice))
        raise OSError(errno.EINVAL, "refused")  # the advice is optional: the write goes on

    monkeypatch.setattr(atomic, "_write_and_sync", sync)
    monkeypatch.setattr(os, "posix_fadvise", advise, raising=False)
    status, stdout, _ = extract(capsys, folder, out)
    assert f"wrote features of {len(GOOD)} image(s)" in stdout
    assert sorted(Path(p).name for p, *_ in advised) == sorted(
        f".{n}.safetensors.{os.getpid()}.partial" for n in GOOD)
    assert {(offset, length, advice) for _, offset, length, advice in advised} == {
        (0, 0, os.POSIX_FADV_DONTNEED)}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.safetensors" for n in GOOD)


def test_write_atomic_keeps_pages_cached_unless_asked(tmp_path, monkeypatch):
    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: advised.append(args), raising=False)
    atomic.write_atomic(tmp_path / "kept.bin", b"abc")
    assert advised == []
    atomic.write_atomic(tmp_path / "dropped.bin", b"abcd", keep_cached=False)
    assert [args[1:] for args in advised] == [(0, 0, os.POSIX_FADV_DONTNEED)]
    assert (tmp_path / "kept.bin").read_bytes() == b"abc"
    assert (tmp_path / "dropped.bin").read_bytes() == b"abcd"
