"""The README as a contract: what it says about the tree, the set-up and the commands holds.

Each check reads the README (``README`` below; tests point it at a broken copy to show that the
checks can fail) and the repository, never the network.
"""

import fnmatch
import importlib.metadata
import itertools
import os.path as osp
import re
import subprocess
from typing import Dict, Iterator, List, Tuple

import pytest

from mmfish.testing import ROOT

README = osp.join(ROOT, 'README.md')
SETUP_SCRIPT = osp.join(ROOT, 'tools', 'setup_env.sh')
CHECKED_ROOTS = ('mmfish/', 'tools/', 'configs/')
FILE_TOKEN = re.compile(r'[A-Za-z0-9_{},.*-]+\.(?:py|sh|md|patch|txt|json|png|jpg)\b')


# ------------------------------------------------------------------------------------- helpers
def read(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


def tracked_files() -> List[str]:
    """The repository's files as git knows them (committed or staged)."""
    out = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [p for p in out.stdout.splitlines() if osp.exists(osp.join(ROOT, p))]


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section (up to the next ``## `` heading)."""
    match = re.search(rf'^## {re.escape(title)}\n(.*?)(?=^## |\Z)', text, re.M | re.S)
    assert match, f'the README has no "## {title}" section'
    return match.group(1)


def code_blocks(text: str) -> List[str]:
    return re.findall(r'^```[a-z]*\n(.*?)^```', text, re.M | re.S)


def expand_braces(token: str) -> List[str]:
    """``a{1,2}b{x,y}`` -> ``a1bx, a1by, a2bx, a2by`` (shell brace expansion, no nesting)."""
    parts = re.split(r'(\{[^{}]*\})', token)
    choices = [p[1:-1].split(',') if p.startswith('{') else [p] for p in parts]
    return [''.join(c) for c in itertools.product(*choices)]


def layout_entries(readme: str) -> List[Tuple[str, str]]:
    """The Layout block as (path, description) pairs, indented paths made absolute.

    A line at column 0 starts a top-level entry; a line indented by two spaces an entry under the
    last top-level one; a line indented further continues the description above.
    """
    block = code_blocks(section(readme, 'Layout'))
    assert block, 'the Layout section has no code block'
    entries: List[Tuple[str, str]] = []
    top = ''
    for line in block[0].splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(' '))
        if indent > 2:
            assert entries, f'Layout: a continuation line comes first: {line!r}'
            path, text = entries[-1]
            entries[-1] = (path, f'{text} {line.strip()}')
            continue
        path, _, text = line.strip().partition('  ')
        path = path.strip()
        if indent == 0:
            top = path if path.endswith('/') else ''
        else:
            assert top, f'Layout: {line!r} is indented under no folder'
            path = top + path
        entries.append((path, text.strip()))
    return entries


def layout_names(entries: List[Tuple[str, str]]) -> Iterator[Tuple[str, str]]:
    """(entry, path) of every file an entry's description names, relative to the entry's folder."""
    for entry, text in entries:
        folder = entry if entry.endswith('/') else osp.dirname(entry) + '/'
        for token in FILE_TOKEN.findall(text):
            for name in expand_braces(token):
                yield entry, folder + name


def setup_steps(script: str) -> Dict[str, str]:
    """``step N "title"`` of the set-up script, by N (strings: ``3b`` is a step too)."""
    return dict(re.findall(r'^\s*step (\w+) "([^"]*)"', script, re.M))


def installation_steps(readme: str) -> Dict[str, str]:
    """The numbered list of the Installation section (before its first ###), by number."""
    body = section(readme, 'Installation').split('\n### ')[0]
    return dict(re.findall(r'^(\d+)\. (.*)$', body, re.M))


# ---------------------------------------------------------------------------------- the checks
def check_python_floor(readme: str) -> None:
    torch_floor = importlib.metadata.metadata('torch')['Requires-Python']
    match = re.fullmatch(r'>=\s*(\d+\.\d+)', torch_floor or '')
    assert match, f"torch's Requires-Python is {torch_floor!r}, expected '>=X.Y'"
    floor = match.group(1)
    said = re.findall(r'Python (\d+\.\d+)\+', readme)
    assert said, 'the README states no Python floor ("Python X.Y+")'
    assert set(said) == {floor}, (
        f'the README says Python {", ".join(sorted(set(said)))}+ but the installed torch '
        f'{importlib.metadata.version("torch")} requires Python {torch_floor}: '
        f'write Python {floor}+'
    )
    setup_py = read(osp.join(ROOT, 'setup.py'))
    assert f"python_requires='>={floor}'" in setup_py, f"setup.py: python_requires='>={floor}'"
    major, minor = floor.split('.')
    assert f'sys.version_info >= ({major}, {minor})' in read(
        SETUP_SCRIPT
    ), f'tools/setup_env.sh must check for Python >= {floor}'


def check_torch_pin() -> None:
    """The torch the README and the set-up pin is the one installed (whose floor is read)."""
    pinned = re.search(r'TORCH_VERSION="\$\{TORCH_VERSION:-([\d.]+)\}"', read(SETUP_SCRIPT))
    assert pinned, 'tools/setup_env.sh: no TORCH_VERSION default found'
    installed = importlib.metadata.version('torch').split('+')[0]
    assert installed == pinned.group(
        1
    ), f'tools/setup_env.sh pins torch {pinned.group(1)} but {installed} is installed'
    runtime = read(osp.join(ROOT, 'requirements', 'runtime.txt'))
    assert f'torch=={installed}' in runtime, f'requirements/runtime.txt: name torch=={installed}'


def check_layout(readme: str, files: List[str]) -> None:
    entries = layout_entries(readme)
    problems = []
    for path, _ in entries:
        if not osp.exists(osp.join(ROOT, path)):
            problems.append(f'Layout names {path}, which does not exist')
    named = set()
    for entry, path in layout_names(entries):
        hits = fnmatch.filter(files, path) if '*' in path else [path] * (path in files)
        if not hits:
            problems.append(f'Layout names {path} (under {entry}), which does not exist')
        named.update(hits)
    entry_paths = {p for p, _ in entries}
    checked = [f for f in files if f.startswith(CHECKED_ROOTS)]
    packages = sorted({osp.dirname(f) + '/' for f in checked if f.startswith('mmfish/')})
    config_dirs = sorted({osp.dirname(f) + '/' for f in checked if f.startswith('configs/')})
    for folder in packages + config_dirs:
        if folder not in entry_paths:
            problems.append(f'Layout lacks the folder {folder}: add a line for it')
    for f in checked:
        module = f.startswith('mmfish/') and f.endswith('.py') and not f.endswith('__init__.py')
        if (module or f.startswith('tools/')) and f not in named and f not in entry_paths:
            problems.append(
                f'Layout does not name {f}: add {osp.basename(f)} to the line of '
                f'{osp.dirname(f)}/'
            )
    assert not problems, '\n'.join(problems)


def check_command_paths(readme: str) -> None:
    """Every tools/... or configs/... file written in a README code block exists."""
    missing = []
    for block in code_blocks(readme.split('\n## Layout\n')[0]):
        for token in re.findall(r'(?<![\w/.])((?:tools|configs)/[\w{},./*-]+)', block):
            token = token.rstrip('.,')
            if token.endswith('/') or not re.search(r'\.\w+$', token):
                continue
            for path in expand_braces(token):
                if not osp.exists(osp.join(ROOT, path)):
                    missing.append(path)
    assert not missing, f'README commands name files that do not exist: {sorted(set(missing))}'


def check_setup_steps(readme: str) -> None:
    script = setup_steps(read(SETUP_SCRIPT))
    listed = installation_steps(readme)
    numbered = [n for n in script if n.isdigit()]
    assert list(listed) == numbered, (
        f'the README lists set-up steps {list(listed)}, tools/setup_env.sh announces '
        f'{numbered}: number them alike'
    )
    for number in numbered:
        first_word = re.findall(r'[a-z]+', re.sub(r'\$\w+', '', script[number]).lower())[0]
        assert first_word in listed[number].lower(), (
            f"README set-up step {number} ({listed[number][:50]!r}) is not the script's "
            f'"{script[number]}"'
        )
    for extra in (n for n in script if not n.isdigit()):
        assert f'step {extra}' in readme, f'the README does not mention the set-up step {extra}'


def check_quick_start(readme: str) -> None:
    """Two commands: one runs the default job, one the tests, both Makefile targets."""
    blocks = code_blocks(section(readme, 'Quick start'))
    assert len(blocks) == 1, 'the Quick start should hold one code block'
    commands = [line.split('#')[0].strip() for line in blocks[0].splitlines()]
    commands = [c for c in commands if c]
    assert commands == ['make demo', 'make test'], f'the Quick start runs {commands}'
    makefile = read(osp.join(ROOT, 'Makefile'))
    for target in ('demo', 'test'):
        assert re.search(rf'^{target}:', makefile, re.M), f'the Makefile has no {target} target'


CHECKS = {
    'python_floor': lambda text, files: check_python_floor(text),
    'layout': check_layout,
    'command_paths': lambda text, files: check_command_paths(text),
    'setup_steps': lambda text, files: check_setup_steps(text),
    'quick_start': lambda text, files: check_quick_start(text),
}


@pytest.fixture(scope='module')
def files() -> List[str]:
    return tracked_files()


@pytest.mark.parametrize('name', sorted(CHECKS))
def test_readme_holds(name, files):
    CHECKS[name](read(README), files)


def test_torch_pin_is_the_installed_torch():
    check_torch_pin()


# ------------------------------------------------------------- the checks fail on a broken README
BREAKAGES = {
    'python_floor': ('Python 3.10+', 'Python 3.8+'),
    'layout': ('  models/layers/ ', '  models/layerz/ '),
    'command_paths': (
        'tools/train.py configs/segmentation/fpn_',
        'tools/train.py configs/segmentation/fnp_',
    ),
    'setup_steps': ('7. **check**', '8. **check**'),
    'quick_start': ('make test   #', 'make test-fast   #'),
}


@pytest.mark.parametrize('name', sorted(BREAKAGES))
def test_check_fails_on_a_broken_readme(name, files):
    old, new = BREAKAGES[name]
    text = read(README)
    assert old in text, f'the breakage of {name} no longer applies: update BREAKAGES'
    with pytest.raises(AssertionError):
        CHECKS[name](text.replace(old, new), files)


def test_layout_check_asks_for_what_is_unnamed(files):
    text = read(README).replace(' cli.py (the tools', ' (the tools')
    with pytest.raises(AssertionError, match=r'add cli\.py to the line of mmfish/utils/'):
        check_layout(text, files)
    new_tool = 'tools/misc/new_tool.py'
    with pytest.raises(AssertionError, match=r'add new_tool\.py to the line of tools/misc/'):
        check_layout(read(README), [*files, new_tool])
    with pytest.raises(AssertionError, match='lacks the folder mmfish/new_package/'):
        check_layout(read(README), [*files, 'mmfish/new_package/__init__.py'])
