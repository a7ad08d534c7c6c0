"""The package's imports run one way: model <- checkpoint <- integration. Checked on the source (every
``import``, also those inside functions), so a lazy import cannot hide a cycle."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import swinv2_backbone

ROOT = Path(swinv2_backbone.__file__).parent
PACKAGE = "swinv2_backbone"

#: Rank of each top-level part (``""`` is the package's ``__init__``, the facade that imports the
#: rest): a module may import only parts of a lower or equal rank, and the module graph must be
#: acyclic. ``env_check`` diagnoses a whole install, through the facade.
LAYERS = {
    "compat": 0, "cli": 0,
    "models": 1,
    "checkpoint": 2,
    "complexity": 3, "testing": 3, "features": 3, "benchmark": 3,
    "openmmlab": 4, "deploy": 4,
    "": 5,
    "env_check": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: str, name: str, is_package: bool, known: Set[str]) -> Set[str]:
    """The package modules the source of module ``name`` (a package's ``__init__`` if
    ``is_package``) imports, as full names (``from a import b`` counts ``a.b`` when that is a
    module, else ``a``)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known}


def import_graph() -> Dict[str, Set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: _imports(path.read_text(), name, path.name == "__init__.py", set(paths)) - {name}
            for name, path in paths.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a path of module names, or ``[]``."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_every_part_has_a_layer():
    parts = {_part(m) for m in import_graph()}
    assert parts == set(LAYERS), f"assign a layer to {parts ^ set(LAYERS)}"


def test_no_import_cycle():
    assert _cycle(import_graph()) == []


def test_imports_run_from_lower_layers_only():
    upward = sorted((m, d) for m, deps in import_graph().items() for d in deps
                    if LAYERS[_part(d)] > LAYERS[_part(m)])
    assert upward == []


def test_the_checker_sees_lazy_imports_and_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
    lazy = "def f():\n    from ..checkpoint import load_pretrained\n"
    known = {"swinv2_backbone.checkpoint", "swinv2_backbone.checkpoint.io",
             "swinv2_backbone.models", "swinv2_backbone.models.backbone"}
    assert _imports(lazy, "swinv2_backbone.models.probe", False, known) == {
        "swinv2_backbone.checkpoint"}
    # in a package's __init__, '..' is the parent package; 'from a import b' counts a.b, a module
    assert _imports("from ..checkpoint import io\nimport swinv2_backbone.models.backbone\n",
                    "swinv2_backbone.models", True, known) == {
        "swinv2_backbone.checkpoint.io", "swinv2_backbone.models.backbone"}


def test_the_reference_model_does_not_import_the_fast_paths():
    """Inside ``models``, only the fast package itself and the package's ``__init__`` (which makes
    the fast kernels the default) import ``models.fast``: the reference modules reach the active
    kernels through :mod:`swinv2_backbone.models.kernels` alone."""
    fast = f"{PACKAGE}.models.fast"
    allowed = {f"{PACKAGE}.models"}
    leaks = sorted((m, d) for m, deps in import_graph().items() for d in deps
                   if m.startswith(f"{PACKAGE}.models") and not m.startswith(fast)
                   and m not in allowed and (d == fast or d.startswith(fast + ".")))
    assert leaks == []
    assert f"{PACKAGE}.models.kernels" in import_graph()[f"{PACKAGE}.models.attention"]
