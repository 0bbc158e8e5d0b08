"""model-index.yml and its metafiles list every config under configs/, in MMDetection's format.

The metafiles are written by ``python tools/dev/model_index.py``; the slow test checks what it
reads from the configs (not its measured Parameters and FLOPs) against the configs as they are.
"""

import glob
import importlib.util
import os.path as osp
import re
from typing import Dict, List, Tuple

import pytest
import yaml
from mmengine.config import Config

from mmfish.testing import ROOT
from mmfish.utils import mim

METAFILES = [
    'configs/metafile.yml',
    'configs/segmentation/metafile.yml',
    'configs/classification/metafile.yml',
]
FIGURES = ('Parameters', 'FLOPs')


def read(path: str) -> dict:
    with open(osp.join(ROOT, path), encoding='utf-8') as f:
        return yaml.safe_load(f)


def config_files() -> List[str]:
    paths = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    relative = (osp.relpath(p, ROOT).replace(osp.sep, '/') for p in paths)
    return sorted(p for p in relative if '/_base_/' not in p)


def indexed_models() -> List[Tuple[str, dict]]:
    """(metafile, model entry) of every model the index imports."""
    return [(m, model) for m in read('model-index.yml')['Import'] for model in read(m)['Models']]


def test_the_index_imports_one_metafile_per_family():
    assert read('model-index.yml')['Import'] == METAFILES


def test_every_config_is_indexed_once_and_every_entry_names_a_config():
    listed = [model['Config'] for _, model in indexed_models()]
    assert sorted(listed) == config_files()


def test_each_family_lists_its_own_folder():
    for metafile, model in indexed_models():
        folder = model['Config'].split('/')[1]
        family = folder if folder in ('segmentation', 'classification') else None
        expected = f'configs/{family}/metafile.yml' if family else 'configs/metafile.yml'
        assert metafile == expected, model['Name']


def test_entries_are_in_mmdets_format():
    names: Dict[str, str] = {}
    for metafile, model in indexed_models():
        name = model['Name']
        assert name not in names, f'{name} in {names.get(name)} and {metafile}'
        names[name] = metafile
        assert name == osp.splitext(osp.basename(model['Config']))[0]
        collections = [c['Name'] for c in read(metafile)['Collections']]
        assert model['In Collection'] in collections
        meta = model['Metadata']
        assert all(isinstance(meta[k], int) and meta[k] > 0 for k in FIGURES), name
        assert re.fullmatch(r'\d+x\d+', meta['FLOPs Input']), name
        assert isinstance(meta['ImageNet Weights'], str) and meta['ImageNet Weights'], name


def test_every_model_name_resolves_to_its_config():
    for _, model in indexed_models():
        assert mim.config_path(f'mmfish::{model["Name"]}') == osp.join(ROOT, model['Config'])


@pytest.mark.slow
def test_entries_describe_their_configs():
    """Name, collection, backbone, data, schedule and ImageNet file as the generator reads them."""
    spec = importlib.util.spec_from_file_location(
        '_model_index', osp.join(ROOT, 'tools', 'dev', 'model_index.py')
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for _, model in indexed_models():
        config = model['Config']
        expected = generator.describe(config, Config.fromfile(osp.join(ROOT, config)))
        for entry in (expected, model):
            entry['Metadata'] = {k: v for k, v in entry['Metadata'].items() if k not in FIGURES}
        assert model == expected, f'{config}: rerun python tools/dev/model_index.py'
