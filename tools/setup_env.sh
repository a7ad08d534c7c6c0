#!/usr/bin/env bash
# One-command environment: a virtual environment with torch, the real OpenMMLab stack (mmcv 2.1.0
# built from source with its compiled ops), the parity peers and this package in editable mode.
# Idempotent: a second run only checks and fills what is missing. The mmcv wheel is built once per
# machine and cached outside the clone, keyed by the torch and Python versions; the compiler's
# objects are cached too (ccache), so a build with an empty wheel cache is mostly packaging.
#
#   bash tools/setup_env.sh                     # everything (runtime + tests + peers)
#   VENV=path/to/venv bash tools/setup_env.sh   # relative paths are taken from the current directory
#   PYTHON=python3.12 bash tools/setup_env.sh   # another supported interpreter (3.10-3.13)
#   SWINV2_CACHE_DIR=dir                        # where the mmcv wheel is cached
#   SWINV2_CONSTRAINTS=tools/env/constraints-torch2.1.txt   # the versions to install (torch, mm*)
#   CCACHE_DIR=dir                              # ccache's own variable (default ~/.cache/ccache)
set -euo pipefail

say() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { echo "setup: $*" >&2; exit 1; }

# Every path is made absolute here, once: later steps change directory (the mmcv build does).
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(abspath "${VENV:-$ROOT/.venv}")"
CACHE_DIR="$(abspath "${SWINV2_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/swinv2-backbone}")"
# The versions come from one constraints file, held through every install step.
CONSTRAINTS="$(abspath "${SWINV2_CONSTRAINTS:-$ROOT/tools/env/constraints.txt}")"
[ -f "$CONSTRAINTS" ] || die "no constraints file $CONSTRAINTS"
pinned() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"; }
TORCH_VERSION=$(pinned torch) TORCHVISION_VERSION=$(pinned torchvision) MMCV_VERSION=$(pinned mmcv)
[ -n "$TORCH_VERSION" ] && [ -n "$TORCHVISION_VERSION" ] && [ -n "$MMCV_VERSION" ] \
  || die "$CONSTRAINTS must pin torch==, torchvision== and mmcv=="
# mmcv's C++ ops: 77 sources, compiled as a few unity files (tools/env/mmcv_unity.py), which spends
# a tenth of the CPU time of one compiler run per source: most of a run parses torch's headers.
# CPU-seconds of the whole compile without a compiler cache, by the CPU (docs/setup.md); file by
# file (the fallback) 13-26 per source. With ccache hits the build is mostly linking and packaging.
MMCV_CPU_SECONDS_LOW=90 MMCV_CPU_SECONDS_HIGH=240
MMCV_FILE_CPU_SECONDS_LOW=$((77 * 13)) MMCV_FILE_CPU_SECONDS_HIGH=$((77 * 26))
JOBS="${MAX_JOBS:-$(nproc)}"
compile_minutes() { echo $(( ($1 / JOBS + 59) / 60 )); }  # $1: CPU-seconds of the whole compile
export PIP_CONSTRAINT="$CONSTRAINTS"
export PIP_DISABLE_PIP_VERSION_CHECK=1

START=$SECONDS

# --- interpreter: PYTHON if given, else the first supported one found (3.11 is the tested one) ---
usable_python() {  # a supported version with venv and ensurepip (Debian ships them separately)
  "$1" - <<'PYEOF' 2>/dev/null
import sys, venv, ensurepip
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)
PYEOF
}
if [ -n "${PYTHON:-}" ]; then
  command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON not found"
  usable_python "$PYTHON" || die "PYTHON=$PYTHON is $("$PYTHON" -V 2>&1 | head -n 1); supported are Python \
3.10-3.13 with the venv module (on Debian/Ubuntu: apt-get install python3.11 python3.11-venv)"
else
  for cand in python3.11 python3.12 python3.10 python3.13 python3; do
    if command -v "$cand" >/dev/null && usable_python "$cand"; then PYTHON=$cand; break; fi
  done
  [ -n "${PYTHON:-}" ] || die "no Python 3.10-3.13 with the venv module found. On Debian 12:
  apt-get install python3.11 python3.11-venv
on Ubuntu 22.04: apt-get install python3.10 python3.10-venv (or python3.11 from the deadsnakes PPA);
then run this again, or point PYTHON=/path/to/python3.11 at another installation."
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV with $("$PYTHON" -V)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --progress-bar off)

have() { "$PY" - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    try:
        got = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and got.split("+")[0] != want:
        sys.exit(1)
PYEOF
}

if ! have "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "setuptools" "wheel" "ninja"; then
  say "installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION (about a minute)"
  "${PIP[@]}" -q "setuptools>=77.0.3" wheel ninja "numpy<2" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# --- ccache: Debian's package; without it (not root, no apt) the build is only slower ------------
if ! command -v ccache >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ccache (Debian package) so that later mmcv builds reuse compiled objects"
    { apt-get install -y -qq ccache || { apt-get update -qq && apt-get install -y -qq ccache; }; } \
      >/dev/null 2>&1 || say "could not install ccache; building without a compiler cache"
  else
    say "no ccache (and no root/apt to install it): every mmcv build compiles from scratch; \
install ccache to make later builds take a minute or two"
  fi
fi
CCACHE_BIN=""
for d in /usr/lib/ccache /usr/lib64/ccache; do [ -x "$d/c++" ] && CCACHE_BIN=$d && break; done

# --- mmcv: cached wheel, else a build that the other installs overlap ------------------------------
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_DIR="$CACHE_DIR/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PYTAG"
STAGE="$(abspath "${TMPDIR:-/tmp}")/swinv2-backbone-mmcv-build-$(id -u)"

# Compiles mmcv's sources in $1 into a wheel in $STAGE/wheel, the log appended to $STAGE/build.log.
# -g0: Python's default CFLAGS carry -g; the debug info costs compile time and no user needs it.
compile_mmcv() {
  ( cd "$1" && \
    PATH="${CCACHE_BIN:+$CCACHE_BIN:}$STAGE/venv/bin:$PATH" PYTHONPATH="$STAGE/overlay" \
    CFLAGS="-g0" CCACHE_NOHASHDIR=1 CCACHE_SLOPPINESS=time_macros \
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$JOBS" \
    "$STAGE/venv/bin/python" setup.py bdist_wheel -d "$STAGE/wheel" >>"$STAGE/build.log" 2>&1 )
}

# Builds the wheel into $WHEEL_DIR. The build runs in a fixed directory with the venv seen through a
# fixed link ($STAGE/venv), so every compiler command line is the same whatever the clone and venv
# paths are: that is what lets ccache hit across fresh clones. A lock serialises builds.
build_mmcv() {
  mkdir -p "$STAGE"
  exec 9>"$STAGE.lock"
  flock 9
  rm -rf "$STAGE"/{src,overlay,wheel,build.log,build-unity.log,setup.py.file-by-file,venv}
  mkdir -p "$STAGE/src"
  ln -s "$VENV" "$STAGE/venv"
  # mmcv's setup.py imports pkg_resources (setuptools < 70); the venv keeps its newer setuptools,
  # the build sees the old one first on PYTHONPATH.
  "${PIP[@]}" -q --no-deps --target "$STAGE/overlay" "setuptools<70"
  # Not `pip download`: it would run mmcv's setup.py before the patch below (fails on Python 3.13).
  local sdist
  sdist=$("$PY" "$ROOT/tools/env/mmcv_source.py" fetch mmcv "$MMCV_VERSION" "$STAGE/src")
  tar -xzf "$sdist" -C "$STAGE/src"
  local src="$STAGE/src/mmcv-$MMCV_VERSION"
  # mmcv's setup.py hardcodes c++17; torch's own extension builder says which standard its headers
  # need (C++20 for torch 2.14, C++17 for torch 2.1).
  local std=""
  if grep -q -- "-std=c++20" "$STAGE/venv/lib/python"*/site-packages/torch/utils/cpp_extension.py; then
    std=c++20
  fi
  "$PY" "$ROOT/tools/env/mmcv_source.py" patch "$src/setup.py" ${std:+--cxx-std "$std"}
  cp "$src/setup.py" "$STAGE/setup.py.file-by-file"
  if ! { "$PY" "$ROOT/tools/env/mmcv_unity.py" "$src" --groups "$JOBS" >"$STAGE/build.log" 2>&1 \
      && compile_mmcv "$src"; }; then
    # Not expected for the pinned mmcv (its unity files compile); for another version it costs time,
    # not the build.
    say "mmcv: the unity build failed (log kept as $STAGE/build-unity.log); compiling file by \
file instead, about $(compile_minutes "$MMCV_FILE_CPU_SECONDS_LOW")-$(compile_minutes \
"$MMCV_FILE_CPU_SECONDS_HIGH") minutes"
    mv "$STAGE/build.log" "$STAGE/build-unity.log"
    cp "$STAGE/setup.py.file-by-file" "$src/setup.py"
    rm -rf "$src/build" "$src/mmcv/ops/csrc/unity" "$STAGE/wheel"
    compile_mmcv "$src" || {
      tail -n 40 "$STAGE/build.log" >&2; echo "setup: the mmcv build failed (last 40 lines above; \
full log $STAGE/build.log)" >&2; return 1; }
  fi
  mkdir -p "$WHEEL_DIR"
  mv "$STAGE"/wheel/mmcv-*.whl "$WHEEL_DIR/"
  rm -rf "$STAGE"/{src,overlay,wheel,venv,setup.py.file-by-file}
}

# Streams ninja's "[n/N]" counter from the build log while the build runs.
show_progress() {
  local pid=$1 last=""
  while kill -0 "$pid" 2>/dev/null; do
    sleep 3
    local now
    now=$(grep -o '^\[[0-9]*/[0-9]*\]' "$STAGE/build.log" 2>/dev/null | tail -n 1 || true)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then say "mmcv ops: compiled ${now//[\[\]]/} files"; last=$now; fi
  done
}

if ! have "mmcv==$MMCV_VERSION" || ! "$PY" -c "import mmcv._ext" 2>/dev/null; then
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    minutes="$(compile_minutes "$MMCV_CPU_SECONDS_LOW")-$(compile_minutes "$MMCV_CPU_SECONDS_HIGH")"
    say "building mmcv $MMCV_VERSION with its C++ ops from source: no cached wheel in $WHEEL_DIR"
    cached=0
    if [ -n "$CCACHE_BIN" ]; then
      cached=$(ccache --print-stats 2>/dev/null | awk '$1 == "files_in_cache" {print $2}' || true)
    fi
    if [ "${cached:-0}" -gt 0 ]; then
      say "expect about $minutes minutes with $JOBS parallel jobs, less where ccache's $cached files \
from earlier builds were compiled against this torch and Python"
    else
      say "no compiled objects cached yet: expect about $minutes minutes with $JOBS parallel jobs"
    fi
    build_mmcv &
    BUILD_PID=$!
    trap 'kill $BUILD_PID 2>/dev/null || true' EXIT
    # Meanwhile install what does not need mmcv (mostly unpacking, so it overlaps the compile).
    say "installing the packages that do not need mmcv while it compiles"
    "${PIP[@]}" -q -r "$ROOT/tools/env/without-mmcv.txt"
    show_progress "$BUILD_PID"
    wait "$BUILD_PID" || die "the mmcv build failed"
    trap - EXIT
    say "cached $(ls "$WHEEL_DIR")"
  else
    say "using cached mmcv wheel from $WHEEL_DIR"
  fi
  "${PIP[@]}" -q "$WHEEL_DIR"/mmcv-*.whl
fi

say "installing the OpenMMLab stack, test tools, parity peers and swinv2_backbone (editable)"
"${PIP[@]}" -q -e "$ROOT[all]"

# mmpretrain 1.2 (a parity peer) breaks `import mmdet.models` with transformers 5: see the shim
# (standard library only, so the start-up hook does not import torch).
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$ROOT/swinv2_backbone/testing/mmpretrain_stub.py" "$SITE/_swinv2_mmpretrain_stub.py"
echo "import _swinv2_mmpretrain_stub; _swinv2_mmpretrain_stub.install()" > "$SITE/_swinv2_mmpretrain_stub.pth"

say "checking the environment"
"$PY" -m swinv2_backbone.env_check
say "done in $((SECONDS - START)) s; activate with: source $VENV/bin/activate"
