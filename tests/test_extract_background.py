"""Feature extraction with its background threads (tools/extract_features.py --prefetch,
swinv2_backbone.features.background): the same bytes as the synchronous run, unreadable images
still skipped, and every error of a thread raised in the main thread, never a hang."""
from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from swinv2_backbone.features import (AUTO_DEPTH, BackgroundConsumer, FeatureExtractor,
                                      ForwardTiming, Prefetcher, auto_depth, image_size,
                                      usable_cpus)
from swinv2_backbone.features import extractor as extractor_module
from swinv2_backbone.features import resume
from swinv2_backbone.features.background import cgroup_cpu_quota
from kit import TINY, load_tool, run_tool, save_backbone, within

TOOL = load_tool("extract_features")
THREADS = ("swinv2-image-loader", "swinv2-feature-writer")
#: Seconds any run here may take before it counts as hung (each takes well under 5).
LIMIT = 60.0


def no_background_threads() -> bool:
    """Whether every loader and writer thread has ended."""
    return not any(t.name in THREADS for t in threading.enumerate())


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Eight small images (PNG and JPEG, two sizes), the fifth a JPEG cut in half (its header reads,
    its pixels do not: the loader thread meets the error), and a checkpoint of a small model."""
    root = tmp_path_factory.mktemp("background")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(8):
        h, w = (32, 48) if k % 3 else (40, 32)
        pixels = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        pixels.save(images / f"img{k}.{'png' if k % 2 else 'jpg'}", **({} if k % 2 else {"quality": 95}))
    cut = images / "img4.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    checkpoint = root / "small.pth"
    save_backbone(checkpoint, TINY)
    return {"images": images, "checkpoint": checkpoint}


def extract(capsys: pytest.CaptureFixture, folder: Dict[str, Path], out: Path,
            *extra: str) -> Tuple[int, str, str]:
    """The tool's ``main`` on the folder (:func:`kit.run_tool`) within :data:`LIMIT`; with the
    background threads (``--prefetch 2``) unless ``extra`` says otherwise, whatever the CPUs."""
    prefetch = [] if "--prefetch" in extra else ["--prefetch", "2"]
    return run_tool(capsys, TOOL, folder["images"], "--out", out, "--checkpoint",
                    folder["checkpoint"], "--batch-size", "2", "--no-progress", *prefetch, *extra,
                    limit=LIMIT)


def contents(out: Path) -> Dict[str, Any]:
    """File name -> its bytes; for ``.safetensors`` files, (decoded header, tensor bytes): the
    safetensors writer puts the metadata keys in a random order (a Rust HashMap), so the same
    features give different header bytes from call to call."""
    found: Dict[str, Any] = {}
    for path in sorted(out.iterdir()):
        data = path.read_bytes()
        if path.suffix == ".safetensors":
            size = int.from_bytes(data[:8], "little")
            found[path.name] = (json.loads(data[8:8 + size]), data[8 + size:])
        else:
            found[path.name] = data
    return found


GOOD = [f"img{k}" for k in range(8) if k != 4]


# ------------------------------------------------------------------------------------ the tool
def test_background_threads_write_the_same_bytes_and_skip_the_bad_image(folder, tmp_path, capsys):
    assert image_size(folder["images"] / "img4.jpg") == (32, 48)  # fails in decoding, not before
    runs = {}
    for prefetch in ("0", "1", "3"):
        out = tmp_path / prefetch
        status, stdout, stderr = extract(capsys, folder, out, "--prefetch", prefetch, "--pca")
        assert status == 1, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "img4.jpg" in errors[0] and "truncated" in errors[0].lower(), stderr
        assert f"wrote features of {len(GOOD)} image(s)" in stdout and "1 could not be read" in stdout
        assert re.search(rf"^{len(GOOD)} images in [0-9.]+ s: [0-9.]+ images/s end to end; model forward "
                         r"alone [0-9.]+ images/s \(end to end [0-9.]+ % of it\); prefetch " + prefetch + "$",
                         stdout, re.M), stdout
        runs[prefetch] = contents(out)
        assert sorted(runs[prefetch]) == sorted(
            [f"{n}.safetensors" for n in GOOD] + [f"{n}_stage{s}_pca.png" for n in GOOD for s in range(1, 5)])
    assert runs["1"] == runs["0"] and runs["3"] == runs["0"]  # features and pictures byte for byte
    assert no_background_threads()


def test_extract_returns_the_throughput(folder, tmp_path):
    args = TOOL.parse_args([str(folder["images"]), "--out", str(tmp_path), "--checkpoint",
                            str(folder["checkpoint"]), "--batch-size", "3", "--no-progress"])
    summary = within(LIMIT, lambda: TOOL.extract(args))
    assert (summary.found, summary.written, summary.skipped, len(summary.failed)) == (8, 7, 0, 1)
    # batches by size: img0, img3, img6 (40x32); img1, img2, img4 (unreadable); img5, img7 (32x48)
    assert summary.forward.images == 7 and summary.forward.batches == 3
    assert 0 < summary.forward.seconds <= summary.seconds
    assert summary.images_per_second == pytest.approx(7 / summary.seconds)
    assert summary.forward.images_per_second == pytest.approx(7 / summary.forward.seconds)
    share = 100 * summary.forward.seconds / summary.seconds
    assert summary.throughput() == (
        f"7 images in {summary.seconds:.1f} s: {7 / summary.seconds:.2f} images/s end to end; model "
        f"forward alone {7 / summary.forward.seconds:.2f} images/s (end to end {share:.1f} % of it); "
        f"{summary.prefetch}")
    assert summary.prefetch.startswith("prefetch ") and "(auto: " in summary.prefetch
    rerun = within(LIMIT, lambda: TOOL.extract(args))  # tries img4 again, computes nothing
    assert (rerun.written, rerun.skipped, len(rerun.failed), rerun.forward.images) == (0, 7, 1, 0)


def test_an_unexpected_error_in_the_loader_thread_surfaces(folder, tmp_path, capsys, monkeypatch):
    real, calls = extractor_module.read_pixels, []

    def fails_on_the_fourth(*args: Any, **kwargs: Any):
        calls.append(threading.current_thread().name)
        if len(calls) == 4:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(extractor_module, "read_pixels", fails_on_the_fourth)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        extract(capsys, folder, out)
    assert set(calls) == {"swinv2-image-loader"}  # read there, raised here
    # batches of 2 by size: img0 + img3, img6, then img1 + img2 (the fourth read); the two batches
    # before the error were computed and written, nothing else (no temporary either)
    assert sorted(p.name for p in out.iterdir()) == ["img0.safetensors", "img3.safetensors",
                                                     "img6.safetensors"]
    assert no_background_threads()
    monkeypatch.undo()
    status, stdout, _ = extract(capsys, folder, out)  # a rerun completes the rest
    assert status == 1 and "3 already complete" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.safetensors" for n in GOOD)


def test_a_failed_write_stops_the_run_with_exit_2(folder, tmp_path, capsys, monkeypatch):
    real, calls = resume.save_features, []

    def full_disk_on_the_third(result, extractor, path) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise OSError(28, f"No space left on device: {path}")
        real(result, extractor, path)

    monkeypatch.setattr(resume, "save_features", full_disk_on_the_third)
    status, stdout, stderr = extract(capsys, folder, tmp_path / "out")
    assert status == 2 and "error: [Errno 28] No space left on device" in stderr, stderr
    assert set(calls) == {"swinv2-feature-writer"} and len(calls) == 3  # nothing written after it
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 2
    assert no_background_threads()


def test_an_error_in_the_model_lets_the_queued_outputs_be_written(folder, tmp_path, capsys, monkeypatch):
    real, batches = FeatureExtractor._forward, []

    def fails_in_the_third_batch(self, x):
        batches.append(x.shape[0])
        if len(batches) == 3:
            raise RuntimeError("out of memory")
        return real(self, x)

    monkeypatch.setattr(FeatureExtractor, "_forward", fails_in_the_third_batch)
    with pytest.raises(RuntimeError, match="out of memory"):
        extract(capsys, folder, tmp_path / "out")
    # the two batches before it (img0 + img3, then img6) were queued for the writer and written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "img0.safetensors", "img3.safetensors", "img6.safetensors"]
    assert no_background_threads()


@pytest.mark.parametrize("value", ["-1", "2.5", "many", "Auto", ""])
def test_bad_prefetch_values_are_refused(folder, tmp_path, capsys, value: str):
    message = (f"argument --prefetch: must be 'auto' or an int >= 0 (0: no background threads), "
               f"got {value!r}")
    with pytest.raises(SystemExit) as exit_:
        TOOL.main([str(folder["images"]), "--out", str(tmp_path), "--prefetch", value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("device, threads, cpus, depth, why", [
    ("cpu", 2, 2, 0, "no CPU to spare beside the model's 2 threads"),
    ("cpu", 4, 2, 0, "no CPU to spare beside the model's 4 threads"),
    ("cpu", 1, 2, AUTO_DEPTH, "2 CPUs for the model's 1 thread"),
    ("cpu", 8, 16, AUTO_DEPTH, "16 CPUs for the model's 8 threads"),
    ("cuda", 16, 16, AUTO_DEPTH, "the model runs on cuda"),
    ("cuda", 2, 1, AUTO_DEPTH, "the model runs on cuda"),
])
def test_auto_prefetch_runs_the_threads_only_where_they_have_a_core(device, threads, cpus, depth,
                                                                     why):
    assert auto_depth(device, threads, cpus) == (depth, why)


def _cgroups(tmp_path, membership, files):
    """A fake cgroup mount under ``tmp_path`` with ``files`` ({relative path: text}) and the
    process's membership file."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(membership)
    return tmp_path, tmp_path / "self-cgroup"


@pytest.mark.parametrize("membership, files, quota", [
    # v2: the process's own cgroup, and a tighter ancestor
    ("0::/pod/app\n", {"pod/app/cpu.max": "150000 100000\n"}, 1.5),
    ("0::/pod/app\n", {"pod/app/cpu.max": "max 100000\n", "pod/cpu.max": "300000 100000\n",
                        "cpu.max": "max 100000\n"}, 3.0),
    ("0::/pod/app\n", {"pod/app/cpu.max": "400000 100000\n", "pod/cpu.max": "200000 100000\n"}, 2.0),
    ("0::/\n", {"unified/cpu.max": "50000 100000\n"}, 0.5),  # hybrid: v2 under unified/
    # v1: the cpu controller's folder
    ("4:memory:/x\n1:cpu,cpuacct:/docker/c1\n",
     {"cpu/docker/c1/cpu.cfs_quota_us": "200000\n", "cpu/docker/c1/cpu.cfs_period_us": "100000\n"},
     2.0),
    ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    # no quota anywhere, no files, a malformed file
    ("0::/a\n", {"a/cpu.max": "max 100000\n"}, None),
    ("0::/a\n", {}, None),
    ("0::/a\n", {"a/cpu.max": "garbage\n"}, None),
    ("0::/../../outside\n", {}, None),  # outside the namespace's root: the walk still ends
])
def test_the_cgroup_cpu_quota_is_the_tightest_on_the_path_to_the_root(tmp_path, membership, files,
                                                                        quota):
    assert cgroup_cpu_quota(*_cgroups(tmp_path, membership, files)) == quota


def test_usable_cpus_caps_the_affinity_by_the_quota_rounding_up(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert usable_cpus(*_cgroups(tmp_path / "a", "0::/\n", {"cpu.max": "150000 100000"})) == 2
    assert usable_cpus(*_cgroups(tmp_path / "b", "0::/\n", {"cpu.max": "5000 100000"})) == 1
    assert usable_cpus(*_cgroups(tmp_path / "c", "0::/\n", {"cpu.max": "max 100000"})) == 8
    assert usable_cpus(*_cgroups(tmp_path / "d", "0::/\n", {"cpu.max": "6400000 100000"})) == 8
    assert usable_cpus(tmp_path / "none", tmp_path / "no-such-file") == 8


@pytest.mark.parametrize("cpus, depth, why", [
    (1, 0, "prefetch 0 (auto: no CPU to spare beside the model's 1 thread)"),
    (3, AUTO_DEPTH, f"prefetch {AUTO_DEPTH} (auto: 3 CPUs for the model's 1 thread)"),
])
def test_the_tool_reports_the_depth_auto_chose(folder, tmp_path, capsys, monkeypatch, cpus, depth,
                                               why):
    monkeypatch.setattr(TOOL, "usable_cpus", lambda: cpus)
    made, real = [], extractor_module.Prefetcher
    monkeypatch.setattr(extractor_module, "Prefetcher",
                        lambda items, d, **kw: made.append(d) or real(items, d, **kw))
    status, stdout, _ = extract(capsys, folder, tmp_path / "out", "--prefetch", "auto")
    assert status == 1 and f"% of it); {why}" in stdout  # 1: img4 cannot be read
    assert made == [depth]  # the image loader's queue
    assert TOOL.resolve_prefetch(3, torch.device("cpu")) == (3, "prefetch 3")
    assert TOOL.resolve_prefetch("auto", torch.device("cuda")) == (
        AUTO_DEPTH, f"prefetch {AUTO_DEPTH} (auto: the model runs on cuda)")


# ------------------------------------------------------------------------------------ the API
def test_api_prefetch_gives_the_same_features_and_checks_its_argument(folder):
    extractor = FeatureExtractor(checkpoint=folder["checkpoint"], out_features=("stage1", "stage4"))
    files = [folder["images"] / f"{n}.{'png' if int(n[3:]) % 2 else 'jpg'}" for n in GOOD]
    timing = ForwardTiming()
    sync = within(LIMIT, lambda: list(extractor.iter_files(files, batch_size=2, prefetch=0)))
    ahead = within(LIMIT, lambda: list(extractor.iter_files(files, batch_size=2, prefetch=4,
                                                            timing=timing)))
    assert [r.index for r in ahead] == [r.index for r in sync]
    for a, s in zip(ahead, sync):
        assert all(torch.equal(a.features[n], s.features[n]) for n in ("stage1", "stage4"))
    assert (timing.images, timing.batches) == (7, 4) and timing.seconds > 0
    for bad in (-1, 1.5, True, "2", None):
        with pytest.raises(ValueError, match=rf"prefetch must be an int >= 0 .*got {re.escape(repr(bad))}"):
            next(extractor.iter_files(files, prefetch=bad))


def test_api_closing_early_stops_the_loader(folder):
    extractor = FeatureExtractor(checkpoint=folder["checkpoint"], out_features=("stage4",))
    files = sorted(folder["images"].glob("*.png"))
    results = extractor.iter_files(files, batch_size=1, prefetch=2)
    first = next(results)
    assert first.index == 0 and not no_background_threads()
    within(LIMIT, results.close)
    assert no_background_threads()


# ------------------------------------------------------------------------------------ the threads
def test_prefetcher_keeps_order_and_bounds_how_far_it_runs_ahead():
    produced: List[int] = []

    def source():
        for k in range(20):
            produced.append(k)
            yield k

    taken = []
    with Prefetcher(source(), depth=3) as items:
        for k in items:
            time.sleep(0.005)  # let the producer run ahead as far as it may
            # taken so far, this one, 3 queued and 1 waiting to be queued
            assert len(produced) <= k + 1 + 3 + 1
            taken.append(k)
    assert taken == list(range(20))
    assert list(Prefetcher(iter(range(5)), depth=0)) == list(range(5))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetcher_raises_the_source_error_after_the_items_before_it(depth: int):
    def source():
        yield from (1, 2)
        raise KeyError("third")

    taken = []

    def consume() -> None:
        for item in Prefetcher(source(), depth=depth):
            taken.append(item)

    with pytest.raises(KeyError, match="third"):
        within(LIMIT, consume)
    assert taken == [1, 2]


def test_prefetcher_close_stops_a_producer_blocked_on_a_full_queue():
    endless = iter(int, 1)  # 0, 0, 0, ... forever
    items = Prefetcher(endless, depth=2, name="swinv2-image-loader")
    assert next(items) == 0
    within(LIMIT, items.close)
    assert no_background_threads()
    assert list(items) == []


def test_background_consumer_handles_in_order_in_its_thread():
    seen: List[Tuple[int, str]] = []
    with BackgroundConsumer(lambda k: seen.append((k, threading.current_thread().name)), depth=2,
                            name="swinv2-feature-writer") as consumer:
        for k in range(10):
            consumer.submit(k)
    assert seen == [(k, "swinv2-feature-writer") for k in range(10)]
    assert no_background_threads()
    here: List[str] = []
    with BackgroundConsumer(lambda k: here.append(threading.current_thread().name), depth=0) as sync:
        sync.submit(1)
    assert here == [threading.current_thread().name]


def test_background_consumer_error_surfaces_and_stops_the_rest():
    handled = []

    def handle(k: int) -> None:
        if k == 3:
            raise ValueError("bad item 3")
        handled.append(k)

    def produce() -> None:
        with BackgroundConsumer(handle, depth=2) as consumer:
            for k in range(100):  # the error comes out of submit() long before the end
                consumer.submit(k)
                time.sleep(0.001)

    with pytest.raises(ValueError, match="bad item 3"):
        within(LIMIT, produce)
    assert handled == [0, 1, 2]


class _Interrupted(BaseException):
    """Stands for any error of the caller, even one that is not an ``Exception`` (Ctrl-C)."""


def test_background_consumer_finishes_the_queue_when_the_caller_fails():
    handled = []

    def produce() -> None:
        with BackgroundConsumer(lambda k: (time.sleep(0.01), handled.append(k)), depth=5) as consumer:
            for k in range(4):
                consumer.submit(k)
            raise _Interrupted()

    with pytest.raises(_Interrupted):
        within(LIMIT, produce)
    assert handled == [0, 1, 2, 3]
