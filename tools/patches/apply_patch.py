"""Apply a unified diff (``diff -u`` / ``git diff``) to a source tree, exactly or not at all.

    python tools/patches/apply_patch.py tools/patches/mmcv-2.1.0-cuda13.patch build/mmcv-2.1.0

Used by ``tools/setup_env.sh`` on machines that may have neither ``patch`` nor ``git``. Every
hunk must match its context exactly (at its line number, or elsewhere in the file if the file
moved); nothing is written unless every hunk of every file matches, and a hunk that does not
is reported with its file and header. Paths are taken with their first component stripped
(``-p1``: ``a/mmcv/...`` is ``mmcv/...``). Already-patched files are detected and reported as
such, so applying twice is an error that says so rather than a silent double edit.
"""

import argparse
import os
import re
import sys
from typing import Dict, List, Tuple

HUNK = re.compile(r'^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@')

Hunk = Tuple[str, List[str], List[str], int]  # header, old lines, new lines, old start (0-based)


def parse(text: str) -> Dict[str, List[Hunk]]:
    """``{path: [hunks]}`` from a unified diff; paths with their first component stripped."""
    files: Dict[str, List[Hunk]] = {}
    lines = text.splitlines()
    i, path = 0, None
    while i < len(lines):
        line = lines[i]
        if line.startswith('+++ '):
            target = line[4:].split('\t')[0].strip()
            path = target.split('/', 1)[1] if '/' in target else target
            files.setdefault(path, [])
        elif line.startswith('@@ ') and path is not None:
            match = HUNK.match(line)
            if not match:
                raise ValueError(f'bad hunk header: {line!r}')
            old_len = int(match.group(2) or 1)
            new_len = int(match.group(4) or 1)
            old, new = [], []
            i += 1
            while i < len(lines) and (len(old) < old_len or len(new) < new_len):
                body = lines[i]
                tag, rest = (body[:1], body[1:]) if body else (' ', '')
                if tag == '\\':  # "\ No newline at end of file"
                    i += 1
                    continue
                if tag in (' ', '-'):
                    old.append(rest)
                if tag in (' ', '+'):
                    new.append(rest)
                if tag not in (' ', '-', '+'):
                    raise ValueError(f'{path}: unexpected line in hunk {line!r}: {body!r}')
                i += 1
            files[path].append((line, old, new, max(int(match.group(1)) - 1, 0)))
            continue
        i += 1
    return files


def find(haystack: List[str], needle: List[str], near: int) -> int:
    """Index of ``needle`` in ``haystack``, the occurrence nearest ``near``; -1 if absent."""
    starts = [
        s for s in range(len(haystack) - len(needle) + 1) if haystack[s : s + len(needle)] == needle
    ]
    return min(starts, key=lambda s: abs(s - near)) if starts else -1


def apply(patch: str, root: str) -> List[str]:
    """Patch the files under ``root``; returns the patched paths. Raises on any mismatch."""
    with open(patch) as f:
        files = parse(f.read())
    if not files:
        raise ValueError(f'{patch}: no file in the diff')
    results: Dict[str, str] = {}
    errors = []
    for path, hunks in files.items():
        full = os.path.join(root, path)
        if not os.path.isfile(full):
            errors.append(f'{path}: no such file under {root}')
            continue
        with open(full, newline='') as f:
            text = f.read()
        lines = text.split('\n')
        offset = 0
        for header, old, new, start in hunks:
            at = find(lines, old, start + offset)
            if at < 0:
                already = find(lines, new, start + offset) >= 0
                errors.append(
                    f'{path}: hunk {header} '
                    + ('is already applied' if already else 'does not match the file')
                )
                continue
            lines[at : at + len(old)] = new
            offset += len(new) - len(old)
        results[full] = '\n'.join(lines)
    if errors:
        raise ValueError('; '.join(errors))
    for full, text in results.items():
        with open(full, 'w', newline='') as f:
            f.write(text)
    return sorted(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('patch', help='a unified diff, paths relative to root with one prefix')
    parser.add_argument('root', help='the source tree to patch')
    args = parser.parse_args()
    try:
        paths = apply(args.patch, args.root)
    except (OSError, ValueError) as e:
        sys.exit(f'apply_patch: {args.patch}: {e}')
    print(f'patched {len(paths)} files: {", ".join(paths)}')


if __name__ == '__main__':
    main()
