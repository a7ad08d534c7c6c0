"""Writing a traced program as a deployable file: ONNX, OpenVINO IR or a ``torch.export`` archive,
each with the sizes it serves recorded inside it, each written atomically (complete under its name
or absent)."""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import torch

from ..checkpoint.atomic import write_atomic
from .tracing import ExportError, SizeRange

#: What an export can write, and the file each target's path names.
TARGETS = {"onnx": ".onnx", "openvino": ".xml", "torch-export": ".pt2"}
#: ONNX opsets the dynamo exporter writes (an export asks for 18 unless told otherwise).
OPSETS = range(18, 24)
#: The key under which every target records :func:`metadata`.
METADATA_KEY = "swinv2_backbone"
#: The input's name in every exported file.
INPUT_NAME = "images"
#: onnxscript rewrite rules that torch's ONNX optimizer runs without (:func:`lean_onnx_rewrites`).
SKIPPED_ONNX_REWRITES = frozenset({"SlicesSplit"})
#: Held while onnxscript's rule list is swapped, so that exports in two threads cannot restore each
#: other's swapped list (reentrant: nested exports in one thread restore in order).
_REWRITES_LOCK = threading.RLock()


def require(module: str, purpose: str) -> Any:
    """Import an optional package, or raise :class:`ExportError` naming the install command.

    Args:
        module: The package to import (``onnx``, ``onnxruntime``, ``openvino``).
        purpose: What it is needed for, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(f"{purpose} needs the package {module!r}, which is not installed: "
                          f"pip install 'swinv2-backbone[deploy]' (or pip install {module})") from err


def metadata(sizes: SizeRange, outputs: Sequence[str]) -> Dict[str, Any]:
    """What an exported file records about itself: the sizes it serves and its outputs' names."""
    return {"sizes": {"channels": sizes.channels, "min_height": sizes.min_height,
                      "min_width": sizes.min_width, "max_side": sizes.max_side,
                      "max_batch": sizes.max_batch, "fixed": sizes.fixed},
            "input": INPUT_NAME, "outputs": list(outputs)}


def read_metadata(text: str) -> Dict[str, Any]:
    """The inverse of :func:`metadata` from its JSON text (with the sizes as a :class:`SizeRange`)."""
    data = json.loads(text)
    data["sizes"] = SizeRange(**data["sizes"])
    return data


def check_target(target: str, output: os.PathLike, opset: int) -> Path:
    """``output`` as a path for ``target``, after checking both and the opset.

    Raises:
        ExportError: An unknown target or opset, a path whose suffix is not the target's, or a
            directory that does not exist.
    """
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported; choose {OPSETS.start}..{OPSETS.stop - 1}")
    path = Path(output)
    if path.suffix != TARGETS[target]:
        raise ExportError(f"a {target} file is named *{TARGETS[target]}, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ExportError(f"the output's directory {str(path.parent)!r} does not exist")
    return path


@contextlib.contextmanager
def lean_onnx_rewrites() -> Iterator[None]:
    """torch's ONNX optimizer (onnxscript's) without the rules in :data:`SKIPPED_ONNX_REWRITES`.

    SlicesSplit (two Slices of one tensor into one Split) looks for its second Slice by walking the
    whole graph once per Slice, a cost that grows with the square of the graph: on SwinV2-T 10.6 s
    of the optimizer's 13.1 s (2026-12-07), for no rewrite (the written file is the same,
    tests/test_deploy.py). An onnxscript without that rule list optimizes as it is.
    """
    try:
        from onnxscript import rewriter
    except ImportError:
        rewriter = None
    if not hasattr(rewriter, "_DEFAULT_REWRITE_RULES"):
        yield
        return
    with _REWRITES_LOCK:
        rules = rewriter._DEFAULT_REWRITE_RULES
        rewriter._DEFAULT_REWRITE_RULES = tuple(
            rule for rule in rules if getattr(rule, "name", None) not in SKIPPED_ONNX_REWRITES)
        try:
            yield
        finally:
            rewriter._DEFAULT_REWRITE_RULES = rules


def _onnx_bytes(program: "torch.export.ExportedProgram", info: Dict[str, Any], opset: int) -> bytes:
    require("onnx", "writing ONNX")
    require("onnxscript", "writing ONNX")
    with lean_onnx_rewrites():
        onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=opset,
                                         input_names=[INPUT_NAME], output_names=info["outputs"],
                                         verbose=False)
    proto = onnx_program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    return proto.SerializeToString()


def write(program: "torch.export.ExportedProgram", target: str, path: Path, sizes: SizeRange,
          outputs: Sequence[str], opset: int = 18) -> Path:
    """Write ``program`` as ``target`` to ``path`` (checked by :func:`check_target`); returns it.

    OpenVINO IR is two files (``.xml`` and its ``.bin``), each written atomically, the weights
    first, so an ``.xml`` under its name always has its weights beside it.
    """
    info = metadata(sizes, outputs)
    if target == "torch-export":
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            staged = Path(tmp) / path.name
            torch.export.save(program, staged, extra_files={f"{METADATA_KEY}.json": json.dumps(info)})
            write_atomic(path, staged.read_bytes())
        return path
    data = _onnx_bytes(program, info, opset)
    if target == "onnx":
        write_atomic(path, data)
        return path
    ov = require("openvino", "writing OpenVINO IR")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.with_suffix(".onnx").name
        staged.write_bytes(data)
        save_openvino(ov.convert_model(str(staged)), path, info)
    return path


def onnx_metadata(path: Path) -> Optional[str]:
    """The :data:`METADATA_KEY` entry of an ONNX file's metadata (external weight files not read;
    our exports hold their weights inline, so the whole file is parsed)."""
    onnx = require("onnx", "reading ONNX metadata")
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY)


def onnx_to_openvino(source: Path, path: Path) -> Path:
    """An ONNX file written by :func:`write` as OpenVINO IR at ``path`` (``.xml`` and ``.bin``), its
    metadata record kept: the IR :func:`write` gives for the same program (the same conversion),
    without a new trace.

    Raises:
        ExportError: ``source`` has no :data:`METADATA_KEY` record.
    """
    ov = require("openvino", "writing OpenVINO IR")
    text = onnx_metadata(source)
    if text is None:
        raise ExportError(f"{str(source)!r} has no {METADATA_KEY} metadata: export it with "
                          "tools/export.py (or swinv2_backbone.deploy.export)")
    save_openvino(ov.convert_model(str(source)), path, json.loads(text))
    return path


def save_openvino(model: Any, path: Path, info: Dict[str, Any]) -> None:
    """Write an OpenVINO model with ``info`` as its :data:`METADATA_KEY` record to ``path``
    (``.xml`` and its ``.bin``, each atomically, the weights first, so an ``.xml`` under its name
    always has its weights beside it)."""
    ov = require("openvino", "writing OpenVINO IR")
    model.set_rt_info(json.dumps(info), METADATA_KEY)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        xml = Path(tmp) / path.name
        ov.save_model(model, str(xml), compress_to_fp16=False)
        write_atomic(path.with_suffix(".bin"), xml.with_suffix(".bin").read_bytes())
        write_atomic(path, xml.read_bytes())
