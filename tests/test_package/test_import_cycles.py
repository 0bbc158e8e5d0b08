"""The package's imports form no cycle, and its layers import one way.

Every module of ``mmfish`` is parsed with :mod:`ast` (nothing is imported), and every import
of an ``mmfish`` module is an edge: absolute and relative, at module level and inside a
function or an ``if TYPE_CHECKING:`` block. A lazy import that only defers a cycle to run time
is still a cycle. An import names a module (``from mmfish.a import b`` names ``mmfish.a.b`` when
that is a module, else ``mmfish.a``); the packages above it are not edges, or every module
would depend on ``mmfish/__init__.py``, which imports everything.
"""

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = 'mmfish'
ROOT = Path(__file__).resolve().parents[2]


def module_files(root: Path, package: str) -> Dict[str, Path]:
    """Dotted module name -> its file, for every ``.py`` file of ``package`` under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob('*.py')):
        parts = list(path.relative_to(root).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        modules['.'.join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: Set[str], package: str) -> Set[str]:
    """The modules of ``package`` that ``module`` (the file ``path``) imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    is_package = path.name == '__init__.py'
    found: Set[str] = set()

    def add(name: str) -> None:
        # The longest known module the name starts with (``mmfish.a.B`` -> ``mmfish.a``).
        parts = name.split('.')
        while parts and '.'.join(parts) not in known:
            parts.pop()
        if parts:
            found.add('.'.join(parts))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == package:
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.') if is_package else module.split('.')[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] != package:
                continue
            for alias in node.names:
                submodule = f'{target}.{alias.name}'
                add(submodule if submodule in known else target)
    found.discard(module)
    return found


def import_graph(root: Path, package: str = PACKAGE) -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports."""
    files = module_files(root, package)
    known = set(files)
    return {name: imported_modules(name, path, known, package) for name, path in files.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: List[str], graph: Dict[str, Set[str]]) -> List[str]:
    """A path ``start -> ... -> start`` inside a strongly connected component (breadth first)."""
    members = set(component)
    start = component[0]
    parents: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & members):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if succ not in parents:
                    parents[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f'{component} is not strongly connected')  # not reached


def imports_outside(graph: Dict[str, Set[str]], layer: str, allowed: List[str]) -> List[str]:
    """``module -> imported`` for each import from ``layer`` of a module outside ``allowed``."""

    def within(module: str, packages: List[str]) -> bool:
        return any(module == p or module.startswith(p + '.') for p in packages)

    return sorted(
        f'{module} -> {imported}'
        for module, imports in graph.items()
        if within(module, [layer])
        for imported in imports
        if not within(imported, allowed)
    )


@pytest.fixture(scope='module')
def graph() -> Dict[str, Set[str]]:
    return import_graph(ROOT)


def test_graph_sees_every_module_and_its_imports(graph):
    assert f'{PACKAGE}.models.backbones.fishnet' in graph
    assert f'{PACKAGE}.models' in graph[PACKAGE]  # ``from . import (engine, models)``
    # ``from .backbones import FishNet`` in models/__init__.py: the package, not a class.
    assert f'{PACKAGE}.models.backbones' in graph[f'{PACKAGE}.models']


def test_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, 'import cycle(s) in mmfish (a lazy import counts):\n' + '\n'.join(
        ' -> '.join(cycle) for cycle in found
    )


def test_utils_import_nothing_upward(graph):
    """``mmfish.utils`` is the bottom layer: it imports no other part of mmfish."""
    wrong = imports_outside(graph, f'{PACKAGE}.utils', allowed=[f'{PACKAGE}.utils'])
    assert not wrong, 'mmfish.utils imports upward: ' + '; '.join(wrong)


def test_models_import_neither_engine_nor_datasets(graph):
    packages = {name.split('.')[1] for name in graph if name.count('.') >= 1}
    allowed = [f'{PACKAGE}.{p}' for p in sorted(packages - {'engine', 'datasets'})]
    wrong = imports_outside(graph, f'{PACKAGE}.models', allowed)
    assert not wrong, 'mmfish.models imports engine or datasets: ' + '; '.join(wrong)


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_lazy_or_relative_cycle_is_found(tmp_path):
    """The walker on a made-up package: a cycle through an import inside a function, a relative
    import and a TYPE_CHECKING import are all found; a one-way tree has none."""
    _write(tmp_path, 'pkg/__init__.py', 'from . import a\n')
    _write(tmp_path, 'pkg/a.py', 'import os\nfrom .sub import b\n')
    _write(tmp_path, 'pkg/sub/__init__.py', '')
    _write(tmp_path, 'pkg/sub/b.py', 'def f():\n    from pkg.sub.c import g\n    return g\n')
    _write(tmp_path, 'pkg/sub/c.py', 'X = 1\n')
    graph = import_graph(tmp_path, 'pkg')
    assert graph['pkg'] == {'pkg.a'}
    assert graph['pkg.a'] == {'pkg.sub.b'}
    assert graph['pkg.sub.b'] == {'pkg.sub.c'}
    assert cycles(graph) == []

    _write(tmp_path, 'pkg/sub/c.py', 'def h():\n    from ..a import x\n    return x\n')
    assert cycles(import_graph(tmp_path, 'pkg')) == [['pkg.a', 'pkg.sub.b', 'pkg.sub.c', 'pkg.a']]

    _write(
        tmp_path,
        'pkg/sub/c.py',
        'from typing import TYPE_CHECKING\n' 'if TYPE_CHECKING:\n    import pkg.a\n',
    )
    assert cycles(import_graph(tmp_path, 'pkg')) == [['pkg.a', 'pkg.sub.b', 'pkg.sub.c', 'pkg.a']]
