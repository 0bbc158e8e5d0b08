"""Check that the installed mmcv has its compiled ops, and with ``--cuda`` its CUDA ops.

    python tools/misc/check_mmcv_ops.py [--cuda]

Exit status 0 when they are there, 1 with the reason otherwise. ``tools/setup_env.sh`` runs it
to decide whether mmcv must be (re)built, and after the build, with ``--cuda`` under
``FORCE_CUDA=1``: a CPU-only mmcv (from an earlier CPU set-up, or pip's cache) then fails the
check instead of passing for a CUDA build.

With ``--cuda`` the extension module ``mmcv._ext`` must hold CUDA device code: an ELF section
``.nv_fatbin`` (where nvcc puts the compiled kernels) or nvcc's registration of it,
``__cudaRegisterFatBinary``; a CPU-only build has neither. When a GPU is visible, a CUDA
RoIAlign is also run (mmcv's ``get_compiling_cuda_version()`` crashed the process on the H200
build with torch 2.11 + CUDA 13 while the ops worked: docs/installation.md). Needs torch and
mmcv only, so that it runs before the rest of the stack is installed.
"""

import argparse
import importlib.util
import sys
from typing import Optional

CUDA_MARKERS = (b'.nv_fatbin', b'__cudaRegisterFatBinary')


def has_cuda_code(path: str) -> bool:
    """Whether a shared library holds CUDA device code (see the module docstring)."""
    with open(path, 'rb') as f:
        data = f.read()
    return any(marker in data for marker in CUDA_MARKERS)


def problem(cuda: bool) -> Optional[str]:
    """What is missing from the installed mmcv, or None when nothing is."""
    try:
        import mmcv
        from mmcv.ops import roi_align
    except ImportError as error:
        return f'mmcv with its ops does not import ({error})'
    if not cuda:
        return None
    spec = importlib.util.find_spec('mmcv._ext')
    if spec is None or not spec.origin or not has_cuda_code(spec.origin):
        where = spec.origin if spec is not None else 'mmcv._ext'
        return (
            f'mmcv {mmcv.__version__} was built without CUDA ops ({where} holds no CUDA code): '
            "a CPU build, e.g. from an earlier CPU set-up or pip's cache"
        )
    import torch

    if torch.cuda.is_available():
        try:
            roi_align(
                torch.ones(1, 1, 4, 4, device='cuda'),
                torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]], device='cuda'),
                (2, 2),
            )
        except RuntimeError as error:
            return f'a CUDA RoIAlign of mmcv {mmcv.__version__} fails: {error}'
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cuda', action='store_true', help='require the CUDA ops too')
    args = parser.parse_args()
    found = problem(args.cuda)
    if found:
        print(f'check_mmcv_ops: {found}', file=sys.stderr)
        sys.exit(1)
    print('mmcv ops' + (' with CUDA' if args.cuda else '') + ': present')


if __name__ == '__main__':
    main()
