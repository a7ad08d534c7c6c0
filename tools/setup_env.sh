#!/usr/bin/env bash
# One-command environment: a virtual environment with torch, the real OpenMMLab stack (mmcv 2.1.0
# built from source with its compiled ops), the parity peers and this package in editable mode.
# Idempotent: a second run only checks and fills what is missing. The mmcv wheel is built once per
# machine and cached outside the clone, keyed by the torch and Python versions.
#
#   bash tools/setup_env.sh            # everything (runtime + tests + peers)
#   VENV=/path/to/venv bash tools/setup_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
CACHE_DIR="${SWINV2_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/swinv2-backbone}"
export PIP_CONSTRAINT="$ROOT/tools/env/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
START=$SECONDS

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
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

if ! have "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "setuptools" "wheel"; then
  say "installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION (about a minute)"
  "${PIP[@]}" "setuptools>=77.0.3" wheel ninja "numpy<2" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_DIR="$CACHE_DIR/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PYTAG"
if ! have "mmcv==$MMCV_VERSION" || ! "$PY" -c "import mmcv._ext" 2>/dev/null; then
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    say "building mmcv $MMCV_VERSION with its C++ ops from source: no cached wheel in $WHEEL_DIR."
    say "this takes 10-15 minutes on 2 cores and happens once per machine; the compiler's progress follows"
    BUILD="$(mktemp -d)"
    # mmcv's setup.py needs setuptools<70 (pkg_resources, no build isolation) while torch 2.14 asks
    # for >=77: downgrade for the build only; the trap puts the runtime version back.
    trap '"${PIP[@]}" -q "setuptools>=77.0.3"; rm -rf "$BUILD"' EXIT
    "${PIP[@]}" -q --no-deps "setuptools<70"
    "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: -d "$BUILD" \
      "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch 2.14 headers need C++20; mmcv's setup.py hardcodes c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    mkdir -p "$WHEEL_DIR"
    # Stream ninja's "[n/N]" counter as progress; keep the full log for a failure.
    if ! (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
          "$PY" setup.py bdist_wheel -d "$BUILD/wheel" 2>&1 | tee "$BUILD/build.log" \
          | sed -un 's|^\[\([0-9]*\)/\([0-9]*\)\].*|[setup] mmcv ops: compiled \1 of \2|p'); then
      tail -n 40 "$BUILD/build.log" >&2
      echo "setup: the mmcv build failed (last 40 lines above)" >&2
      exit 1
    fi
    mv "$BUILD"/wheel/mmcv-*.whl "$WHEEL_DIR/"
    say "cached $(ls "$WHEEL_DIR")"
    "${PIP[@]}" -q "setuptools>=77.0.3"
    rm -rf "$BUILD"
    trap - EXIT
  else
    say "using cached mmcv wheel from $WHEEL_DIR"
  fi
  "${PIP[@]}" "$WHEEL_DIR"/mmcv-*.whl
fi

say "installing the OpenMMLab stack, test tools, parity peers and swinv2_backbone (editable)"
"${PIP[@]}" -e "$ROOT[all]"

# mmpretrain 1.2 (a parity peer) breaks `import mmdet.models` with transformers 5: see the shim.
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$ROOT/tools/env/mmpretrain_multimodal_stub.py" "$SITE/_swinv2_mmpretrain_stub.py"
echo "import _swinv2_mmpretrain_stub" > "$SITE/_swinv2_mmpretrain_stub.pth"

say "checking the environment"
"$PY" -m swinv2_backbone.env_check
say "done in $((SECONDS - START)) s; activate with: source $VENV/bin/activate"
