"""backhug_render_device: the installed command renders a real, non-empty PNG with MuJoCo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from backhug_description.render import finger_pose

from backhug_description import DescriptionError, load_description


def _read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def _render_command() -> list[str]:
    """The installed console script (lib/<package>/, as `ros2 run` finds it), else the module."""
    try:
        from ament_index_python.packages import get_package_prefix

        script = Path(get_package_prefix('backhug_description'))
        script = script / 'lib' / 'backhug_description' / 'backhug_render_device'
        if script.is_file():
            return [str(script)]
    except (ImportError, LookupError):
        pass
    found = shutil.which('backhug_render_device')
    return [found] if found else [sys.executable, '-m', 'backhug_description.render']


def test_render_command_writes_png(tmp_path) -> None:
    output = tmp_path / 'device.png'
    argv = _render_command()
    result = subprocess.run(
        [*argv, '--output', str(output), '--width', '320', '--height', '200', '--rows', '8'],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    if result.returncode != 0 and 'failed' in result.stderr and 'MUJOCO_GL' in result.stderr:
        pytest.skip(f'no OpenGL backend for MuJoCo offscreen rendering: {result.stderr[-300:]}')
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    image = _read_png(output)
    assert image.shape[:2] == (200, 320)
    # A real picture, not a blank frame: many distinct colours, some orange finger tips.
    rgb = image[..., :3].reshape(-1, 3)
    assert len({tuple(p) for p in (rgb * 255).astype(int)[::7]}) > 50
    orange = (rgb[:, 0] > 0.8) & (rgb[:, 1] > 0.35) & (rgb[:, 1] < 0.75) & (rgb[:, 2] < 0.4)
    assert orange.sum() > 20


def test_poses_stay_inside_the_stroke() -> None:
    description = load_description('sim')
    stroke = description.config.stroke_m
    for pose in ('wave', 'retracted', 'extended'):
        positions = finger_pose(description, pose)
        assert positions.shape == (26,)
        assert (positions >= 0).all()
        assert (positions <= stroke + 1e-12).all()
    assert finger_pose(description, 'extended').min() == pytest.approx(stroke)
    with pytest.raises(DescriptionError, match='sideways'):
        finger_pose(description, 'sideways')
