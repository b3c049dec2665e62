"""The RViz config, the view launch file and the installed data files (static checks here;
the launch file itself needs a ROS 2 distro and is exercised there)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml
from backhug_description.paths import PACKAGE, share_directory

from backhug_description import HARDWARE_CHOICES, load_description

SOURCE = Path(__file__).resolve().parent.parent
LAUNCH_FILE = SOURCE / 'launch' / 'view_robot.launch.py'


def _displays() -> tuple[dict[str, dict], dict]:
    config = yaml.safe_load((SOURCE / 'rviz' / 'backhug.rviz').read_text(encoding='utf-8'))
    manager = config['Visualization Manager']
    return {d['Class']: d for d in manager['Displays']}, manager


def test_rviz_shows_robot_model_and_finger_force_markers() -> None:
    displays, manager = _displays()
    robot = displays['rviz_default_plugins/RobotModel']
    assert robot['Description Source'] == 'Topic'
    assert robot['Description Topic']['Value'] == '/robot_description'
    # robot_state_publisher latches the description: a volatile subscriber started late misses it.
    assert robot['Description Topic']['Durability Policy'] == 'Transient Local'
    markers = displays['rviz_default_plugins/MarkerArray']
    assert markers['Topic']['Value'] == '/finger_forces/markers'
    assert markers['Enabled'] is True
    fixed = manager['Global Options']['Fixed Frame']
    assert f'<link name="{fixed}">' in load_description('sim').urdf


def _launch_arguments() -> dict[str, dict[str, ast.expr]]:
    tree = ast.parse(LAUNCH_FILE.read_text(encoding='utf-8'))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'DeclareLaunchArgument':
            name = node.args[0].value
            found[name] = {kw.arg: kw.value for kw in node.keywords}
    return found


def test_launch_arguments_have_descriptions_and_choices() -> None:
    arguments = _launch_arguments()
    assert {'hardware', 'gui'} <= set(arguments)
    for name, keywords in arguments.items():
        assert 'description' in keywords, f'launch argument {name} has no description'
        assert 'default_value' in keywords, f'launch argument {name} has no default'
    assert ast.unparse(arguments['hardware']['choices']) == 'list(HARDWARE_CHOICES)'
    assert ast.literal_eval(arguments['gui']['choices']) == ['true', 'false']
    assert 'sim' in HARDWARE_CHOICES


def test_launch_file_builds_where_launch_exists() -> None:
    if importlib.util.find_spec('launch_ros') is None:
        pytest.skip('launch/launch_ros are not on PyPI; this runs on a ROS 2 distro only')
    spec = importlib.util.spec_from_file_location('view_robot_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = [getattr(e, 'name', None) for e in description.entities]
    assert 'hardware' in names and 'gui' in names


def test_data_files_are_installed() -> None:
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError):
        pytest.skip('backhug_description is not installed (run tools/setup.sh)')
    for relative in (
        'config/device.yaml',
        'config/gazebo_controllers.yaml',
        'urdf/backhug.urdf.xacro',
        'urdf/inc/finger.xacro',
        'urdf/inc/backhug.ros2_control.xacro',
        'launch/view_robot.launch.py',
        'worlds/backhug.sdf',
        'rviz/backhug.rviz',
    ):
        assert (share / relative).is_file(), f'{relative} is not installed in {share}'
    assert (share_directory() / 'urdf' / 'backhug.urdf.xacro').is_file()
