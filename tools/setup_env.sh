#!/usr/bin/env bash
# Make (or reuse) a Python environment with MMDetection 3.3 + mmfish, in the order the stack needs.
#
#   bash tools/setup_env.sh            # creates/reuses .venv in the repository root
#   VENV=/path/to/env bash tools/setup_env.sh
#   MMFISH_USE_CURRENT_PYTHON=1 bash tools/setup_env.sh   # install into the active python (conda, GPU box)
#
# An already installed torch is kept (GPU users keep their CUDA build); otherwise torch==2.13.0 is
# installed, which on these machines is the local CPU wheel. mmcv 2.1.0 is built from source with its
# ops against that torch; pip caches the built wheel, so a second run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}"
export MAX_JOBS

step() { printf '\n==> [setup %s] %s\n' "$1" "$2"; CURRENT_STEP="$1: $2"; }
fail() { printf '\nsetup FAILED at step %s\n%s\n' "$CURRENT_STEP" "$1" >&2; exit 1; }
trap 'fail "command exited with status $? (see the output above)"' ERR

step 1 "python environment"
if [[ "${MMFISH_USE_CURRENT_PYTHON:-0}" == 1 ]]; then
    PY="$(command -v python)"
else
    VENV="${VENV:-$ROOT/.venv}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" || fail "could not create a virtual environment at $VENV (is python3-venv installed?)"
    fi
    PY="$VENV/bin/python"
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 8), sys.version' \
    || fail "python >= 3.8 is required, found $("$PY" --version 2>&1)"
echo "python: $PY ($("$PY" --version 2>&1))"
PIP=("$PY" -m pip --disable-pip-version-check)

installed() {  # installed NAME==VERSION  -> 0 if exactly that version is importable metadata-wise
    "$PY" - "$1" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
name, _, want = sys.argv[1].partition('==')
try:
    have = version(name)
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if (not want or have == want) else 1)
PYEOF
}

step 2 "torch"
if "$PY" -c 'import torch' 2>/dev/null; then
    echo "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    # Pinned on purpose: an unpinned torch pulls a multi-GB CUDA build on CPU machines.
    "${PIP[@]}" install "torch==${TORCH_VERSION}" || fail "pip could not install torch==${TORCH_VERSION}"
fi

step 3 "build requirements (numpy, setuptools<82, wheel, ninja)"
if ! "$PY" -c 'import numpy, wheel, ninja, setuptools, pkg_resources; assert int(setuptools.__version__.split(".")[0]) < 82' 2>/dev/null; then
    "${PIP[@]}" install -r "$ROOT/requirements/build.txt"
fi

step 4 "mmcv 2.1.0 with ops, built against the installed torch"
if installed mmcv==2.1.0 && "$PY" -c 'import mmcv.ops' 2>/dev/null; then
    echo "mmcv 2.1.0 with ops already installed"
else
    echo "building mmcv from source (about 11 minutes on 2 cores the first time; cached afterwards)"
    MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" "${PIP[@]}" install --no-build-isolation mmcv==2.1.0
fi
"$PY" -c 'import mmcv.ops' || fail "'import mmcv.ops' fails after the build: mmcv was built without its ops. \
Uninstall it, clear its cached wheel (pip cache remove mmcv) and rerun with torch importable."

step 5 "mmengine, mmdet, pycocotools, mmsegmentation (+ ftfy, regex)"
if installed mmengine==0.10.7 && installed mmdet==3.3.0 && installed pycocotools \
    && installed mmsegmentation==1.2.2 && installed ftfy==6.3.1 && installed regex==2026.11.19; then
    echo "already installed"
else
    "${PIP[@]}" install -r "$ROOT/requirements/runtime.txt"
fi

step 6 "mmfish (editable) and the test tools"
if "$PY" -c 'import mmfish, pytest, ruff' 2>/dev/null && [[ "$("$PY" -c 'import mmfish, os; print(os.path.dirname(os.path.dirname(mmfish.__file__)))')" == "$ROOT" ]]; then
    echo "already installed"
else
    "${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"
    "${PIP[@]}" install -r "$ROOT/requirements/tests.txt"
fi

step 7 "check"
"$PY" - <<'PYEOF' || fail "the installed stack does not import"
import torch, mmcv, mmcv.ops, mmengine, mmdet, pycocotools, mmseg, mmseg.models, mmfish
from mmdet.registry import MODELS
print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, "
      f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmfish {mmfish.__version__}")
PYEOF
trap - ERR
echo
echo "environment ready: $PY"
