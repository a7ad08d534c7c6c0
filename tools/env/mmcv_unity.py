"""mmcv's C++ ops compiled as a few unity files instead of one compiler run per source file.

Each of mmcv's 77 CPU source files spends nearly all of its compile time parsing torch's headers
(docs/setup.md has the measurements). A unity file ``#include``s several sources, so those headers
are parsed once per group. Two sources may share a group unless both define the same file-scope
name (mmcv's CPU kernels each carry their own ``PreCalc``, ``add``, ``bilinear_interpolate...``);
a macro a source leaves defined (``psamask.cpp``'s ``min``/``max``) is undefined right after it,
so it reaches no other source. The grouping is read from the sources, not listed per mmcv
version; where a group still does not compile, ``tools/setup_env.sh`` builds file by file.
Standard library only: it runs before anything else is installed.

    python mmcv_unity.py SOURCE_DIR --groups N   # writes the unity files, patches setup.py
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

#: mmcv's CPU-only source list in its setup.py, and what the patch puts in its place.
CPU_SOURCES = ("            print(f'Compiling {ext_name} only with CPU')\n"
               "            op_files = glob.glob('./mmcv/ops/csrc/pytorch/*.cpp') + \\\n"
               "                glob.glob('./mmcv/ops/csrc/pytorch/cpu/*.cpp')\n"
               "            extension = CppExtension\n")
UNITY_SOURCES = ("            print(f'Compiling {ext_name} only with CPU, as unity files')\n"
                 "            op_files = sorted(glob.glob('./mmcv/ops/csrc/unity/*.cpp'))\n"
                 "            extension = CppExtension\n")
SOURCE_GLOBS = ("mmcv/ops/csrc/pytorch/*.cpp", "mmcv/ops/csrc/pytorch/cpu/*.cpp")
UNITY_DIR = "mmcv/ops/csrc/unity"


@dataclass
class Source:
    """One C++ source file: the file-scope names it defines and the macros it leaves defined."""

    path: Path
    cost: int
    names: Set[str] = field(default_factory=set)
    leaked_macros: List[str] = field(default_factory=list)


def _without_comments_and_strings(text: str) -> str:
    pattern = r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\''
    return re.sub(pattern, lambda m: '""' if m.group(0)[0] in "\"'" else " ", text, flags=re.S)


def leaked_macros(text: str) -> List[str]:
    """Macros ``#define``d and not ``#undef``ined later in the same file, in order."""
    live: Dict[str, None] = {}
    for kind, name in re.findall(r"^\s*#\s*(define|undef)\s+(\w+)", text, flags=re.M):
        if kind == "define":
            live[name] = None
        else:
            live.pop(name, None)
    return list(live)


def defined_names(text: str) -> Set[str]:
    """Names a source defines at file scope: functions, templates and types with a body there
    (declarations, macro calls and namespaces' own braces are not definitions)."""
    code = _without_comments_and_strings(text)
    code = re.sub(r"^\s*#(?:[^\n]*\\\n)*[^\n]*", " ", code, flags=re.M)   # preprocessor lines
    names: Set[str] = set()
    depth, statement, scopes = 0, [], []
    for char in code:
        if char == "{":
            head = "".join(statement).strip()
            is_namespace = depth == len(scopes) and re.match(r"^(namespace\b|extern\s*\"\")", head)
            if is_namespace:
                scopes.append(depth)
            elif depth == len(scopes):
                name = _definition_name(head)
                if name:
                    names.add(name)
            depth += 1
            statement = []
        elif char == "}":
            depth -= 1
            if scopes and scopes[-1] == depth:
                scopes.pop()
            statement = []
        elif char == ";":
            statement = []
        elif depth == len(scopes):
            statement.append(char)
    return names


def _definition_name(head: str) -> Optional[str]:
    head = re.sub(r"^(?:template\s*<.*?>\s*)+", "", head, flags=re.S)  # member templates: several
    kind = re.match(r"^(?:struct|class|union|enum(?:\s+class)?)\s+(\w+)", head)
    if kind:
        return kind.group(1)
    call = re.search(r"([A-Za-z_]\w*)\s*(?:<[^()]*>)?\s*\(", head)
    return call.group(1) if call else None


def read_sources(root: Path) -> List[Source]:
    paths = sorted(p for pattern in SOURCE_GLOBS for p in root.glob(pattern))
    sources = []
    for path in paths:
        text = path.read_text(errors="replace")
        sources.append(Source(path, len(text), defined_names(text), leaked_macros(text)))
    return sources


def group(sources: Sequence[Source], groups: int) -> List[List[Source]]:
    """At least ``groups`` groups (more where sources that share a name need them), the largest
    sources placed first, each into the lightest group holding none of its names."""
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    bins: List[List[Source]] = [[] for _ in range(groups)]
    for source in sorted(sources, key=lambda s: (-s.cost, str(s.path))):
        free = [b for b in bins if not any(source.names & other.names for other in b)]
        if not free:
            bins.append([])
            free = bins[-1:]
        min(free, key=lambda b: sum(s.cost for s in b)).append(source)
    return [sorted(b, key=lambda s: str(s.path)) for b in bins if b]


def unity_text(members: Sequence[Source], unity_dir: Path) -> str:
    lines = ["// Written by swinv2-backbone's tools/env/mmcv_unity.py: several mmcv sources, one "
             "compiler run."]
    for source in members:
        include = Path("..").joinpath(source.path.relative_to(unity_dir.parent))
        lines.append(f'#include "{include.as_posix()}"')
        lines.extend(f"#undef {macro}" for macro in source.leaked_macros)
    return "\n".join(lines) + "\n"


def patch_sources(setup_text: str) -> str:
    """mmcv's setup.py compiling the unity files instead of its CPU source list."""
    if setup_text.count(CPU_SOURCES) != 1:
        raise ValueError("mmcv's setup.py does not list its CPU sources as mmcv 2.1.0 does; "
                         "build file by file")
    return setup_text.replace(CPU_SOURCES, UNITY_SOURCES)


def write_unity(root: Path, groups: int) -> List[List[Source]]:
    """Writes ``UNITY_DIR/unity_NN.cpp`` under ``root`` and patches ``root/setup.py``."""
    setup_py = root / "setup.py"
    patched = patch_sources(setup_py.read_text())
    sources = read_sources(root)
    if not sources:
        raise ValueError(f"no C++ sources under {root} ({', '.join(SOURCE_GLOBS)})")
    unity_dir = root / UNITY_DIR
    unity_dir.mkdir(parents=True, exist_ok=True)
    grouped = group(sources, groups)
    for index, members in enumerate(grouped):
        (unity_dir / f"unity_{index:02d}.cpp").write_text(unity_text(members, unity_dir))
    setup_py.write_text(patched)
    return grouped


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source_dir", type=Path, help="the unpacked mmcv sdist")
    parser.add_argument("--groups", type=int, required=True,
                        help="how many unity files at least (the build's parallel jobs)")
    args = parser.parse_args(argv)
    try:
        grouped = write_unity(args.source_dir, args.groups)
    except (ValueError, OSError) as err:
        print(f"mmcv_unity: {err}", file=sys.stderr)
        return 1
    print(f"{sum(map(len, grouped))} sources in {len(grouped)} unity files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
