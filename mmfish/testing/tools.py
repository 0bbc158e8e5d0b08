"""The tools as the tests run them: in a subprocess as a user does, or imported."""

import importlib.util
import os
import os.path as osp
import subprocess
import sys
from types import ModuleType
from typing import Dict, Optional

from .paths import ROOT


def tool_env() -> Dict[str, str]:
    """The environment for tool subprocesses: this interpreter, one thread per process.

    On 2 shared cores, torch's two OpenMP threads spin-wait for each other whenever another
    process holds a core: a tiny-config iteration then takes 5-10 s instead of 0.2 s.
    """
    threads = {k: os.environ.get(k, '1') for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    return {**os.environ, 'PYTHON': sys.executable, **threads}


def run_tool(
    script: str,
    *args: str,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 600,
    cwd: Optional[str] = None,
    base_env: Optional[Dict[str, str]] = None,
) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` (``.py`` or ``.sh``) in a subprocess; returns it completed.

    Args:
        script: The tool's path under ``tools/``.
        args: Its arguments.
        env: Variables set on top of ``base_env``.
        timeout: Seconds before the run is killed (``subprocess.TimeoutExpired``).
        cwd: The working directory (default: the repository root).
        base_env: The environment (default: :func:`tool_env` now).
    """
    cmd = [sys.executable, osp.join(ROOT, 'tools', script), *args]
    if script.endswith('.sh'):
        cmd = ['bash', *cmd[1:]]
    full_env = {**(tool_env() if base_env is None else base_env), **(env or {})}
    return subprocess.run(
        cmd, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def import_tool(folder: str, name: str) -> ModuleType:
    """Import ``tools/<folder>/<name>.py`` as a module (its folder first on ``sys.path``)."""
    sys.path.insert(0, osp.join(ROOT, 'tools', folder))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def load_module(path: str, name: str) -> ModuleType:
    """Load the Python file ``path`` as a new module named ``name`` (not put in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
