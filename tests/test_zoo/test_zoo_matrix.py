"""The compatibility matrix of docs/zoo.md is what ``tools/dev/zoo_matrix.py`` produces now.

The whole run (every family, both toolboxes) is the slow test at the end; the fast tests check
the page's table against itself and a few families' rows against a run of those families."""

import os.path as osp
import re

import pytest

from mmfish.testing import ROOT, import_tool

pytest.importorskip('mmseg')
zoo_matrix = import_tool('dev', 'zoo_matrix')
PAGE = osp.join(ROOT, 'docs', 'zoo.md')
ROW = re.compile(r'^\| (mmdet|mmseg) \| ([^|]+) \| `([^`]+)` \| (works|fails|n-a) \| (.*) \|$')


def page_rows():
    with open(PAGE, encoding='utf-8') as f:
        generated = zoo_matrix.page_table(f.read())
    rows = [ROW.match(line) for line in generated.splitlines() if line.startswith('| mm')]
    assert rows and all(rows), 'a row of the table is not in the generated format'
    return generated, [
        zoo_matrix.Row(m[1], m[2].strip(), m[3], m[4], m[5].strip(), 0.0) for m in rows
    ]


def test_the_page_table_is_well_formed_and_its_counts_are_its_rows():
    generated, rows = page_rows()
    assert zoo_matrix.table(rows) == generated
    for row in rows:
        assert osp.isfile(osp.join(zoo_matrix.configs_root(row.toolbox), row.config)), row
        assert row.config.split('/')[0] == row.family
        assert (row.why == '') == (row.result == 'works'), row
        assert row.result != 'n-a' or row.why.startswith('ResNet: '), row


def test_each_toolbox_has_its_families():
    _, rows = page_rows()
    assert {r.toolbox for r in rows} == {'mmdet', 'mmseg'}
    assert len({(r.toolbox, r.family) for r in rows}) == len(rows)


@pytest.mark.slow
@pytest.mark.parametrize('family', [('mmdet', 'retinanet'), ('mmseg', 'fastfcn')])
def test_a_familys_row_is_what_a_run_gives_now(family):
    toolbox, name = family
    (path,) = [p for f, p in zoo_matrix.family_configs(toolbox) if f == name]
    row = zoo_matrix.run_family(toolbox, name, path)
    print(f'{toolbox} {name}: {row.result} in {row.seconds:.1f} s')
    _, rows = page_rows()
    assert row.cells() in [r.cells() for r in rows]


@pytest.mark.slow
def test_the_whole_matrix_is_what_a_run_gives_now(run_tool):
    """Every family of both toolboxes, as ``python tools/dev/zoo_matrix.py --jobs 2`` runs them
    (docs/zoo.md says how long that takes)."""
    proc = run_tool('dev/zoo_matrix.py', '--jobs', '2', timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout.split('matrix run:')[0]
    generated, _ = page_rows()
    assert printed[printed.index('- mmdet') :].strip() == generated
