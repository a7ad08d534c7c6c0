"""The compatibility helpers give the behaviour of the running torch, whichever branch it takes
(CI runs this file on torch 2.1 and on the pinned newest torch)."""
import importlib.metadata
import io
import pickle

import pytest
import torch
from torch.torch_version import TorchVersion

from swinv2_backbone import compat
from capabilities import needs_cpu_fp16


class _Opaque:
    """A class torch's weights-only unpickler does not know."""

    def __init__(self, value: int) -> None:
        self.value = value


@pytest.mark.parametrize("version, release", [("2.1.2+cu121", (2, 1)), ("2.14.1", (2, 14)),
                                              ("2.15.0a0+git1234", (2, 15)), ("10.0", (10, 0))])
def test_release_is_read_from_the_version_string(version, release):
    assert compat._release(version) == release


def test_unreadable_version_is_an_error():
    with pytest.raises(ValueError, match="cannot read a torch release from 'nightly'"):
        compat._release("nightly")


@pytest.mark.parametrize("version", [torch.__version__, importlib.metadata.version("torch")],
                         ids=["torch.__version__", "installed distribution"])
def test_running_release_matches_torch(version):
    """Checked with torch's own version ordering (PEP 440, which ranks ``.dev`` first), on the
    module's version and on the installed distribution's metadata: the release is the
    ``major.minor`` whose versions hold the running one."""
    major, minor = compat.TORCH_RELEASE
    assert TorchVersion(version) >= f"{major}.{minor}.dev0"
    assert TorchVersion(version) < f"{major}.{minor + 1}.dev0"


def test_is_compiling_is_true_only_under_torch_compile():
    def f(x):
        return x + 1 if compat.is_compiling() else x

    x = torch.zeros(3)
    assert not compat.is_compiling()
    assert torch.equal(f(x), x)
    assert torch.equal(torch.compile(f, backend="eager")(x), x + 1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, pytest.param(torch.float16, marks=needs_cpu_fp16)])
def test_autocast_state_and_dtype_on_cpu(dtype):
    assert not compat.autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=dtype):
        assert compat.autocast_enabled("cpu") and not compat.autocast_enabled("cuda")
        assert compat.autocast_dtype("cpu") == dtype
    assert not compat.autocast_enabled("cpu")


def test_weights_only_default_matches_torch_load():
    blob = io.BytesIO()
    torch.save({"x": _Opaque(3)}, blob)
    blob.seek(0)
    if compat.weights_only_is_default():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(blob)
    else:
        assert torch.load(blob)["x"].value == 3
    blob.seek(0)
    with pytest.raises(pickle.UnpicklingError):  # asked for explicitly: refused on every torch
        torch.load(blob, weights_only=True)


def test_load_weights_only_takes_allow_listed_objects_only():
    blob = io.BytesIO()
    torch.save({"x": _Opaque(5), "t": torch.arange(3)}, blob)
    blob.seek(0)
    with pytest.raises(pickle.UnpicklingError) as refused:
        compat.load_weights_only(blob)
    name = f"{_Opaque.__module__}._Opaque"
    assert compat.refused_global(str(refused.value)) == name
    before = torch.serialization.get_safe_globals() if compat.weights_only_is_default() else None
    registered = compat.add_safe_globals([_Opaque])
    try:
        assert registered == compat.weights_only_is_default()
        blob.seek(0)
        loaded = compat.load_weights_only(blob)
        assert loaded["x"].value == 5 and torch.equal(loaded["t"], torch.arange(3))
    finally:  # leave the process's allow-list as it was
        if registered:
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(before)
        else:
            del compat._EXTRA_SAFE[name]


@pytest.mark.parametrize("message, name", [
    ("Weights only load failed. Unsupported global: GLOBAL posix.system was not an allowed global",
     "posix.system"),
    ("Weights only load failed. WeightsUnpickler error: Unsupported class posix.system", "posix.system"),
    ("Weights only load failed. Unpickling error: pickle data was truncated", None)])
def test_refused_global_reads_both_message_forms(message, name):
    assert compat.refused_global(message) == name
