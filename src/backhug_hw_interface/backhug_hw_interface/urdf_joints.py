"""The joints hw_interface drives, read from the robot description's ``<ros2_control>`` block.

hw_interface drives exactly the joints the ``<ros2_control>`` block lists, in its order, with
the position command interface's ``min``/``max`` as limits (falling back to the URDF joint's
``<limit>``), and the velocity and effort limits of the URDF joint. Every joint must offer a
position command interface and position, velocity and effort state interfaces: a description
that does not is refused with the joint and interface named.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass


class DescriptionJointsError(ValueError):
    """The robot description cannot drive BackHug's fingers (message says where)."""


@dataclass(frozen=True)
class DrivenJoint:
    """One joint of the ``<ros2_control>`` block with its limits (SI units)."""

    name: str
    lower_m: float
    upper_m: float
    velocity_limit_m_s: float
    effort_limit_n: float


REQUIRED_STATE_INTERFACES = ('position', 'velocity', 'effort')


def driven_joints(urdf: str, system_name: str | None = None) -> list[DrivenJoint]:
    """The joints of the (first, or named) ``<ros2_control>`` system of a URDF string."""
    try:
        root = ET.fromstring(urdf)
    except ET.ParseError as exc:
        raise DescriptionJointsError(f'robot description is not valid XML: {exc}') from exc
    systems = root.findall('ros2_control')
    if system_name is not None:
        systems = [s for s in systems if s.get('name') == system_name]
    if not systems:
        which = f' named {system_name!r}' if system_name else ''
        raise DescriptionJointsError(f'robot description has no <ros2_control> block{which}')
    urdf_joints = {j.get('name'): j for j in root.findall('joint')}
    joints = []
    for element in systems[0].findall('joint'):
        name = element.get('name') or ''
        where = f'<ros2_control> joint {name!r}'
        urdf_joint = urdf_joints.get(name)
        if urdf_joint is None:
            raise DescriptionJointsError(f'{where} is not a joint of the URDF')
        limit = urdf_joint.find('limit')
        if limit is None:
            raise DescriptionJointsError(f'URDF joint {name!r} has no <limit>')
        commands = {c.get('name'): c for c in element.findall('command_interface')}
        if 'position' not in commands:
            raise DescriptionJointsError(f'{where} has no position command interface')
        states = {s.get('name') for s in element.findall('state_interface')}
        missing = [s for s in REQUIRED_STATE_INTERFACES if s not in states]
        if missing:
            raise DescriptionJointsError(f'{where} lacks state interfaces {missing}')
        params = {p.get('name'): p.text for p in commands['position'].findall('param')}
        lower = _number(params.get('min', limit.get('lower')), f'{where} min')
        upper = _number(params.get('max', limit.get('upper')), f'{where} max')
        if not lower < upper:
            raise DescriptionJointsError(f'{where}: min {lower} must be below max {upper}')
        joints.append(
            DrivenJoint(
                name=name,
                lower_m=lower,
                upper_m=upper,
                velocity_limit_m_s=_number(limit.get('velocity'), f'joint {name} velocity'),
                effort_limit_n=_number(limit.get('effort'), f'joint {name} effort'),
            )
        )
    if not joints:
        raise DescriptionJointsError('the <ros2_control> block lists no joints')
    return joints


def _number(text: str | None, what: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DescriptionJointsError(f'{what} must be a number, got {text!r}') from None
    if not math.isfinite(value):
        raise DescriptionJointsError(f'{what} must be finite, got {text!r}')
    return value
