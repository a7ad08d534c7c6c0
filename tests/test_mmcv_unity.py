"""tools/env/mmcv_unity.py: how the setup groups mmcv's C++ sources into unity files. The grouping
is checked on small C++ trees shaped like mmcv's (the sdist itself is only present during a setup),
including by compiling them: sources whose file-scope helpers share a name must land apart, and a
macro one source leaves defined must not reach the next."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from kit import load_tool

mmcv_unity = load_tool("env/mmcv_unity")

#: The lines of mmcv 2.1.0's setup.py that the patch replaces (the CPU-only source list), with a
#: DIPU branch before them that lists the same globs (so the anchor must include its print line).
MMCV_SHAPED_SETUP = """\
        if dipu:
            print(f'Compiling {ext_name} with CPU and DIPU')
            op_files = glob.glob('./mmcv/ops/csrc/pytorch/*.cpp') + \\
                glob.glob('./mmcv/ops/csrc/pytorch/cpu/*.cpp')
            extension = CppExtension
        else:
""" + mmcv_unity.CPU_SOURCES

#: Two CPU kernels with the same file-scope helpers (as mmcv's roi_align / roi_align_rotated), one
#: that leaves min/max macros defined (as psamask: after its headers, whose guards then keep a later
#: source from including them afresh), one that calls std::min after it, and dispatch files that
#: only declare and call.
KERNELS: Dict[str, str] = {
    "pytorch/cpu/roi_align.cpp": """
#include "common.hpp"
template <typename T> struct PreCalc { T w; };
template <class T> inline void add(T *address, const T &val) { *address += val; }
float roi_align_cpu(float x) { PreCalc<float> p{x}; add(&p.w, 1.0f); return p.w; }
""",
    "pytorch/cpu/roi_align_rotated.cpp": """
#include "common.hpp"
template <typename T> struct PreCalc { T w; T h; };
template <class T> inline void add(T *address, const T &val) { *address += 2 * val; }
float roi_align_rotated_cpu(float x) { PreCalc<float> p{x, x}; add(&p.h, 1.0f); return p.h; }
""",
    "pytorch/cpu/psamask.cpp": """
#include <algorithm>
#include "common.hpp"
#define min(a, b) (((a) < (b)) ? (a) : (b))
#define max(a, b) (((a) > (b)) ? (a) : (b))
int psamask_cpu(int a, int b) { return max(a, b) - min(a, b); }
""",
    "pytorch/cpu/sparse.cpp": """
#include <algorithm>
#include "common.hpp"
#define DECLARE_SPEC(T) template T sparse_cpu<T>(T);
template <typename T> T sparse_cpu(T x) { return std::min(x, T(1)); }
DECLARE_SPEC(float)
#undef DECLARE_SPEC
""",
    "pytorch/roi_align.cpp": """
#include "common.hpp"
float roi_align_cpu(float x);  // a declaration, not a definition
float roi_align_impl(float x) { return roi_align_cpu(x); }
// struct PreCalc { };  in a comment: not a name
static const char *note = "struct PreCalc {";
""",
    "pytorch/pybind.cpp": """
#include "common.hpp"
namespace ops {
int registered(int x) { return x; }
}
REGISTER(roi_align_impl);
""",
}
COMMON = "#pragma once\n#define REGISTER(name) static int name##_registered = 1\n"


def _tree(root: Path, kernels: Dict[str, str] = KERNELS) -> Path:
    csrc = root / "mmcv" / "ops" / "csrc"
    for name, text in kernels.items():
        (csrc / name).parent.mkdir(parents=True, exist_ok=True)
        (csrc / name).write_text(text)
    (csrc / "common").mkdir(parents=True, exist_ok=True)
    (csrc / "common" / "common.hpp").write_text(COMMON)
    (root / "setup.py").write_text(MMCV_SHAPED_SETUP)
    return root


def _compile(unity: Path, root: Path) -> subprocess.CompletedProcess:
    compiler = shutil.which("c++") or shutil.which("g++")
    assert compiler, "no C++ compiler (c++ or g++) on PATH; the setup needs one to build mmcv"
    return subprocess.run([compiler, "-std=c++17", "-fsyntax-only", "-Wall", "-Werror",
                           f"-I{root / 'mmcv/ops/csrc/common'}", str(unity)],
                          capture_output=True, text=True)


def test_file_scope_definitions_are_found_and_declarations_comments_strings_are_not():
    names = {path: mmcv_unity.defined_names(text) for path, text in KERNELS.items()}
    assert names["pytorch/cpu/roi_align.cpp"] == {"PreCalc", "add", "roi_align_cpu"}
    assert names["pytorch/roi_align.cpp"] == {"roi_align_impl"}
    assert names["pytorch/pybind.cpp"] == {"registered"}          # inside a namespace, counted
    assert names["pytorch/cpu/sparse.cpp"] == {"sparse_cpu"}
    assert mmcv_unity.leaked_macros(KERNELS["pytorch/cpu/psamask.cpp"]) == ["min", "max"]
    assert mmcv_unity.leaked_macros(KERNELS["pytorch/cpu/sparse.cpp"]) == []


def test_sources_sharing_a_name_are_grouped_apart_and_every_source_once(tmp_path):
    sources = mmcv_unity.read_sources(_tree(tmp_path))
    grouped = mmcv_unity.group(sources, groups=1)
    assert len(grouped) == 2                      # one group asked for, the shared names need two
    placed = [s.path for members in grouped for s in members]
    assert sorted(placed) == sorted(s.path for s in sources)
    homes = {s.path.name: i for i, members in enumerate(grouped) for s in members
             if "cpu" in s.path.parts}
    assert homes["roi_align.cpp"] != homes["roi_align_rotated.cpp"]
    assert len(mmcv_unity.group(sources, groups=4)) == 4
    with pytest.raises(ValueError, match="at least 1"):
        mmcv_unity.group(sources, groups=0)


def test_written_unity_files_compile_where_one_file_of_everything_does_not(tmp_path):
    root = _tree(tmp_path)
    grouped = mmcv_unity.write_unity(root, groups=2)
    unity_dir = root / mmcv_unity.UNITY_DIR
    files = sorted(unity_dir.glob("*.cpp"))
    assert len(files) == len(grouped) == 2
    text = "".join(f.read_text() for f in files)
    assert text.count("#include") == len(KERNELS)
    assert '#include "../pytorch/cpu/psamask.cpp"\n#undef min\n#undef max\n' in text
    together = [f for f in files if "psamask" in f.read_text() and "sparse" in f.read_text()]
    assert together, "psamask.cpp and sparse.cpp apart: the #undef below would go untested"
    for unity in files:
        result = _compile(unity, root)
        assert result.returncode == 0, result.stderr
    # What the grouping avoids: everything in one file redefines PreCalc/add, and psamask's min
    # macro breaks std::min when sparse.cpp comes after it.
    everything = unity_dir / "everything.cpp"
    everything.write_text("".join(f'#include "../{name}"\n' for name in sorted(KERNELS)))
    failed = _compile(everything, root)
    assert failed.returncode != 0 and "redefinition" in failed.stderr
    leaking = unity_dir / "leaking.cpp"
    leaking.write_text("".join(f'#include "../pytorch/cpu/{name}"\n'
                               for name in ("psamask.cpp", "sparse.cpp")))
    failed = _compile(leaking, root)
    assert failed.returncode != 0 and "std::min" in failed.stderr


def test_setup_py_compiles_the_unity_files_and_another_layout_is_refused(tmp_path):
    root = _tree(tmp_path)
    mmcv_unity.write_unity(root, groups=2)
    setup = (root / "setup.py").read_text()
    assert mmcv_unity.UNITY_SOURCES in setup and mmcv_unity.CPU_SOURCES not in setup
    assert setup.count("glob.glob('./mmcv/ops/csrc/pytorch/*.cpp')") == 1     # DIPU's, untouched
    # run again on the patched tree (or on another mmcv): refused, nothing written
    for stale in (root / mmcv_unity.UNITY_DIR).glob("*.cpp"):
        stale.unlink()
    with pytest.raises(ValueError, match="file by file"):
        mmcv_unity.write_unity(root, groups=2)
    assert not list((root / mmcv_unity.UNITY_DIR).glob("*.cpp"))
    assert mmcv_unity.main([str(root), "--groups", "2"]) == 1


def test_the_tool_reports_what_it_wrote(tmp_path, capsys):
    root = _tree(tmp_path)
    assert mmcv_unity.main([str(root), "--groups", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"{len(KERNELS)} sources in 3 unity files"
