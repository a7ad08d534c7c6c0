"""Import-time shim installed by swinv2-backbone's ``tools/setup_env.sh`` into its own virtual
environment (through a ``.pth`` file), nowhere else.

mmpretrain 1.2's ``mmpretrain.models.multimodal`` fails to import with transformers 5 (a ``TypeError``,
not an ``ImportError``). Because mmdet 3.3 imports mmpretrain whenever it is installed (its ReID data
preprocessor), that failure also breaks ``import mmdet.models``. This project installs mmpretrain
only as a parity peer and never uses its multimodal models, so this finder serves an empty package
for that one name; the rest of mmpretrain imports normally.
"""
import importlib.abc
import importlib.machinery
import sys

STUBBED = "mmpretrain.models.multimodal"


class _EmptyPackage(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = []
        module.__doc__ = __doc__


if not any(isinstance(f, _EmptyPackage) for f in sys.meta_path):
    sys.meta_path.insert(0, _EmptyPackage())
