"""config/system.yaml and backhug_bringup.system: validation, resolution, command lines.

The command-line test hands the generated ``--ros-args`` to rcl itself (a real rclpy context),
so a value formatted wrongly for ``-p`` fails here, not on the device.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from backhug_bringup.system import (
    HARDWARE_CHOICES,
    SystemConfigError,
    default_system_path,
    format_parameter_value,
    load_system,
)

ROOT = Path(__file__).resolve().parents[3]
EXPECTED_NODES = ['hw_interface', 'safety_monitor', 'finger_controllers', 'program_sequencer']


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / 'system.yaml'
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding='utf-8')
    return path


def _minimal(**node_fields) -> dict:
    """A system whose one node lives in an installed package (backhug_description)."""
    node = {
        'name': 'render',
        'package': 'backhug_description',
        'executable': 'backhug_render_device',
        'parameter_file': 'config/device.yaml',
        'lifecycle': False,
        'required': True,
        **node_fields,
    }
    return {
        'nodes': [node],
        'hardware': {
            'sim': {'use_sim_time': True, 'parameters': {'render': {'backend': 'mujoco'}}},
            'real': {'use_sim_time': False},
        },
    }


@pytest.mark.parametrize('hardware', HARDWARE_CHOICES)
def test_the_system_file_validates_for_every_hardware(hardware):
    system = load_system(hardware, check_files=False)
    assert system.path == default_system_path()
    assert system.node_names == EXPECTED_NODES
    assert [n.name for n in system.nodes if n.lifecycle] == ['hw_interface']
    hw = system.node('hw_interface')
    assert hw.package == 'backhug_hw_interface'
    for name in ('hw_interface', 'finger_controllers', 'safety_monitor'):
        assert system.node(name).parameters['hardware'] == hardware, name
    expected_backend = {'sim': 'mujoco', 'real': 'serial'}.get(hardware, 'ros2_control')
    assert hw.parameters['backend'] == expected_backend
    assert hw.parameters['publish_clock'] is (hardware == 'sim')
    # With sim, hw_interface owns /clock and must not follow it (it would wait for itself);
    # the nodes that act on program time follow the system's clock everywhere.
    if hardware == 'sim':
        assert system.node('hw_interface').parameters['use_sim_time'] is False
    for name in ('finger_controllers', 'program_sequencer'):
        assert system.node(name).parameters['use_sim_time'] is system.use_sim_time, name
    for node in system.nodes:
        assert isinstance(node.parameters['use_sim_time'], bool)
    assert system.use_sim_time is (hardware in ('sim', 'gazebo'))
    assert 'robot_state_publisher' in system.infrastructure
    assert ('gz_sim' in system.infrastructure) is (hardware == 'gazebo')


def test_the_system_resolves_every_installed_parameter_file():
    """Every node's package is built and its parameter file installed (needs tools/setup.sh)."""
    system = load_system('sim')
    for node in system.nodes:
        assert len(node.parameter_files) == 1, node.name
        assert node.parameter_files[0].is_file()
        assert f'share/{node.package}/config/' in node.parameter_files[0].as_posix()


def test_resolution_and_command_of_an_installed_node(tmp_path):
    system = load_system('sim', _write(tmp_path, _minimal()))
    (node,) = system.nodes
    assert node.parameter_files[0].name == 'device.yaml'
    assert node.parameter_files[0].is_file()
    assert node.executable_path().name == 'backhug_render_device'
    command = node.command({'serial_port': '/dev/ttyACM0', 'rows': 8}, log_level='debug')
    assert command[0] == str(node.executable_path())
    assert command[1:4] == ['--ros-args', '-r', '__node:=render']
    assert command[4:6] == ['--params-file', str(node.parameter_files[0])]
    assert command[6:] == [
        '-p',
        'use_sim_time:=true',
        '-p',
        'backend:="mujoco"',
        '-p',
        'serial_port:="/dev/ttyACM0"',
        '-p',
        'rows:=8',
        '--log-level',
        'debug',
    ]
    # Extra parameters override the system's.
    assert '-p' in node.command({'backend': 'serial'})
    assert 'backend:="serial"' in node.command({'backend': 'serial'})
    assert 'backend:="mujoco"' not in node.command({'backend': 'serial'})


def test_command_line_values_parse_back_through_rcl_with_their_types():
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    values = {
        'flag': True,
        'count': 3,
        'rate_hz': 100.0,
        'name': 'true',  # a string that YAML would otherwise read as a bool
        'number_text': '1.5',
        'urdf': '<robot name="x">\n  <link name="a"/>\n</robot>',
        'empty': '',
        'gains': [1.0, 2.5],
        'names': ['finger_l_01_joint', 'finger_r_01_joint'],
        'quote': 'say "hi": ok',
    }
    args = ['--ros-args']
    for key, value in values.items():
        args += ['-p', f'{key}:={format_parameter_value(value)}']
    context = Context()
    rclpy.init(args=args, context=context)
    try:
        node = Node(
            'format_check', context=context, automatically_declare_parameters_from_overrides=True
        )
        for key, value in values.items():
            got = node.get_parameter(key).value
            assert got == value and type(got) is type(value), (key, got, value)
        node.destroy_node()
    finally:
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=context)


def test_unsupported_parameter_values_are_named():
    with pytest.raises(TypeError, match='one scalar type'):
        format_parameter_value([1, 'a'])
    with pytest.raises(TypeError, match='unsupported parameter type dict'):
        format_parameter_value({'a': 1})


@pytest.mark.parametrize(
    ('mutate', 'message'),
    [
        (lambda d: d.pop('hardware'), "missing key 'hardware'"),
        (lambda d: d.update(extra=1), r"unknown top-level key\(s\) \['extra'\]"),
        (
            lambda d: d['nodes'][0].update(respawn=True),
            r"nodes\[0\]: unknown field\(s\) \['respawn'\]",
        ),
        (lambda d: d['nodes'][0].pop('executable'), r"nodes\[0\]: missing field 'executable'"),
        (
            lambda d: d['nodes'][0].update(lifecycle='yes'),
            r'nodes\[0\]\.lifecycle: expected true or false',
        ),
        (
            lambda d: d['nodes'].append(dict(d['nodes'][0])),
            r"nodes\[1\]\.name: duplicate node name 'render'",
        ),
        (
            lambda d: d['hardware'].update(simulator={}),
            r"hardware: unknown choice\(s\) \['simulator'\]",
        ),
        (
            lambda d: d['hardware']['real'].pop('use_sim_time'),
            'hardware.real: missing field use_sim_time',
        ),
        (
            lambda d: d['hardware']['real'].update(parameters={'nobody': {}}),
            'hardware.real.parameters.nobody: no such node',
        ),
        (
            lambda d: d['hardware']['sim']['parameters']['render'].update(use_sim_time='yes'),
            'hardware.sim.parameters.render.use_sim_time: expected true or false',
        ),
        (
            lambda d: d['hardware']['sim']['parameters']['render'].update(limits={'a': 1}),
            'hardware.sim.parameters.render.limits: unsupported parameter type dict',
        ),
        (
            lambda d: d['hardware']['sim'].update(infrastructure=['gazebo']),
            "hardware.sim.infrastructure: unknown item 'gazebo'",
        ),
        (
            lambda d: d['nodes'][0].update(parameter_file='config/nope.yaml'),
            r'nodes\[0\]\.parameter_file: .*config/nope\.yaml does not exist',
        ),
        (
            lambda d: d['nodes'][0].update(package='backhug_not_a_package'),
            r"nodes\[0\]\.package: package 'backhug_not_a_package' is not installed",
        ),
    ],
)
def test_invalid_system_files_name_the_file_and_key(tmp_path, mutate, message):
    data = _minimal()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(SystemConfigError, match=message) as error:
        load_system('sim', path)
    assert str(path) in str(error.value)


def test_unknown_or_unconfigured_hardware_is_named(tmp_path):
    path = _write(tmp_path, _minimal())
    with pytest.raises(SystemConfigError, match="unknown hardware 'simulator'; choose one of sim"):
        load_system('simulator', path)
    with pytest.raises(SystemConfigError, match=r'hardware\.gazebo: missing'):
        load_system('gazebo', path)


def test_missing_or_broken_files_are_named(tmp_path):
    with pytest.raises(SystemConfigError, match='cannot read the system config'):
        load_system('sim', tmp_path / 'absent.yaml')
    broken = tmp_path / 'broken.yaml'
    broken.write_text('nodes: [\n', encoding='utf-8')
    with pytest.raises(SystemConfigError, match='not valid YAML'):
        load_system('sim', broken)


def test_a_missing_executable_is_named(tmp_path):
    system = load_system('sim', _write(tmp_path, _minimal(executable='no_such_exe')))
    with pytest.raises(SystemConfigError, match=r'node render: executable .*no_such_exe does not'):
        system.nodes[0].command()


def test_unchecked_loading_still_validates_structure(tmp_path):
    data = _minimal(package='backhug_not_a_package')
    system = load_system('sim', _write(tmp_path, data), check_files=False)
    assert system.nodes[0].parameter_files == []
    data['nodes'][0]['colour'] = 'red'
    with pytest.raises(SystemConfigError, match='colour'):
        load_system('sim', _write(tmp_path, data), check_files=False)
