"""launch/backhug.launch.py: static checks that always run, and launch runs where launch exists.

Without a ROS 2 distro (the PyPI route has no launch, launch_ros or ros2cli) the file is checked
as source: its arguments, that its nodes come from config/system.yaml and nothing else, that it
hard-codes no parameter the parameter files or system.yaml already set, that every package it
starts is declared in package.xml, and that the README documents every argument. On a distro the
second half also builds the launch description for every hardware choice and launches the system
with hardware:=mock and :=sim (GUI off), waits for /joint_states and checks that no process died.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from backhug_bringup.system import HARDWARE_CHOICES, load_system

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = PACKAGE_ROOT.parents[1]
LAUNCH_FILE = PACKAGE_ROOT / 'launch' / 'backhug.launch.py'
# Parameters the launch file sets on purpose: each comes from a launch argument or the URDF.
LAUNCH_PARAMETERS = {'use_sim_time', 'serial_port', 'robot_description', 'hardware'}


def _tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(encoding='utf-8'))


def _calls(name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(_tree())
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == name
    ]


def _arguments() -> dict[str, dict[str, ast.expr]]:
    found = {}
    for call in _calls('DeclareLaunchArgument'):
        found[call.args[0].value] = {kw.arg: kw.value for kw in call.keywords}
    return found


def _string_constants() -> set[str]:
    return {
        node.value
        for node in ast.walk(_tree())
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_every_argument_has_a_description_a_default_and_choices_where_enumerated():
    arguments = _arguments()
    assert set(arguments) == {
        'hardware',
        'serial_port',
        'rviz',
        'gui',
        'program',
        'intensity',
        'use_sim_time',
        'log_level',
    }
    for name, keywords in arguments.items():
        assert 'description' in keywords, f'launch argument {name} has no description'
        description = ast.literal_eval(keywords['description'])
        assert len(description) > 20, f'launch argument {name}: say what it does'
        assert 'default_value' in keywords, f'launch argument {name} has no default'
    assert ast.unparse(arguments['hardware']['choices']) == 'list(HARDWARE_CHOICES)'
    from backhug_description import HARDWARE_CHOICES as DESCRIPTION_CHOICES

    assert tuple(HARDWARE_CHOICES) == tuple(DESCRIPTION_CHOICES)
    for flag in ('rviz', 'gui'):
        assert ast.literal_eval(arguments[flag]['choices']) == ['true', 'false']
    assert ast.literal_eval(arguments['use_sim_time']['choices']) == ['auto', 'true', 'false']
    assert ast.unparse(arguments['log_level']['choices']) == 'LOG_LEVELS'
    # Arguments that only apply to one hardware say so (as the UR driver does).
    for name in ('serial_port', 'gui'):
        assert 'only effective if hardware is' in ast.literal_eval(arguments[name]['description'])


def test_the_readme_documents_every_launch_argument():
    readme = (WORKSPACE / 'README.md').read_text(encoding='utf-8')
    section = readme.split('### Launch arguments', 1)[1].split('\n## ', 1)[0]
    documented = set(re.findall(r'^\| `(\w+)` \|', section, flags=re.MULTILINE))
    assert documented == set(_arguments()), 'README "Launch arguments" and the launch file differ'


def test_nodes_come_from_system_yaml_only():
    """The file iterates system.nodes and names none of system.yaml's nodes itself."""
    source = LAUNCH_FILE.read_text(encoding='utf-8')
    assert 'load_system(hardware)' in source
    assert any(
        isinstance(node, ast.For) and ast.unparse(node.iter) == 'system.nodes'
        for node in ast.walk(_tree())
    ), 'the launch file must start the nodes listed in system.yaml'
    strings = _string_constants()
    for hardware in HARDWARE_CHOICES:
        system = load_system(hardware, check_files=False)
        for node in system.nodes:
            for literal in (node.name, node.executable):
                if literal != 'hw_interface':  # the one node whose parameters it extends
                    assert literal not in strings, f'{literal} is hard-coded in the launch file'
            assert node.package not in strings, f'{node.package} is hard-coded'


def _keys_set() -> set[str]:
    """Constant keys of dict literals and of subscript assignments: how a launch file sets
    parameters (``{'use_sim_time': ...}``, ``extra['serial_port'] = ...``)."""
    keys = set()
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Dict):
            keys |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                    keys.add(target.slice.value)
    return keys


def test_no_parameter_is_set_twice():
    """Parameters of system.yaml and of the parameter files are not repeated in the launch file."""
    keys: set[str] = set()
    system_yaml = yaml.safe_load(
        (PACKAGE_ROOT / 'config' / 'system.yaml').read_text(encoding='utf-8')
    )
    for entry in system_yaml['hardware'].values():
        for overrides in entry.get('parameters', {}).values():
            keys |= set(overrides)
    for hardware in HARDWARE_CHOICES:
        for node in load_system(hardware, check_files=False).nodes:
            for path in node.parameter_files:
                if path.is_file():
                    data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
                    for section in data.values():
                        keys |= set((section or {}).get('ros__parameters', {}))
    assert {'backend', 'publish_clock', 'hardware'} <= keys
    assert _keys_set() >= LAUNCH_PARAMETERS  # the detection sees what the file does set
    duplicated = (keys - LAUNCH_PARAMETERS) & _keys_set()
    assert not duplicated, f'set in a config file and again in the launch file: {duplicated}'


def test_every_started_package_is_an_exec_depend_and_every_controller_is_configured():
    manifest = ET.parse(PACKAGE_ROOT / 'package.xml').getroot()
    depends = {e.text for e in manifest if e.tag in ('depend', 'exec_depend')}
    started = set()
    for call in _calls('Node') + _calls('LifecycleNode'):
        for keyword in call.keywords:
            if keyword.arg == 'package' and isinstance(keyword.value, ast.Constant):
                started.add(keyword.value.value)
    for call in _calls('FindPackageShare'):
        started.add(call.args[0].value)
    assert {'robot_state_publisher', 'ros_gz_sim', 'controller_manager', 'rviz2'} <= started
    missing = started - depends - {'backhug_bringup'}
    assert not missing, f'started by the launch file but not in package.xml: {missing}'
    for hardware in HARDWARE_CHOICES:
        for node in load_system(hardware, check_files=False).nodes:
            assert node.package in depends, node.package

    controllers = yaml.safe_load(
        (WORKSPACE / 'src/backhug_description/config/gazebo_controllers.yaml').read_text(
            encoding='utf-8'
        )
    )
    (spawned,) = [
        ast.literal_eval(node.value)
        for node in ast.walk(_tree())
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == 'CONTROLLERS'
    ]
    for controller in spawned:
        assert 'type' in controllers[controller]['ros__parameters'], controller


def test_launch_and_config_files_are_installed():
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory('backhug_bringup'))
    except (ImportError, LookupError):
        pytest.skip('backhug_bringup is not installed (run tools/setup.sh)')
    for relative in ('launch/backhug.launch.py', 'config/system.yaml'):
        assert (share / relative).is_file(), f'{relative} is not installed in {share}'
    prefix = share.parents[1]
    assert (prefix / 'lib' / 'backhug_bringup' / 'run_program').is_file()


# --- where launch exists (a ROS 2 distro) -------------------------------------------------------


def _load_launch_module():
    pytest.importorskip(
        'launch_ros', reason='ros2 launch is not installed (PyPI route); runs on a Jazzy distro'
    )
    spec = importlib.util.spec_from_file_location('backhug_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('hardware', HARDWARE_CHOICES)
def test_generate_launch_description_starts_the_system_nodes(hardware):
    module = _load_launch_module()
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.utilities import perform_substitutions
    from launch_ros.actions import LifecycleNode, Node

    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations['hardware'] = hardware
    actions = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)  # sets the default of every other argument
        elif isinstance(entity, OpaqueFunction):
            actions += entity.execute(context) or []
    nodes = [a for a in actions if isinstance(a, Node)]
    executables = {perform_substitutions(context, n.node_executable) for n in nodes}
    system = load_system(hardware)
    assert {n.executable for n in system.nodes} <= executables
    lifecycle = [a for a in nodes if isinstance(a, LifecycleNode)]
    assert [perform_substitutions(context, n.node_executable) for n in lifecycle] == [
        n.executable for n in system.nodes if n.lifecycle
    ]
    assert ('spawner' in executables) is ('controller_spawners' in system.infrastructure)
    assert 'robot_state_publisher' in executables


@pytest.mark.parametrize('hardware', ['mock', 'sim'])
def test_the_system_comes_up_and_shuts_down_cleanly(hardware, ros_context, wait):
    _load_launch_module()
    ros2 = shutil.which('ros2')
    if ros2 is None:
        pytest.skip('ros2 CLI not found (source a ROS 2 distro)')
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    process = subprocess.Popen(
        [ros2, 'launch', 'backhug_bringup', 'backhug.launch.py', f'hardware:={hardware}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
        start_new_session=True,
    )
    node = Node('launch_test_listener', context=ros_context)
    received = []
    node.create_subscription(JointState, '/joint_states', received.append, 10)
    try:
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline and process.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert received, f'no /joint_states within 60 s with hardware:={hardware}'
        assert len(received[-1].name) == len(received[-1].effort) > 0
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        node.destroy_node()
    assert process.returncode == 0, output
    assert 'process has died' not in output, output
