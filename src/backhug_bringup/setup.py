"""Build script of backhug_bringup (ament_python)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'backhug_bringup'


def data_folder(folder: str, pattern: str = '*') -> tuple[str, list[str]]:
    """Install every file of one data folder to share/<package>/<folder>."""
    return (f'share/{PACKAGE}/{folder}', sorted(glob(f'{folder}/{pattern}')))


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        data_folder('config', '*.yaml'),
        data_folder('launch', '*.launch.py'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='BackHug software team',
    maintainer_email='software@backhug.example',
    description='See package.xml.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'backhug = backhug_bringup.cli:main',
            'run_program = backhug_bringup.program_client:main',
            'force_markers = backhug_bringup.force_markers:main',
        ],
    },
)
