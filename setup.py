"""mmfish's package build.

A wheel (``pip install .``, ``pip wheel .``) ships the configs, the tools a user runs and the
model index in ``mmfish/.mim/``, as MMDetection ships ``mmdet/.mim/``, so that an installed
mmfish resolves ``mmfish::`` config names and runs ``mmfish-train`` / ``mmfish-test`` /
``mmfish-convert`` (see ``mmfish/utils/mim.py``). They are copied into the build folder by
``build_py``, never into the source tree; an editable install (``pip install -e .``) copies
nothing, as mmfish then reads them from the checkout itself.
"""

import os
import os.path as osp

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
# Shipped in mmfish/.mim/ (paths relative to the repository).
MIM_FILES = ('configs', 'tools', 'model-index.yml')
# Not shipped: the checkout's environment set-up, developer scripts, and the demos and the
# feature-choice study, which write their data and work dirs into the checkout.
MIM_EXCLUDE = (
    'tools/dev',
    'tools/patches',
    'tools/setup_env.sh',
    'tools/demo.py',
    'tools/demo_seg.py',
    'tools/analysis_tools/seg_feature_choice.py',
)
# The console commands; mmfish/utils/mim.py's COMMANDS names the tool each one runs.
CONSOLE_SCRIPTS = [
    'mmfish-train=mmfish.tools_entry:train',
    'mmfish-test=mmfish.tools_entry:test',
    'mmfish-convert=mmfish.tools_entry:convert',
    'mmfish-swap=mmfish.tools_entry:swap',
]


def read_version():
    namespace = {}
    with open(osp.join(ROOT, 'mmfish', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def mim_files():
    """(source, path inside mmfish/.mim) of every shipped file."""
    for entry in MIM_FILES:
        source = osp.join(ROOT, entry)
        if osp.isfile(source):
            yield source, entry
            continue
        for folder, dirs, files in os.walk(source):
            relative_folder = osp.relpath(folder, ROOT).replace(os.sep, '/')
            dirs[:] = sorted(
                d
                for d in dirs
                if d != '__pycache__' and f'{relative_folder}/{d}' not in MIM_EXCLUDE
            )
            for name in sorted(files):
                relative = f'{relative_folder}/{name}'
                if relative not in MIM_EXCLUDE and not name.endswith(('.pyc', '.pyo')):
                    yield osp.join(folder, name), relative


class BuildPyWithMim(build_py):
    """``build_py`` that also copies :data:`MIM_FILES` into ``<build>/mmfish/.mim/``."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return  # an editable install reads configs and tools from the checkout
        for source, relative in mim_files():
            target = osp.join(self.build_lib, 'mmfish', '.mim', *relative.split('/'))
            self.mkpath(osp.dirname(target))
            self.copy_file(source, target, preserve_mode=True)


setup(
    name='mmfish',
    version=read_version(),
    description='FishNet backbone for MMDetection 3.x',
    long_description=open(osp.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.10',
    install_requires=[
        'torch>=2.0',
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmengine>=0.10.0,<0.11',
        'mmdet>=3.3.0,<3.4',
        'pycocotools>=2.0.7',
        'pyyaml',  # mmfish.utils.mim reads the model index (mmengine requires it too)
        'setuptools<82',
    ],
    extras_require={
        'tests': ['pytest>=7', 'ruff==0.8.6'],
        # tools/deployment (ONNX export): the pins of requirements/runtime.txt
        'onnx': ['onnx==1.23.2', 'onnxruntime==1.32.0', 'onnxscript==0.7.2'],
    },
    entry_points={'console_scripts': CONSOLE_SCRIPTS},
    cmdclass={'build_py': BuildPyWithMim},
    license='Apache-2.0',
    zip_safe=False,
)
