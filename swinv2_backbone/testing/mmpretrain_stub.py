"""The one workaround for importing mmpretrain 1.2, a parity peer.

mmpretrain 1.2's ``mmpretrain.models.multimodal`` fails to import with transformers 5 (a ``TypeError``,
not an ``ImportError``), and ``mmpretrain.models`` imports it. This project uses mmpretrain only as a
parity peer and never its multimodal models, so :func:`install` puts a finder on ``sys.meta_path``
that serves an empty package for that one name; the rest of mmpretrain imports normally.

Two users, one code: :func:`swinv2_backbone.testing.peers.import_mmpretrain` calls :func:`install`
before importing mmpretrain, and ``tools/setup_env.sh`` copies this file into its virtual
environment's site-packages as ``_swinv2_mmpretrain_stub`` with a ``.pth`` file that calls
:func:`install` at start-up. The start-up hook is needed because mmdet 3.3 imports
``mmpretrain.models`` whenever mmpretrain is installed (its ReID data preprocessor), so without it
``import mmdet.models`` fails in that environment, in code that never imports this package.
Invariant: this module imports the standard library only, so that the ``.pth`` hook does not load
torch (or this package) into every interpreter of the environment.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Optional, Sequence

STUBBED = "mmpretrain.models.multimodal"


class EmptyPackageFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads :data:`STUBBED` as an empty package; declines every other name.

    Args: none.
    """

    #: Marks the finder for :func:`install`'s idempotence check, which must also recognise the
    #: copy of this class that the ``.pth`` hook loaded under another module name.
    stubs = STUBBED

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None,
                  target: Optional[types.ModuleType] = None
                  ) -> Optional[importlib.machinery.ModuleSpec]:
        if name == STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []
        module.__doc__ = __doc__


def install() -> None:
    """Put an :class:`EmptyPackageFinder` first on ``sys.meta_path`` unless one is there already.
    Effective only before ``mmpretrain.models`` is first imported."""
    if not any(getattr(f, "stubs", None) == STUBBED for f in sys.meta_path):
        sys.meta_path.insert(0, EmptyPackageFinder())
