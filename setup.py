"""mmprune: in-train channel pruning for MMDetection 3.x detectors."""
from setuptools import find_packages, setup


def _requirements(path):
    with open(path, encoding='utf-8') as f:
        return [ln.split('#')[0].strip() for ln in f
                if ln.split('#')[0].strip()]


setup(
    name='mmprune',
    version='0.1.0',
    description='In-train, hardware-aware channel pruning and adversarial '
    'training for MMDetection 3.x detectors',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmprune', 'mmprune.*']),
    python_requires='>=3.8',
    install_requires=['torch>=1.13,<2.14'] +
    _requirements('requirements/mmcv.txt') +
    _requirements('requirements/runtime.txt'),
    extras_require={'tests': _requirements('requirements/tests.txt'),
                    'deploy': _requirements('requirements/deploy.txt'),
                    'cls': _requirements('requirements/cls.txt')},
    license='Apache-2.0',
    zip_safe=False,
)
