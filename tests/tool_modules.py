"""The command-line scripts of ``tools/`` as modules, for tests that call their ``main`` in-process
(cheaper than a subprocess). ``tools/`` is not a package, so each is imported from its file."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    """A fresh import of ``tools/<name>.py``.

    Args:
        name: The script's path under ``tools/`` without ``.py`` (``'train'``,
            ``'extract_features'``, ``'env/mmcv_source'``, ...).
    """
    spec = importlib.util.spec_from_file_location(f"{name.replace('/', '_')}_tool",
                                                  TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # registered before it runs, as an import would: dataclasses look their module up there
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
