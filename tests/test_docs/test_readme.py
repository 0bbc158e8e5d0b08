"""The README and docs/ as a contract: what they say about the tree, the set-up, the commands and
the configs holds.

Each check reads the documents (``read_docs()``: README.md and docs/*.md, by repository path;
tests hand a check a broken copy to show that it can fail) and the repository, never the network.
Checked: every repository path, link and anchor they name exists; every command names a tool,
flag or Makefile target that exists; the set-up steps are the script's; the Python floor and the
torch pin are the installed ones; the layout list (docs/development.md) is the tree; the model
table's parameter counts and the feature table are the code's; every config snippet builds and
runs a forward pass; the README stays a front door (at most 250 lines) and the docs tell no
history.
"""

import fnmatch
import glob
import importlib.metadata
import itertools
import os.path as osp
import re
import subprocess
from typing import Dict, Iterator, List, Tuple

import pytest

from mmfish.testing import ROOT

README = 'README.md'
INSTALLATION = 'docs/installation.md'
DEVELOPMENT = 'docs/development.md'
BACKBONE = 'docs/backbone.md'
SETUP_SCRIPT = osp.join(ROOT, 'tools', 'setup_env.sh')
README_MAX_LINES = 250
CHECKED_ROOTS = ('mmfish/', 'tools/', 'configs/')
PATH_ROOTS = ('mmfish/', 'tools/', 'configs/', 'tests/', 'docs/', 'requirements/', '.ci/')
FILE_TOKEN = re.compile(r'[A-Za-z0-9_{},.*-]+\.(?:py|sh|md|patch|txt|json|png|jpg)\b')
PATH_TOKEN = re.compile(
    r'(?<![\w/.~-])((?:mmfish|tools|configs|tests|docs|requirements|\.ci)/[\w{},./*-]*)'
)
# A script passes its extra arguments to this tool (whose flags they must be).
SCRIPT_TOOLS = {
    'tools/dist_train.sh': 'tools/train.py',
    'tools/slurm_train.sh': 'tools/train.py',
    'tools/dist_test.sh': 'tools/test.py',
    'tools/slurm_test.sh': 'tools/test.py',
}
COMMON_FLAGS = {'--help'}
HISTORY = re.compile(
    r"\bissue\s*#?\d+|before this change|the speed issue|the GPU issue|issue's target"
    r'|\btargets? of the\b|found since|an earlier run',
    re.I,
)


Docs = Dict[str, str]


# ------------------------------------------------------------------------------------- helpers
def read(path: str) -> str:
    with open(osp.join(ROOT, path), encoding='utf-8') as f:
        return f.read()


def read_docs() -> Docs:
    """README.md and every docs/*.md, by path relative to the repository root."""
    pages = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))
    return {path: read(path) for path in [README, *pages]}


def tracked_files() -> List[str]:
    """The repository's files as git knows them (committed, staged or new and not ignored)."""
    out = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [p for p in out.stdout.splitlines() if osp.exists(osp.join(ROOT, p))]


def without_comments(text: str) -> str:
    """The text without HTML comments (notes to maintainers, not read by users)."""
    return re.sub(r'<!--.*?-->', '', text, flags=re.S)


def section(text: str, title: str, level: int = 2) -> str:
    """The body of the ``## title`` section (up to the next heading of that level or above)."""
    hashes = '#' * level
    pattern = rf'^{hashes} {re.escape(title)}\n(.*?)(?=^#{{1,{level}}} |\Z)'
    match = re.search(pattern, text, re.M | re.S)
    assert match, f'no "{hashes} {title}" section'
    return match.group(1)


FENCE = re.compile(r'^([ \t]*)```([a-z]*)\n(.*?)^[ \t]*```[ \t]*$', re.M | re.S)


def code_blocks(text: str, lang: str = r'[a-z]*') -> List[str]:
    """The fenced code blocks (also those indented in a list), dedented."""
    blocks = []
    for indent, language, body in FENCE.findall(text):
        if re.fullmatch(lang, language):
            lines = body.splitlines(keepends=True)
            blocks.append(''.join(line[len(indent) :] for line in lines))
    return blocks


def prose(text: str) -> str:
    """The text without its code blocks."""
    return FENCE.sub('', text)


def inline_code(text: str) -> List[str]:
    """The `code spans` of the prose (code blocks left out)."""
    return re.findall(r'`([^`]+)`', prose(text))


def expand_braces(token: str) -> List[str]:
    """``a{1,2}b{x,y}`` -> ``a1bx, a1by, a2bx, a2by`` (shell brace expansion, no nesting)."""
    parts = re.split(r'(\{[^{}]*\})', token)
    choices = [p[1:-1].split(',') if p.startswith('{') else [p] for p in parts]
    return [''.join(c) for c in itertools.product(*choices)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors(text: str) -> List[str]:
    """Every heading's anchor, duplicates numbered as GitHub does (``name``, ``name-1``)."""
    seen: Dict[str, int] = {}
    result = []
    for heading in re.findall(r'^#{1,6} (.+)$', prose(text), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.append(base if count == 0 else f'{base}-{count}')
    return result


def segments(text: str) -> Iterator[str]:
    """Command-like pieces of a document: each line of a code block, each code span."""
    for block in code_blocks(text):
        yield from block.splitlines()
    yield from inline_code(text)


def layout_entries(development: str) -> List[Tuple[str, str]]:
    """The Layout block as (path, description) pairs, indented paths made absolute.

    A line at column 0 starts a top-level entry; a line indented by two spaces an entry under the
    last top-level one; a line indented further continues the description above.
    """
    block = code_blocks(section(development, 'Layout'))
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


def installation_steps(installation: str) -> Dict[str, str]:
    """The numbered list of docs/installation.md's "What the set-up does", by number."""
    body = section(installation, 'What the set-up does')
    return dict(re.findall(r'^(\d+)\. (.*)$', body, re.M))


def is_placeholder(token: str) -> bool:
    """A path written with a placeholder (``work_dirs/...``, ``CKPT``), not a real path."""
    if '...' in token or '<' in token:
        return True
    parts = re.split(r'[/._-]', token)
    return any(p.isupper() and len(p) > 1 and p != 'README' for p in parts)


def path_exists(path: str, files: List[str]) -> bool:
    if any(c in path for c in '*?['):
        pattern = path.replace('**/', '*')
        return bool(fnmatch.filter(files, pattern))
    return osp.exists(osp.join(ROOT, path))


def markdown_table(text: str, header_start: str) -> List[List[str]]:
    """The rows (cells stripped) of the first table whose header starts with ``header_start``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith('|'):
                    break
                rows.append([cell.strip() for cell in row.strip().strip('|').split('|')])
            return rows
    raise AssertionError(f'no table starting with {header_start!r}')


def number(cell: str) -> int:
    return int(re.sub(r'[^\d]', '', cell.split('(')[0]))


# ---------------------------------------------------------------------------------- the checks
def check_python_floor(docs: Docs) -> None:
    torch_floor = importlib.metadata.metadata('torch')['Requires-Python']
    match = re.fullmatch(r'>=\s*(\d+\.\d+)', torch_floor or '')
    assert match, f"torch's Requires-Python is {torch_floor!r}, expected '>=X.Y'"
    floor = match.group(1)
    assert re.search(r'Python \d+\.\d+\+', docs[README]), 'the README states no "Python X.Y+"'
    for path, text in docs.items():
        said = set(re.findall(r'Python (\d+\.\d+)\+', text))
        assert said <= {floor}, (
            f'{path} says Python {", ".join(sorted(said))}+ but the installed torch '
            f'{importlib.metadata.version("torch")} requires Python {torch_floor}: '
            f'write Python {floor}+'
        )
    setup_py = read('setup.py')
    assert f"python_requires='>={floor}'" in setup_py, f"setup.py: python_requires='>={floor}'"
    major, minor = floor.split('.')
    assert f'sys.version_info >= ({major}, {minor})' in read(
        'tools/setup_env.sh'
    ), f'tools/setup_env.sh must check for Python >= {floor}'


def check_torch_pin() -> None:
    """The torch the docs and the set-up pin is the one installed (whose floor is read)."""
    pinned = re.search(r'TORCH_VERSION="\$\{TORCH_VERSION:-([\d.]+)\}"', read('tools/setup_env.sh'))
    assert pinned, 'tools/setup_env.sh: no TORCH_VERSION default found'
    installed = importlib.metadata.version('torch').split('+')[0]
    assert installed == pinned.group(
        1
    ), f'tools/setup_env.sh pins torch {pinned.group(1)} but {installed} is installed'
    runtime = read('requirements/runtime.txt')
    assert f'torch=={installed}' in runtime, f'requirements/runtime.txt: name torch=={installed}'


def check_layout(docs: Docs, files: List[str]) -> None:
    entries = layout_entries(docs[DEVELOPMENT])
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


def check_paths(docs: Docs, files: List[str]) -> None:
    """Every repository path written in the README and the docs (code and prose) exists."""
    missing = []
    for doc, text in docs.items():
        text = without_comments(text)
        for piece in [*code_blocks(text), *inline_code(text)]:
            for token in PATH_TOKEN.findall(piece):
                token = token.rstrip('.,:')
                if is_placeholder(token) or token.startswith('mmfish/.mim'):
                    continue
                for path in expand_braces(token):
                    if not path_exists(path, files):
                        missing.append(f'{doc}: {path}')
    assert not missing, f'the docs name paths that do not exist: {sorted(set(missing))}'


def check_links(docs: Docs, files: List[str]) -> None:
    """Every relative link points at a file that exists, and its #anchor at one of its headings."""
    broken = []
    for doc, text in docs.items():
        for target in re.findall(r'\]\(([^)\s]+)\)', without_comments(text)):
            if re.match(r'[a-z]+:', target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition('#')
            resolved = osp.normpath(osp.join(osp.dirname(doc), path)) if path else doc
            if not osp.exists(osp.join(ROOT, resolved)):
                broken.append(f'{doc}: ({target}): no file {resolved}')
            elif anchor and anchor not in anchors(docs.get(resolved) or read(resolved)):
                broken.append(f'{doc}: ({target}): {resolved} has no heading #{anchor}')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def check_commands(docs: Docs, files: List[str]) -> None:
    """Tools exist and take the flags written after them; make targets exist; console tools are
    the package's."""
    makefile = read('Makefile')
    targets = set(re.findall(r'^([\w-]+):', makefile, re.M))
    entry_points = read('setup.py') + (
        read('pyproject.toml') if osp.exists(osp.join(ROOT, 'pyproject.toml')) else ''
    )
    problems = []
    for doc, text in docs.items():
        for piece in segments(without_comments(text)):
            for target in re.findall(r'(?<![\w-])make ([a-z][\w-]*)', piece):
                if target not in targets:
                    problems.append(f'{doc}: make {target}: no such Makefile target')
            for tool in re.findall(r'(?<![\w-])(mmfish-[a-z]+)', piece):
                if tool not in entry_points:
                    problems.append(f'{doc}: {tool}: not a console entry point of the package')
            for match in re.finditer(
                r'(?<![\w/.])(tools/[\w/.-]+\.(?:py|sh))((?:[^;&|#`]*))', piece
            ):
                tool, rest = match.groups()
                if not osp.isfile(osp.join(ROOT, tool)):
                    continue  # check_paths reports it
                source = read(SCRIPT_TOOLS.get(tool, tool))
                if tool.endswith('.py') or tool in SCRIPT_TOOLS:
                    source += read('mmfish/utils/cli.py')  # --debug, for every tool
                for flag in re.findall(r'(?<![\w=-])(--[a-z][\w-]*)', rest):
                    if flag not in COMMON_FLAGS and f"'{flag}'" not in source:
                        problems.append(f'{doc}: {tool} {flag}: the tool has no such option')
    assert not problems, '\n'.join(problems)


def check_setup_steps(docs: Docs) -> None:
    script = setup_steps(read('tools/setup_env.sh'))
    listed = installation_steps(docs[INSTALLATION])
    numbered = [n for n in script if n.isdigit()]
    assert list(listed) == numbered, (
        f'{INSTALLATION} lists set-up steps {list(listed)}, tools/setup_env.sh announces '
        f'{numbered}: number them alike'
    )
    for n in numbered:
        first_word = re.findall(r'[a-z]+', re.sub(r'\$\w+', '', script[n]).lower())[0]
        assert first_word in listed[n].lower(), (
            f"{INSTALLATION} set-up step {n} ({listed[n][:50]!r}) is not the script's "
            f'"{script[n]}"'
        )
    for extra in (n for n in script if not n.isdigit()):
        assert f'step {extra}' in docs[INSTALLATION], f'{INSTALLATION} omits set-up step {extra}'


def check_quick_start(docs: Docs) -> None:
    """Two commands: one runs the default job, one the tests, both Makefile targets."""
    blocks = code_blocks(section(docs[README], 'Quick start'))
    assert len(blocks) == 1, 'the Quick start should hold one code block'
    commands = [line.split('#')[0].strip() for line in blocks[0].splitlines()]
    commands = [c for c in commands if c]
    assert commands == ['make demo', 'make test'], f'the Quick start runs {commands}'
    makefile = read('Makefile')
    for target in ('demo', 'test'):
        assert re.search(rf'^{target}:', makefile, re.M), f'the Makefile has no {target} target'


def check_readme_length(docs: Docs) -> None:
    lines = docs[README].count('\n')
    assert (
        lines <= README_MAX_LINES
    ), f'README.md has {lines} lines, more than {README_MAX_LINES}: move detail to docs/'


def check_no_history(docs: Docs) -> None:
    """The docs say what is true now; how it came to be goes in commit messages."""
    found = []
    for doc, text in docs.items():
        for line in without_comments(text).splitlines():
            match = HISTORY.search(line)
            if match:
                found.append(f'{doc}: "{match.group(0)}" in {line.strip()[:80]!r}')
    assert not found, 'history in the docs:\n' + '\n'.join(found)


def check_docs_are_linked(docs: Docs) -> None:
    """The README links every docs page (the front door leads everywhere in one click)."""
    linked = set(re.findall(r'\]\((docs/[\w.-]+\.md)', docs[README]))
    pages = {p for p in docs if p.startswith('docs/')}
    assert pages <= linked, f'the README links no {sorted(pages - linked)}'


def check_tables(docs: Docs) -> None:
    """The feature table and the model table are the code's; README and backbone.md agree."""
    import torch

    from mmfish.models import FishNet

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    readme, backbone = docs[README], docs[BACKBONE]
    rows = {r[0]: r[1:] for r in markdown_table(readme, '| feature (`out_indices`) |')}
    channels = [int(c) for c in rows['channels']]
    strides = [int(s) for s in rows['stride']]
    table = {r[0]: r for r in markdown_table(backbone, '| variant | classifier')}
    with torch.device('meta'):
        for row in markdown_table(readme, '| variant | `arch` |'):
            arch = row[1].strip('`')
            model = FishNet(arch, out_indices=tuple(range(11)))
            assert list(model.out_channels) == channels, f'{arch}: channels {model.out_channels}'
            assert list(model.out_strides) == strides, f'{arch}: strides {model.out_strides}'
            backbone_params = count(FishNet(arch))
            classifier = count(FishNet(arch, out_norm=False, num_classes=1000))
            raw = count(FishNet(arch, out_norm=False))
            assert number(row[2]) == backbone_params, f'README {arch}: {backbone_params:,}'
            assert number(row[4]) == classifier, f'README {arch}: classifier {classifier:,}'
            assert [number(c) for c in table[arch][1:4]] == [
                classifier,
                raw,
                backbone_params,
            ], f'{BACKBONE} {arch}: {classifier:,} / {raw:,} / {backbone_params:,}'
            assert row[3] == table[arch][4], f'{arch}: README and {BACKBONE} FLOPs differ'


def config_snippets(docs: Docs) -> List[Tuple[str, str]]:
    """(document, code) of every Python block that is a config inheriting a toolbox's."""
    return [
        (doc, block)
        for doc, text in docs.items()
        for block in code_blocks(text, 'python')
        if re.match(r"_base_ = '\w+::", block)
    ]


CHECKS = {
    'python_floor': lambda docs, files: check_python_floor(docs),
    'layout': check_layout,
    'paths': check_paths,
    'links': check_links,
    'commands': check_commands,
    'setup_steps': lambda docs, files: check_setup_steps(docs),
    'quick_start': lambda docs, files: check_quick_start(docs),
    'readme_length': lambda docs, files: check_readme_length(docs),
    'no_history': lambda docs, files: check_no_history(docs),
    'docs_are_linked': lambda docs, files: check_docs_are_linked(docs),
    'tables': lambda docs, files: check_tables(docs),
}


@pytest.fixture(scope='module')
def files() -> List[str]:
    return tracked_files()


@pytest.mark.parametrize('name', sorted(CHECKS))
def test_docs_hold(name, files):
    CHECKS[name](read_docs(), files)


def test_torch_pin_is_the_installed_torch():
    check_torch_pin()


# ------------------------------------------------------------------------ the config snippets
def build_and_run(path: str) -> None:
    """Build the model of the config at ``path`` and run it on one small image."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(path)  # imports custom_imports: mmfish
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    elif scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model = MODELS.build(cfg.model).eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        if scope == 'mmpretrain':
            logits = model(image, mode='tensor')
            assert logits.shape == (1, cfg.model.head.num_classes)
        elif scope == 'mmseg':
            logits = model(image, mode='tensor')
            assert logits.shape[:2] == (1, cfg.model.decode_head.num_classes)
        else:
            from mmdet.structures import DetDataSample

            shapes = dict(img_shape=(64, 96), ori_shape=(64, 96), scale_factor=(1.0, 1.0))
            sample = DetDataSample(metainfo=shapes)
            features = model.extract_feat(image)
            assert [f.shape[1] for f in features] == [cfg.model.neck.out_channels] * len(features)
            model.predict(image, [sample])


@pytest.mark.parametrize(
    'doc,code',
    config_snippets(read_docs()),
    ids=lambda value: value if value.endswith('.md') else value.split("'")[1],
)
def test_config_snippet_builds_and_runs(doc, code, tmp_path):
    path = tmp_path / 'snippet_config.py'
    path.write_text(code)
    build_and_run(str(path))


def test_both_toolboxes_have_a_snippet():
    scopes = {
        re.match(r"_base_ = '(\w+)::", code).group(1) for _, code in config_snippets(read_docs())
    }
    assert {'mmdet', 'mmseg'} <= scopes, f'README/docs config snippets inherit only {scopes}'


def test_a_snippet_without_delete_fails(tmp_path):
    """The README's warning holds: without _delete_=True the R-50 base's keys reach FishNet."""
    (doc, code), *_ = [s for s in config_snippets(read_docs()) if "'mmseg::" in s[1]]
    assert '_delete_=True, ' in code, f'{doc}: the mmseg snippet has no _delete_=True'
    path = tmp_path / 'snippet_config.py'
    path.write_text(code.replace('_delete_=True, ', ''))
    with pytest.raises(TypeError, match="unexpected keyword argument 'depth'"):
        build_and_run(str(path))


# ----------------------------------------------------------- the checks fail on broken documents
BREAKAGES = {
    'python_floor': (README, 'Python 3.10+', 'Python 3.8+'),
    'layout': (DEVELOPMENT, '  models/layers/ ', '  models/layerz/ '),
    'paths': (
        'docs/segmentation.md',
        'configs/segmentation/fpn_fishnet150_4xb2',
        'configs/segmentation/fnp_fishnet150_4xb2',
    ),
    'links': (
        README,
        '](docs/training.md#fine-tune-fishnet-150-on-coco)',
        '](docs/training.md#fine-tune)',
    ),
    'commands': (
        'docs/training.md',
        'train.py configs/mask_rcnn_fishnet150_fpn_1x_coco.py [--amp]',
        'train.py configs/mask_rcnn_fishnet150_fpn_1x_coco.py [--ampp]',
    ),
    'setup_steps': (INSTALLATION, '7. **check**', '8. **check**'),
    'quick_start': (README, 'make test   #', 'make test-fast   #'),
    'readme_length': (README, '## Citation', '\n' * README_MAX_LINES + '## Citation'),
    'no_history': (
        'docs/training.md',
        '## Commands\n',
        '## Commands\n\nBefore this change it failed.\n',
    ),
    'docs_are_linked': (README, '[docs/packaging.md](docs/packaging.md)', 'docs/packaging.md'),
    'tables': (README, '| 21,675,520 |', '| 21,675,521 |'),
}


@pytest.mark.parametrize('name', sorted(BREAKAGES))
def test_check_fails_on_broken_docs(name, files):
    doc, old, new = BREAKAGES[name]
    docs = read_docs()
    assert old in docs[doc], f'the breakage of {name} no longer applies: update BREAKAGES'
    docs[doc] = docs[doc].replace(old, new)
    with pytest.raises(AssertionError):
        CHECKS[name](docs, files)


def test_layout_check_asks_for_what_is_unnamed(files):
    docs = read_docs()
    docs[DEVELOPMENT] = docs[DEVELOPMENT].replace(' cli.py (the tools', ' (the tools')
    with pytest.raises(AssertionError, match=r'add cli\.py to the line of mmfish/utils/'):
        check_layout(docs, files)
    with pytest.raises(AssertionError, match=r'add new_tool\.py to the line of tools/misc/'):
        check_layout(read_docs(), [*files, 'tools/misc/new_tool.py'])
    with pytest.raises(AssertionError, match='lacks the folder mmfish/new_package/'):
        check_layout(read_docs(), [*files, 'mmfish/new_package/__init__.py'])
