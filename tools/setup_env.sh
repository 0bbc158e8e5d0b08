#!/usr/bin/env bash
# usage: bash tools/setup_env.sh [--help]   (or: make setup)
# Make (or reuse) a Python environment with MMDetection 3.3 + mmfish, in the order the stack needs.
#
#   bash tools/setup_env.sh            # creates/reuses .venv in the repository root
#   VENV=/path/to/env bash tools/setup_env.sh
#   MMFISH_USE_CURRENT_PYTHON=1 bash tools/setup_env.sh   # install into the active python (conda, GPU box)
#       (that is `python` on PATH, or PYTHON=/path/to/python)
#
# An already installed torch is kept (GPU users keep their CUDA build; they need the torchvision
# built for it too); otherwise torch==2.14.1 and torchvision==0.29.1 are installed (MMPretrain and
# timm import torchvision). mmcv 2.1.0 is built from source with its ops against that torch, patched
# with tools/patches/mmcv-2.1.0-*.patch (torch >= 2.14 needs C++20; tools/patches/README.md); the
# built wheel is kept in MMCV_WHEEL_CACHE (default ~/.cache/mmfish) under the torch version it was
# built for, so a second set-up on the machine takes seconds.
#
# mmcv's source is unpacked into MMCV_BUILD_DIR (default build/mmcv-2.1.0), patched and built there;
# an interrupted build resumes where it stopped (ninja).
# GPU: FORCE_CUDA=1 builds mmcv's CUDA ops too (never taken from the wheel cache).
#   TORCH_CUDA_ARCH_LIST=9.0   the GPU architectures to compile (default: the visible GPUs')
#   MAX_JOBS=16                parallel compile jobs (default: all cores)
# Offline (a machine without network):
#   MMCV_SDIST=path/mmcv-2.1.0.tar.gz   mmcv's source archive, instead of downloading it
#   MMFISH_WHEELS=dir                   install every other package from the wheels in dir, with no
#                                       index and no dependency resolution: dir must hold every
#                                       missing dependency (imports are checked at the end)
#   MMFISH_SITE=dir                     install into dir (pip --target) instead of the environment,
#                                       leaving the python untouched; use with PYTHONPATH=dir:<repo>
set -euo pipefail
case "${1:-}" in
-h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
"") ;;
*) echo "setup_env.sh takes no arguments, only environment variables (--help lists them)" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"  # the release built for TORCH_VERSION
MMCV_VERSION=2.1.0
MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}"
FORCE_CUDA="${FORCE_CUDA:-0}"
MMFISH_WHEELS="${MMFISH_WHEELS:-}"
MMFISH_SITE="${MMFISH_SITE:-}"
MMCV_SDIST="${MMCV_SDIST:-}"
MMCV_BUILD_DIR="${MMCV_BUILD_DIR:-$ROOT/build/mmcv-$MMCV_VERSION}"
MMCV_WHEEL_CACHE="${MMCV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmfish}"
export MAX_JOBS

step() { printf '\n==> [setup %s] %s\n' "$1" "$2"; CURRENT_STEP="$1: $2"; }
fail() { printf '\nsetup FAILED at step %s\n%s\n' "$CURRENT_STEP" "$1" >&2; exit 1; }
trap 'fail "command exited with status $? (see the output above)"' ERR

step 1 "python environment"
if [[ "${MMFISH_USE_CURRENT_PYTHON:-0}" == 1 ]]; then
    PY="${PYTHON:-$(command -v python || command -v python3)}"
else
    VENV="${VENV:-$ROOT/.venv}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" || fail "could not create a virtual environment at $VENV (is python3-venv installed?)"
    fi
    PY="$VENV/bin/python"
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
    || fail "python >= 3.10 is required (torch 2.14 needs it), found $("$PY" --version 2>&1)"
echo "python: $PY ($("$PY" --version 2>&1))"
PIP=("$PY" -m pip --disable-pip-version-check)
INDEX=()  # where packages come from: PyPI (pip's configuration) or, offline, the wheels only
if [[ -n "$MMFISH_WHEELS" ]]; then
    [[ -d "$MMFISH_WHEELS" ]] || fail "MMFISH_WHEELS=$MMFISH_WHEELS is not a directory of wheels"
    MMFISH_WHEELS="$(cd "$MMFISH_WHEELS" && pwd)"
    INDEX=(--no-index --find-links "$MMFISH_WHEELS")
    echo "offline: packages come from $MMFISH_WHEELS only"
fi
INSTALL=(install "${INDEX[@]}")
if [[ -n "$MMFISH_SITE" ]]; then
    mkdir -p "$MMFISH_SITE"
    MMFISH_SITE="$(cd "$MMFISH_SITE" && pwd)"
    INSTALL+=(--target "$MMFISH_SITE" --upgrade)
    export PYTHONPATH="$MMFISH_SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    echo "installing into $MMFISH_SITE (use it with PYTHONPATH=$PYTHONPATH)"
fi

installed() {  # installed NAME[==VERSION]...  -> 0 if every one is installed (that exact version)
    "$PY" - "$@" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for requirement in sys.argv[1:]:
    name, _, want = requirement.partition('==')
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and have != want:
        sys.exit(1)
PYEOF
}

runtime_requirements() {  # requirements/runtime.txt as NAME==VERSION or NAME, but setuptools and mmcv
    sed -e 's/#.*//' -e 's/[<>].*//' -e 's/[[:space:]]//g' "$ROOT/requirements/runtime.txt" \
        | grep -v -e '^$' -e '^setuptools' -e '^mmcv'
}

step 2 "torch and torchvision"
if "$PY" -c 'import torch' 2>/dev/null; then
    have_torch="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
    echo "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
    if ! "$PY" -c 'import torchvision' 2>/dev/null; then
        [[ "$have_torch" == "$TORCH_VERSION" ]] \
            || fail "torchvision does not import beside the installed torch $have_torch (MMPretrain and timm need it): install the torchvision release built for torch $have_torch (the same source as that torch), then rerun."
        "${PIP[@]}" "${INSTALL[@]}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
    fi
else
    # Pinned on purpose: an unpinned torch pulls whatever build the index has last.
    "${PIP[@]}" "${INSTALL[@]}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        || fail "pip could not install torch==${TORCH_VERSION} torchvision==${TORCHVISION_VERSION}"
fi
"$PY" -c 'import torch, torchvision' \
    || fail "torchvision does not import beside torch (the error is above): install the torchvision release built for the installed torch."
if [[ "$FORCE_CUDA" == 1 ]] && ! "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
    fail "FORCE_CUDA=1 but the installed torch $("$PY" -c 'import torch; print(torch.__version__)') is not a CUDA build: install the CUDA torch you want first."
fi

step 3 "build requirements (numpy, setuptools<82, wheel, ninja)"
if ! "$PY" -c 'import numpy, wheel, ninja, setuptools, pkg_resources; assert int(setuptools.__version__.split(".")[0]) < 82' 2>/dev/null; then
    "${PIP[@]}" "${INSTALL[@]}" -r "$ROOT/requirements/build.txt"
fi

mmcv_ok() {  # mmcv 2.1.0 with its ops (and, under FORCE_CUDA=1, its CUDA ops): $1=quiet hides why not
    local cuda=()
    [[ "$FORCE_CUDA" == 1 ]] && cuda=(--cuda)
    installed "mmcv==$MMCV_VERSION" || return 1
    if [[ "${1:-}" == quiet ]]; then
        "$PY" "$ROOT/tools/misc/check_mmcv_ops.py" ${cuda[@]+"${cuda[@]}"} >/dev/null 2>&1
    else
        "$PY" "$ROOT/tools/misc/check_mmcv_ops.py" ${cuda[@]+"${cuda[@]}"}
    fi
}

cuda_build_env() {  # nvcc, its CUDA against torch's, cuBLAS headers and ninja for the CUDA build
    local nvcc torch_cuda nvcc_cuda home
    # The toolkit: CUDA_HOME, else /usr/local/cuda, else where nvcc is (an nvcc on PATH can be a
    # wrapper script, whose folder is no toolkit: torch would then look in the wrong place).
    for home in "${CUDA_HOME:-}" /usr/local/cuda \
        "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")"; do
        if [[ -n "$home" && -x "$home/bin/nvcc" && -f "$home/include/cuda_runtime.h" ]]; then
            export CUDA_HOME="$home"
            break
        fi
    done
    [[ -x "${CUDA_HOME:-}/bin/nvcc" ]] \
        || fail "FORCE_CUDA=1 needs the CUDA toolkit (nvcc): set CUDA_HOME to its folder."
    export PATH="$CUDA_HOME/bin:$PATH"
    torch_cuda="$("$PY" -c 'import torch; print(torch.version.cuda)')"
    nvcc_cuda="$(nvcc --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
    echo "nvcc $nvcc_cuda ($CUDA_HOME), torch built with CUDA $torch_cuda"
    [[ "${nvcc_cuda%%.*}" == "${torch_cuda%%.*}" ]] \
        || fail "nvcc is CUDA $nvcc_cuda but torch was built with CUDA $torch_cuda: the major versions must match."
    # torch's CUDA headers include cuBLAS/cuSPARSE/cuSOLVER; a pip-installed CUDA torch brings
    # them in site-packages/nvidia/*/include while a runtime-only toolkit has none.
    if [[ ! -f "$CUDA_HOME/include/cublas_v2.h" ]]; then
        local inc
        inc="$("$PY" - <<'PYEOF'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
hits = sorted({os.path.dirname(h) for r in roots for h in glob.glob(os.path.join(r, 'nvidia', '*', 'include', 'cublas_v2.h'))})
dirs = []
for h in hits:
    dirs += [h] + sorted(d for d in glob.glob(os.path.join(os.path.dirname(os.path.dirname(h)), '*', 'include')) if d not in dirs)
print(':'.join(dict.fromkeys(dirs)))
PYEOF
)"
        [[ -n "$inc" ]] || fail "cublas_v2.h is in neither $CUDA_HOME/include nor a pip 'nvidia' package: install the CUDA toolkit's cuBLAS headers."
        export CPATH="$inc${CPATH:+:$CPATH}"
        echo "cuBLAS headers from $inc"
    fi
    # torch links the extension with -lcudart: a toolkit without the unversioned libcudart.so
    # gets it from the pip package that a pip-installed CUDA torch depends on.
    if [[ ! -e "$CUDA_HOME/lib64/libcudart.so" && ! -e "$CUDA_HOME/lib/libcudart.so" ]]; then
        local cudart
        cudart="$("$PY" - <<'PYEOF'
import glob, os, site, sys
roots = site.getsitepackages() + sys.path
print(next(iter(sorted(h for r in roots for h in glob.glob(os.path.join(r, 'nvidia', '*', 'lib', 'libcudart.so.*')))), ''))
PYEOF
)"
        [[ -n "$cudart" ]] || fail "no libcudart.so in $CUDA_HOME/lib64 nor in a pip 'nvidia' package"
        mkdir -p "$MMCV_BUILD_DIR.lib"
        ln -sf "$cudart" "$MMCV_BUILD_DIR.lib/libcudart.so"
        export LIBRARY_PATH="$MMCV_BUILD_DIR.lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
        echo "linking against $cudart"
    fi
    # Without ninja on PATH torch compiles the ~140 files one at a time.
    local ninja_bin
    ninja_bin="$("$PY" -c 'import ninja, os; print(getattr(ninja, "BIN_DIR", os.path.join(os.path.dirname(ninja.__file__), "data", "bin")))' 2>/dev/null || true)"
    [[ -n "$ninja_bin" ]] && export PATH="$PATH:$ninja_bin"
    command -v ninja >/dev/null || fail "ninja is not on PATH: pip install ninja (else the build runs serially)."
    if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
        echo "TORCH_CUDA_ARCH_LIST unset: torch compiles for the visible GPUs (or its default list)"
    fi
}

mmcv_cache_dir() {  # where a CPU build of mmcv for this torch, python and patch set is kept
    local key
    key="$("$PY" -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')"
    key="$key-$(cat "$ROOT"/tools/patches/mmcv-"$MMCV_VERSION"-*.patch | sha256sum | cut -c1-12)"  # the patch set
    echo "$MMCV_WHEEL_CACHE/mmcv-$MMCV_VERSION-$key"
}

cached_mmcv_wheel() {  # the kept wheel for this torch, or nothing
    compgen -G "$(mmcv_cache_dir)/mmcv-$MMCV_VERSION-*.whl" | head -n 1 || true
}

mmcv_source() {  # unpack (once) and patch mmcv's sdist into MMCV_BUILD_DIR
    local patches
    patches="$(cat "$ROOT"/tools/patches/mmcv-"$MMCV_VERSION"-*.patch | sha256sum | cut -c1-12)"
    if [[ "$(cat "$MMCV_BUILD_DIR/.mmfish-patched" 2>/dev/null)" == "$patches" ]]; then
        echo "reusing the patched source in $MMCV_BUILD_DIR"
        return
    fi
    local sdist="$MMCV_SDIST" tmp
    tmp="$(mktemp -d)"
    if [[ -z "$sdist" ]]; then
        "${PIP[@]}" download "${INDEX[@]}" --no-deps --no-binary :all: --no-build-isolation \
            "mmcv==$MMCV_VERSION" -d "$tmp"
        sdist="$tmp/mmcv-$MMCV_VERSION.tar.gz"
    fi
    [[ -f "$sdist" ]] || fail "mmcv source archive $sdist not found (MMCV_SDIST)"
    tar -xzf "$sdist" -C "$tmp"
    [[ -f "$tmp/mmcv-$MMCV_VERSION/setup.py" ]] || fail "$sdist is not mmcv $MMCV_VERSION's source archive"
    rm -rf "$MMCV_BUILD_DIR"
    mkdir -p "$(dirname "$MMCV_BUILD_DIR")"
    mv "$tmp/mmcv-$MMCV_VERSION" "$MMCV_BUILD_DIR"
    rm -rf "$tmp"
    for patch in "$ROOT"/tools/patches/mmcv-"$MMCV_VERSION"-*.patch; do
        [[ -f "$patch" ]] || continue
        echo "applying $(basename "$patch")"
        "$PY" "$ROOT/tools/patches/apply_patch.py" "$patch" "$MMCV_BUILD_DIR" \
            || fail "patch $patch does not apply to mmcv $MMCV_VERSION's source"
    done
    echo "$patches" >"$MMCV_BUILD_DIR/.mmfish-patched"  # the patch set it holds
}

install_runtime() {  # requirements/runtime.txt (offline: every wheel given, as it is)
    if [[ -n "$MMFISH_WHEELS" ]]; then
        # No resolver offline: mmengine's metadata asks for opencv-python even where the
        # headless build is installed. Every wheel in the directory is installed as it is.
        shopt -s nullglob
        local wheels=("$MMFISH_WHEELS"/*.whl)
        shopt -u nullglob
        (( ${#wheels[@]} )) || fail "no wheels in MMFISH_WHEELS=$MMFISH_WHEELS"
        "${PIP[@]}" "${INSTALL[@]}" --no-deps "${wheels[@]}"
    else
        "${PIP[@]}" "${INSTALL[@]}" -r "$ROOT/requirements/runtime.txt"
    fi
}

if [[ -n "$MMFISH_WHEELS" ]]; then
    # Offline, mmcv's own dependencies (mmengine, addict, yapf) come from the wheels: install
    # them first, so that a built mmcv imports and is recognised on a rerun.
    step 3b "wheels from $MMFISH_WHEELS (mmengine, mmdet, pycocotools and their dependencies)"
    install_runtime
fi

step 4 "mmcv $MMCV_VERSION with ops, built against the installed torch"
if mmcv_ok quiet; then
    echo "mmcv $MMCV_VERSION with ops$([[ "$FORCE_CUDA" == 1 ]] && echo ' (CUDA included)') already installed"
elif [[ "$FORCE_CUDA" != 1 && -n "$(cached_mmcv_wheel)" ]]; then
    echo "installing mmcv $MMCV_VERSION built earlier for this torch: $(cached_mmcv_wheel)"
    if installed "mmcv==$MMCV_VERSION" && [[ -z "$MMFISH_SITE" ]]; then
        "${PIP[@]}" uninstall -y mmcv  # one without its ops: pip would keep it
    fi
    NO_DEPS=()
    [[ -n "$MMFISH_WHEELS" ]] && NO_DEPS=(--no-deps)
    "${PIP[@]}" "${INSTALL[@]}" --no-cache-dir ${NO_DEPS[@]+"${NO_DEPS[@]}"} "$(cached_mmcv_wheel)"
else
    [[ "$FORCE_CUDA" != 1 ]] && echo "building mmcv from source (about 12 minutes on 2 cores; the wheel is kept for the next set-up)"
    [[ "$FORCE_CUDA" == 1 ]] && cuda_build_env
    mmcv_source
    echo "building mmcv with FORCE_CUDA=$FORCE_CUDA, MAX_JOBS=$MAX_JOBS, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} in $MMCV_BUILD_DIR"
    build_start=$(date +%s)
    # The wheel is built in the source tree (build/: ninja's objects, so that an interrupted
    # build resumes) and kept in dist/ for machines like this one.
    rm -rf "$MMCV_BUILD_DIR/dist"
    # --no-cache-dir: never a wheel from pip's cache (an older set-up may have left a build of
    # the same version for another torch there), always this build.
    MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA" "${PIP[@]}" wheel "${INDEX[@]}" --no-cache-dir \
        --no-build-isolation --no-deps -w "$MMCV_BUILD_DIR/dist" "$MMCV_BUILD_DIR"
    echo "mmcv build took $(( $(date +%s) - build_start )) s"
    # An installed mmcv of the same version (a CPU build) would make pip skip the new wheel.
    if installed "mmcv==$MMCV_VERSION" && [[ -z "$MMFISH_SITE" ]]; then
        "${PIP[@]}" uninstall -y mmcv
    fi
    NO_DEPS=()
    [[ -n "$MMFISH_WHEELS" ]] && NO_DEPS=(--no-deps)  # its dependencies came with the wheels
    "${PIP[@]}" "${INSTALL[@]}" --no-cache-dir ${NO_DEPS[@]+"${NO_DEPS[@]}"} \
        "$MMCV_BUILD_DIR"/dist/mmcv-"$MMCV_VERSION"-*.whl
    if [[ "$FORCE_CUDA" != 1 ]]; then
        mkdir -p "$(mmcv_cache_dir)"
        cp "$MMCV_BUILD_DIR"/dist/mmcv-"$MMCV_VERSION"-*.whl "$(mmcv_cache_dir)/"
        echo "kept the wheel in $(mmcv_cache_dir)"
    fi
fi

step 5 "mmengine, mmdet, pycocotools, mmsegmentation (+ ftfy, regex), mmpretrain, timm"
if [[ -n "$MMFISH_WHEELS" ]]; then
    echo "installed from the wheels at step 3b"
elif installed $(runtime_requirements); then
    echo "already installed"
else
    install_runtime
fi
mmcv_ok || fail "mmcv $MMCV_VERSION is not installed with its ops$([[ "$FORCE_CUDA" == 1 ]] && echo ' and CUDA ops') (the reason is above). \
Uninstall it (pip uninstall mmcv), clear its cached wheel (pip cache remove mmcv) and rerun with torch importable."

step 6 "mmfish (editable) and the test tools"
if [[ -n "$MMFISH_SITE" ]]; then
    echo "mmfish is used from $ROOT through PYTHONPATH"
    "$PY" -c 'import pytest' 2>/dev/null || "${PIP[@]}" "${INSTALL[@]}" pytest
elif "$PY" -c 'import mmfish, pytest, xdist, ruff, pytorchcv' 2>/dev/null && [[ "$("$PY" -c 'import mmfish, os; print(os.path.dirname(os.path.dirname(mmfish.__file__)))')" == "$ROOT" ]]; then
    echo "already installed"
else
    "${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"
    if [[ -n "$MMFISH_WHEELS" ]] && "$PY" -c 'import pytest' 2>/dev/null; then
        echo "offline: keeping the installed pytest"
    else
        "${PIP[@]}" install -r "$ROOT/requirements/tests.txt"
        # pytorchcv without its declared torchvision dependency (see the file).
        "${PIP[@]}" install --no-deps -r "$ROOT/requirements/tests-no-deps.txt"
    fi
fi

step 7 "check"
"$PY" - <<'PYEOF' || fail "the installed stack does not import"
import importlib
import importlib.util
import torch, torchvision, mmcv, mmcv.ops, mmengine, mmdet, pycocotools, mmfish
from mmdet.registry import MODELS

def optional(name):  # the offline GPU route may bring none of these
    if importlib.util.find_spec(name) is None:
        return 'not installed'
    module = importlib.import_module(name)
    return module.__version__

seg, pre, timm = optional('mmseg'), optional('mmpretrain'), optional('timm')
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {seg}, "
      f"mmpretrain {pre}, timm {timm}, mmfish {mmfish.__version__}; GPU: {torch.cuda.is_available()}")
PYEOF
trap - ERR
echo
echo "environment ready: $PY${MMFISH_SITE:+ with PYTHONPATH=$PYTHONPATH}"
