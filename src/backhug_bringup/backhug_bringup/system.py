"""The BackHug system description (config/system.yaml): nodes, parameter files, hardware choices.

Both bringup paths read it through :func:`load_system`: the launch file
(``launch/backhug.launch.py``, on a ROS 2 distro) and the ``backhug run`` supervisor (anywhere).
No rclpy import here, so it loads in a launch file, a CLI and a unit test alike::

    system = load_system('sim')
    system.use_sim_time            # True
    for node in system.nodes:      # in start order
        node.command({'serial_port': '/dev/ttyACM0'})
        # ['/.../lib/backhug_hw_interface/hw_interface', '--ros-args', '-r',
        #  '__node:=hw_interface', '--params-file', '/.../hw_interface.yaml',
        #  '-p', 'use_sim_time:=true', '-p', 'backend:="mujoco"', ...]

Errors (unknown hardware, a missing or unknown key, a package or file that is not installed) raise
:class:`SystemConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

PACKAGE = 'backhug_bringup'
HARDWARE_CHOICES = ('sim', 'real', 'gazebo', 'mock')
# What the launch file knows how to start (see the comment at the top of config/system.yaml).
INFRASTRUCTURE_CHOICES = (
    'robot_state_publisher',
    'gz_sim',
    'clock_bridge',
    'controller_manager',
    'controller_spawners',
)
_NODE_FIELDS = {
    'name': str,
    'package': str,
    'executable': str,
    'parameter_file': str,
    'lifecycle': bool,
    'required': bool,
}
_NODE_REQUIRED = ('name', 'package', 'executable', 'lifecycle', 'required')
_HARDWARE_FIELDS = {'use_sim_time': bool, 'parameters': dict, 'infrastructure': list}
_SOURCE_ROOT = Path(__file__).resolve().parent.parent

ParameterValue = bool | int | float | str | list


class SystemConfigError(ValueError):
    """config/system.yaml (or a file it names) is invalid; the message names the file and key."""


def default_system_path() -> Path:
    """config/system.yaml of the source tree when running from it, else the installed one."""
    source = _SOURCE_ROOT / 'config' / 'system.yaml'
    if source.is_file():
        return source
    return _share_directory(PACKAGE, source) / 'config' / 'system.yaml'


def _share_directory(package: str, where: Path | str, key: str = '') -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except ImportError as exc:
        raise SystemConfigError(
            f'{where}: {key or package}: ament_index_python is not importable '
            '(source env.sh or a ROS 2 distro)'
        ) from exc
    except (LookupError, ValueError) as exc:
        raise SystemConfigError(
            f'{where}: {key or package}: package {package!r} is not installed (no share '
            'directory on AMENT_PREFIX_PATH; build the workspace with tools/setup.sh and source '
            'env.sh)'
        ) from exc


def format_parameter_value(value: ParameterValue) -> str:
    """A parameter value as YAML text for ``--ros-args -p name:=<text>`` (rcl parses it as YAML).

    Strings are double-quoted (JSON is YAML) so that 'true', '1.0' or a multi-line URDF stay
    strings; lists must be homogeneous, as ROS parameter arrays are.
    """
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return '.nan'
        if math.isinf(value):
            return '.inf' if value > 0 else '-.inf'
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        kinds = {bool if isinstance(v, bool) else type(v) for v in value}
        if len(kinds) > 1 or kinds - {bool, int, float, str}:
            raise TypeError(f'a parameter array must be of one scalar type, got {value!r}')
        return '[' + ', '.join(format_parameter_value(v) for v in value) + ']'
    raise TypeError(
        f'unsupported parameter type {type(value).__name__} ({value!r}); '
        'use bool, int, float, str or a list of one of them'
    )


@dataclasses.dataclass
class NodeSpec:
    """One node of the system: what to start and with which parameters."""

    name: str
    package: str
    executable: str
    parameter_files: list[Path]
    parameters: dict[str, ParameterValue]
    lifecycle: bool
    required: bool

    def executable_path(self) -> Path:
        """``<prefix>/lib/<package>/<executable>`` from the ament index; error if not installed."""
        try:
            from ament_index_python.packages import get_package_prefix

            prefix = Path(get_package_prefix(self.package))
        except (ImportError, LookupError, ValueError) as exc:
            raise SystemConfigError(
                f'node {self.name}: package {self.package!r} is not installed (not on '
                'AMENT_PREFIX_PATH; run tools/setup.sh and source env.sh)'
            ) from exc
        path = prefix / 'lib' / self.package / self.executable
        if not path.is_file() or not os.access(path, os.X_OK):
            raise SystemConfigError(
                f'node {self.name}: executable {path} does not exist or is not executable '
                f'(is {self.executable!r} a console_script of {self.package}? rebuild with '
                'tools/setup.sh)'
            )
        return path

    def command(
        self,
        extra_parameters: dict[str, ParameterValue] | None = None,
        log_level: str | None = None,
    ) -> list[str]:
        """The command line that starts this node with its parameter files and overrides.

        ``extra_parameters`` win over the system's overrides (and those over the files).
        """
        parameters = {**self.parameters, **(extra_parameters or {})}
        command = [str(self.executable_path()), '--ros-args', '-r', f'__node:={self.name}']
        for path in self.parameter_files:
            command += ['--params-file', str(path)]
        for key, value in parameters.items():
            try:
                text = format_parameter_value(value)
            except TypeError as exc:
                raise SystemConfigError(f'node {self.name}: parameter {key}: {exc}') from exc
            command += ['-p', f'{key}:={text}']
        if log_level:
            command += ['--log-level', log_level]
        return command


@dataclasses.dataclass
class SystemConfig:
    """The system for one hardware choice."""

    hardware: str
    use_sim_time: bool
    nodes: list[NodeSpec]
    infrastructure: list[str]
    path: Path

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``; KeyError naming the known nodes if there is none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f'{self.path}: no node {name!r} (nodes: {[n.name for n in self.nodes]})')

    @property
    def node_names(self) -> list[str]:
        """Node names in start order."""
        return [node.name for node in self.nodes]


def _check_type(value: Any, expected: type, where: Path, key: str) -> None:
    if expected is bool and not isinstance(value, bool):
        raise SystemConfigError(f'{where}: {key}: expected true or false, got {value!r}')
    if not isinstance(value, expected):
        raise SystemConfigError(
            f'{where}: {key}: expected {expected.__name__}, got {type(value).__name__} ({value!r})'
        )


def _check_parameter(value: Any, where: Path, key: str) -> None:
    try:
        format_parameter_value(value)
    except TypeError as exc:
        raise SystemConfigError(f'{where}: {key}: {exc}') from exc


def load_system(
    hardware: str = 'sim', path: str | Path | None = None, *, check_files: bool = True
) -> SystemConfig:
    """Read and validate config/system.yaml (or ``path``) for one hardware choice.

    With ``check_files`` (default) every node's package must be installed and its parameter file
    must exist; without it the structure is still validated and paths are resolved where they can
    be (for static checks before a build).
    """
    path = Path(path) if path is not None else default_system_path()
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except OSError as exc:
        raise SystemConfigError(f'{path}: cannot read the system config: {exc}') from exc
    except yaml.YAMLError as exc:
        raise SystemConfigError(f'{path}: not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise SystemConfigError(f'{path}: expected a mapping with keys nodes and hardware')
    unknown = set(data) - {'nodes', 'hardware'}
    if unknown:
        raise SystemConfigError(f'{path}: unknown top-level key(s) {sorted(unknown)}')
    for key in ('nodes', 'hardware'):
        if key not in data:
            raise SystemConfigError(f'{path}: missing key {key!r}')

    raw_nodes = data['nodes']
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise SystemConfigError(f'{path}: nodes: expected a non-empty list of nodes')
    names: list[str] = []
    for index, raw in enumerate(raw_nodes):
        key = f'nodes[{index}]'
        if not isinstance(raw, dict):
            raise SystemConfigError(f'{path}: {key}: expected a mapping, got {raw!r}')
        unknown = set(raw) - set(_NODE_FIELDS)
        if unknown:
            raise SystemConfigError(
                f'{path}: {key}: unknown field(s) {sorted(unknown)} (known: {list(_NODE_FIELDS)})'
            )
        for field in _NODE_REQUIRED:
            if field not in raw:
                raise SystemConfigError(f'{path}: {key}: missing field {field!r}')
        for field, value in raw.items():
            _check_type(value, _NODE_FIELDS[field], path, f'{key}.{field}')
        if raw['name'] in names:
            raise SystemConfigError(f'{path}: {key}.name: duplicate node name {raw["name"]!r}')
        names.append(raw['name'])

    choices = data['hardware']
    if not isinstance(choices, dict):
        raise SystemConfigError(f'{path}: hardware: expected a mapping sim|real|gazebo|mock')
    unknown = set(choices) - set(HARDWARE_CHOICES)
    if unknown:
        raise SystemConfigError(
            f'{path}: hardware: unknown choice(s) {sorted(unknown)} (known: {HARDWARE_CHOICES})'
        )
    if hardware not in HARDWARE_CHOICES:
        raise SystemConfigError(
            f'{path}: unknown hardware {hardware!r}; choose one of {", ".join(HARDWARE_CHOICES)}'
        )
    if hardware not in choices:
        raise SystemConfigError(f'{path}: hardware.{hardware}: missing')
    # Validate every choice, not only the one asked for: a typo in 'real' must not wait for the
    # day someone runs the device.
    for choice, entry in choices.items():
        key = f'hardware.{choice}'
        if not isinstance(entry, dict):
            raise SystemConfigError(f'{path}: {key}: expected a mapping')
        unknown = set(entry) - set(_HARDWARE_FIELDS)
        if unknown:
            raise SystemConfigError(
                f'{path}: {key}: unknown field(s) {sorted(unknown)} '
                f'(known: {list(_HARDWARE_FIELDS)})'
            )
        if 'use_sim_time' not in entry:
            raise SystemConfigError(f'{path}: {key}: missing field use_sim_time')
        for field, value in entry.items():
            _check_type(value, _HARDWARE_FIELDS[field], path, f'{key}.{field}')
        for node_name, overrides in entry.get('parameters', {}).items():
            pkey = f'{key}.parameters.{node_name}'
            if node_name not in names:
                raise SystemConfigError(f'{path}: {pkey}: no such node (nodes: {names})')
            if not isinstance(overrides, dict):
                raise SystemConfigError(f'{path}: {pkey}: expected a mapping of parameters')
            for parameter, value in overrides.items():
                _check_parameter(value, path, f'{pkey}.{parameter}')
                if parameter == 'use_sim_time' and not isinstance(value, bool):
                    raise SystemConfigError(
                        f'{path}: {pkey}.use_sim_time: expected true or false, got {value!r}'
                    )
        for item in entry.get('infrastructure', []):
            if item not in INFRASTRUCTURE_CHOICES:
                raise SystemConfigError(
                    f'{path}: {key}.infrastructure: unknown item {item!r} '
                    f'(known: {", ".join(INFRASTRUCTURE_CHOICES)})'
                )

    entry = choices[hardware]
    nodes = []
    for index, raw in enumerate(raw_nodes):
        files = []
        if 'parameter_file' in raw:
            key = f'nodes[{index}].parameter_file'
            try:
                share = _share_directory(raw['package'], path, f'nodes[{index}].package')
            except SystemConfigError:
                if check_files:
                    raise
                share = None
            if share is not None:
                file = share / raw['parameter_file']
                if check_files and not file.is_file():
                    raise SystemConfigError(
                        f'{path}: {key}: {file} does not exist (is {raw["parameter_file"]} '
                        f'installed by {raw["package"]}/setup.py? rebuild with tools/setup.sh)'
                    )
                files.append(file)
        parameters: dict[str, ParameterValue] = {'use_sim_time': entry['use_sim_time']}
        parameters.update(entry.get('parameters', {}).get(raw['name'], {}))
        nodes.append(
            NodeSpec(
                name=raw['name'],
                package=raw['package'],
                executable=raw['executable'],
                parameter_files=files,
                parameters=parameters,
                lifecycle=raw['lifecycle'],
                required=raw['required'],
            )
        )
    return SystemConfig(
        hardware=hardware,
        use_sim_time=entry['use_sim_time'],
        nodes=nodes,
        infrastructure=list(entry.get('infrastructure', [])),
        path=path,
    )
