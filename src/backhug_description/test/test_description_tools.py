"""The expanded URDF against the real parsers: check_urdf, MuJoCo, and Gazebo's SDFormat (ign sdf).

Every hardware choice and two more layouts (2 x 8, 2 x 16) are expanded; each must parse, have
mass on every link, a complete <ros2_control> block, and tip positions that match the config.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from backhug_description.controllers import gazebo_controllers_yaml
from backhug_description.description import controllers_path
from backhug_description.paths import share_directory

from backhug_description import HARDWARE_CHOICES, load_config, load_description

TOLERANCE_M = 1e-4  # 0.1 mm
CASES = [(hw, 13) for hw in HARDWARE_CHOICES] + [
    ('sim', 8),
    ('mock', 16),
    ('gazebo', 8),
    ('gazebo', 16),
]
IDS = [f'{hw}-2x{rows}' for hw, rows in CASES]


@functools.cache
def described(hardware: str, rows: int):
    """One expansion per case, shared by the tests of this module."""
    return load_description(hardware, rows=None if rows == 13 else rows)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f'{name} is not installed (tools/apt-packages.txt lists its package)')
    return path


def _write(tmp_path: Path, description, suffix: str = '.urdf') -> Path:
    path = tmp_path / f'backhug_{description.hardware}_{description.config.rows}{suffix}'
    path.write_text(description.urdf, encoding='utf-8')
    return path


@pytest.mark.parametrize(('hardware', 'rows'), CASES, ids=IDS)
def test_check_urdf_accepts(tmp_path, hardware: str, rows: int) -> None:
    description = described(hardware, rows)
    result = subprocess.run(
        [_tool('check_urdf'), str(_write(tmp_path, description))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Successfully Parsed XML' in result.stdout
    root = 'world' if hardware == 'gazebo' else 'base_link'
    assert f'root Link: {root}' in result.stdout


@pytest.mark.parametrize(('hardware', 'rows'), CASES, ids=IDS)
def test_mujoco_loads_with_same_kinematics(hardware: str, rows: int) -> None:
    import mujoco

    description = described(hardware, rows)
    model = mujoco.MjSpec.from_string(description.urdf).compile()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    assert model.njnt == 2 * rows
    for joint in description.joints:
        mj_joint = model.joint(joint.name)
        assert mj_joint.type[0] == mujoco.mjtJoint.mjJNT_SLIDE
        assert tuple(mj_joint.range) == pytest.approx((joint.lower_m, joint.upper_m))
        tip = data.xpos[model.body(joint.name.replace('_joint', '_tip')).id]
        assert tuple(tip) == pytest.approx(joint.tip_xyz_m, abs=TOLERANCE_M)


@pytest.mark.parametrize(('hardware', 'rows'), CASES, ids=IDS)
def test_every_link_has_mass_and_geometry(hardware: str, rows: int) -> None:
    root = ET.fromstring(described(hardware, rows).urdf)
    links = root.findall('link')
    assert len(links) == 3 + 2 * 2 * rows + (hardware == 'gazebo')
    for link in links:
        if link.get('name') == 'world':
            continue
        mass = link.find('inertial/mass')
        assert mass is not None and float(mass.get('value')) > 0, link.get('name')
        inertia = link.find('inertial/inertia')
        assert all(float(inertia.get(k)) > 0 for k in ('ixx', 'iyy', 'izz')), link.get('name')
        name = link.get('name')
        if name.startswith('finger_') or name in ('base_link', 'pad_link'):
            assert link.find('visual/geometry') is not None, name
            assert link.find('collision/geometry') is not None, name
    tips = [link for link in links if link.get('name').endswith('_tip')]
    assert len(tips) == 2 * rows
    assert all(tip.find('collision/geometry/sphere') is not None for tip in tips)


def test_spine_line_frame_at_row_one_on_midline() -> None:
    description = described('sim', 13)
    config = description.config
    joint = ET.fromstring(description.urdf).find("joint[@name='spine_line_joint']")
    xyz = [float(v) for v in joint.find('origin').get('xyz').split()]
    assert xyz == pytest.approx([config.first_row_x_m, 0.0, config.pad_top_z_m])
    first = description.joints[0]
    assert first.tip_xyz_m[0] == pytest.approx(xyz[0], abs=TOLERANCE_M)


@pytest.mark.parametrize(('hardware', 'rows'), CASES, ids=IDS)
def test_ros2_control_block(hardware: str, rows: int) -> None:
    description = described(hardware, rows)
    root = ET.fromstring(description.urdf)
    blocks = root.findall('ros2_control')
    assert len(blocks) == 1
    plugin = blocks[0].find('hardware/plugin').text.strip()
    expected_plugin = {
        'gazebo': 'gz_ros2_control/GazeboSimSystem',
        'mock': 'mock_components/GenericSystem',
        'sim': 'mock_components/GenericSystem',
        'real': 'mock_components/GenericSystem',
    }[hardware]
    assert plugin == expected_plugin
    joints = blocks[0].findall('joint')
    assert [j.get('name') for j in joints] == description.joint_names
    for joint in joints:
        commands = joint.findall('command_interface')
        assert [c.get('name') for c in commands] == ['position']
        params = {p.get('name'): float(p.text) for p in commands[0].findall('param')}
        assert params == pytest.approx({'min': 0.0, 'max': description.config.stroke_m})
        states = [s.get('name') for s in joint.findall('state_interface')]
        assert states == ['position', 'velocity', 'effort']


@pytest.mark.parametrize(('hardware', 'rows'), CASES, ids=IDS)
def test_gazebo_plugin_only_for_gazebo(hardware: str, rows: int) -> None:
    root = ET.fromstring(described(hardware, rows).urdf)
    plugins = root.findall('gazebo/plugin')
    sensors = root.findall('gazebo/sensor')
    if hardware != 'gazebo':
        assert plugins == [] and sensors == []
        assert root.find("link[@name='world']") is None
        return
    assert len(plugins) == 1
    assert plugins[0].get('filename') == 'gz_ros2_control-system'
    assert plugins[0].get('name') == 'gz_ros2_control::GazeboSimROS2ControlPlugin'
    parameters = Path(plugins[0].find('parameters').text.strip())
    assert parameters.is_absolute() and parameters.is_file()
    assert parameters.resolve() == controllers_path().resolve()
    assert len(sensors) == 2 * rows
    assert all(s.get('type') == 'force_torque' for s in sensors)


def test_controllers_yaml_is_generated_from_the_default_config() -> None:
    committed = controllers_path().read_text(encoding='utf-8')
    assert committed == gazebo_controllers_yaml(load_config()), (
        'config/gazebo_controllers.yaml drifted from config/device.yaml; regenerate it with '
        'python -m backhug_description.controllers -o config/gazebo_controllers.yaml'
    )


def test_controllers_yaml_joints_exist_in_the_gazebo_urdf() -> None:
    controllers = yaml.safe_load(controllers_path().read_text(encoding='utf-8'))
    description = described('gazebo', 13)
    urdf_joints = {j.get('name') for j in ET.fromstring(description.urdf).findall('joint')}
    forward = controllers['finger_position_controller']['ros__parameters']
    assert forward['type'] == 'forward_command_controller/ForwardCommandController'
    assert forward['interface_name'] == 'position'
    assert forward['joints'] == description.joint_names
    assert set(forward['joints']) <= urdf_joints
    broadcaster = controllers['joint_state_broadcaster']['ros__parameters']
    assert broadcaster['type'] == 'joint_state_broadcaster/JointStateBroadcaster'
    assert controllers['controller_manager']['ros__parameters']['update_rate'] > 0


@pytest.mark.parametrize('rows', [13, 8, 16])
def test_gazebo_sdformat_converts_every_finger(tmp_path, rows: int) -> None:
    description = described('gazebo', rows)
    result = subprocess.run(
        [_tool('ign'), 'sdf', '-p', str(_write(tmp_path, description))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    sdf = ET.fromstring(result.stdout)
    model = sdf.find('model')
    links = {link.get('name') for link in model.findall('link')}
    joints = {joint.get('name'): joint for joint in model.findall('joint')}
    finger_links = {f'finger_{s}_{r:02d}_link' for s in 'lr' for r in range(1, rows + 1)}
    assert finger_links <= links
    assert len([name for name in links if name.startswith('finger_')]) == 2 * rows
    prismatic = [j for j in joints.values() if j.get('type') == 'prismatic']
    assert sorted(j.get('name') for j in prismatic) == sorted(description.joint_names)
    for joint in prismatic:
        assert float(joint.find('axis/limit/upper').text) == pytest.approx(0.040)
        assert joint.find("sensor[@type='force_torque']") is not None
    # The tip is lumped into its finger (fixed joint): its mass must have come along.
    finger_mass = float(model.find("link[@name='finger_l_01_link']/inertial/mass").text)
    config = description.config
    assert finger_mass == pytest.approx(config.shaft_mass_kg + config.tip_mass_kg)
    plugin = model.find('plugin')
    assert plugin is not None and plugin.get('filename') == 'gz_ros2_control-system'


def test_gazebo_world_is_valid_sdformat() -> None:
    world = share_directory() / 'worlds' / 'backhug.sdf'
    result = subprocess.run([_tool('ign'), 'sdf', '-k', str(world)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Valid' in result.stdout
    root = ET.parse(world).getroot()
    assert root.get('version') == '1.9'
    plugins = {p.get('name') for p in root.iter('plugin')}
    assert 'gz::sim::systems::ForceTorque' in plugins
    assert 'gz::sim::systems::Physics' in plugins
    user = root.find("world/model[@name='user']")
    mass = sum(float(m.text) for m in user.iter('mass'))
    assert 30.0 < mass < 60.0  # an adult trunk and head, kg


def test_sdformat_check_rejects_a_broken_world(tmp_path) -> None:
    broken = tmp_path / 'broken.sdf'
    broken.write_text(
        '<sdf version="1.9"><world name="w"><model name="m"><link name="a"/><link name="a"/>'
        '</model></world></sdf>'
    )
    result = subprocess.run([_tool('ign'), 'sdf', '-k', str(broken)], capture_output=True)
    assert result.returncode != 0
