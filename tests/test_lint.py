"""One lint configuration for the whole workspace (pyproject.toml), run as a test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('args', [['check'], ['format', '--check']], ids=['check', 'format'])
def test_ruff(args):
    ruff = shutil.which('ruff')
    assert ruff, 'ruff is installed by tools/setup.sh (requirements.txt)'
    result = subprocess.run([ruff, *args, '.'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_manifests_are_format_3_with_spdx_license():
    import xml.etree.ElementTree as ET

    manifests = sorted(ROOT.glob('src/*/package.xml'))
    assert len(manifests) == 6
    for manifest in manifests:
        root = ET.parse(manifest).getroot()
        assert root.get('format') == '3', manifest
        assert root.findtext('license') == 'Apache-2.0', manifest
        assert root.findtext('name') == manifest.parent.name, manifest
