from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open('mmfish/version.py') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmfish',
    version=read_version(),
    description='FishNet backbone for MMDetection 3.x',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'configs', 'tools')),
    python_requires='>=3.10',
    install_requires=[
        'torch>=2.0',
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmengine>=0.10.0,<0.11',
        'mmdet>=3.3.0,<3.4',
        'pycocotools>=2.0.7',
        'setuptools<82',
    ],
    extras_require={'tests': ['pytest>=7', 'ruff==0.8.6']},
    license='Apache-2.0',
    zip_safe=False,
)
