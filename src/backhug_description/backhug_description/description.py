"""Expand the device xacro in memory and read its finger joints back from the URDF.

``load_description`` validates the config first (``load_config``), expands
``urdf/backhug.urdf.xacro`` with ``xacro.process_file`` (no subprocess, no files), parses the URDF
with xml.etree and computes each tip position by composing the joint transforms from the tip up
to ``base_link`` (transforms3d), so the numbers other packages use are those of the URDF itself.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import transforms3d

from backhug_description.config import SIDES, DeviceConfig, load_config
from backhug_description.errors import DescriptionError
from backhug_description.paths import share_directory

HARDWARE_CHOICES = ('sim', 'real', 'gazebo', 'mock')
# Config keys that are also arguments of urdf/backhug.urdf.xacro (the layout).
LAYOUT_OVERRIDES = ('columns', 'rows', 'row_pitch_m', 'lateral_offset_m', 'stroke_m')
ROOT_LINK = 'base_link'
SPINE_FRAME = 'spine_line'

# xacro keeps its state in module globals; one expansion at a time.
_XACRO_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class JointInfo:
    """One finger joint as the URDF describes it (SI units, base_link frame)."""

    name: str
    side: str
    row: int
    lower_m: float
    upper_m: float
    effort_limit_n: float
    velocity_limit_m_s: float
    tip_xyz_m: tuple[float, float, float]
    spine_offset_m: float


@dataclasses.dataclass(frozen=True)
class Description:
    """An expanded device description: the URDF, its config and its finger joints."""

    urdf: str
    config: DeviceConfig
    joints: list[JointInfo]
    hardware: str
    prefix: str = ''

    @property
    def joint_names(self) -> list[str]:
        """Finger joint names in the canonical order."""
        return [joint.name for joint in self.joints]


def xacro_path() -> Path:
    """Path of the top-level xacro file."""
    return share_directory() / 'urdf' / 'backhug.urdf.xacro'


def controllers_path() -> Path:
    """Path of the gz_ros2_control controllers file (config/gazebo_controllers.yaml)."""
    return share_directory() / 'config' / 'gazebo_controllers.yaml'


def expand_xacro(mappings: dict[str, str]) -> str:
    """Expand urdf/backhug.urdf.xacro with the given xacro arguments; return the URDF string."""
    import xacro

    path = xacro_path()
    with _XACRO_LOCK:
        try:
            document = xacro.process_file(str(path), mappings=dict(mappings))
        except xacro.XacroException as exc:
            raise DescriptionError(f'{path}: xacro failed: {exc}') from exc
    return document.toprettyxml(indent='  ')


def load_description(
    hardware: str = 'sim',
    config_path: str | Path | None = None,
    *,
    prefix: str = '',
    controllers_file: str | Path | None = None,
    **overrides: Any,
) -> Description:
    """Validate the config, expand the xacro for one hardware choice and read the joints back.

    ``overrides`` are layout values (``rows=8``, ``row_pitch_m=0.04``...; see LAYOUT_OVERRIDES),
    passed to the config and, as arguments, to the xacro. Raises DescriptionError.
    """
    if hardware not in HARDWARE_CHOICES:
        raise DescriptionError(f'hardware must be one of {HARDWARE_CHOICES}, got {hardware!r}')
    if not re.fullmatch(r'[A-Za-z0-9_]*', prefix):
        raise DescriptionError(f'prefix must be letters, digits and underscores, got {prefix!r}')
    unsupported = sorted(set(overrides) - set(LAYOUT_OVERRIDES))
    if unsupported:
        raise DescriptionError(
            f'unsupported description override(s) {unsupported}: the xacro takes '
            f'{list(LAYOUT_OVERRIDES)}; put other values in a config file (config_path)'
        )
    overrides = {key: value for key, value in overrides.items() if value is not None}
    config = load_config(config_path, **overrides)
    mappings = {
        'hardware': hardware,
        'prefix': prefix,
        'config': str(Path(config.source).resolve()),
        'controllers_file': str(Path(controllers_file or controllers_path()).resolve()),
    }
    mappings.update({key: repr(getattr(config, key)) for key in overrides})
    urdf = expand_xacro(mappings)
    joints = finger_joints(urdf, prefix)
    expected = [prefix + name for name in config.joint_names()]
    if [joint.name for joint in joints] != expected:
        raise DescriptionError(
            f'URDF finger joints {[j.name for j in joints]} do not match the config {expected}'
        )
    return Description(urdf=urdf, config=config, joints=joints, hardware=hardware, prefix=prefix)


def _origin_matrix(element: ET.Element | None) -> np.ndarray:
    """4x4 transform of a URDF <origin> (xyz, fixed-axis rpy), identity when absent."""
    matrix = np.eye(4)
    if element is None:
        return matrix
    xyz = [float(v) for v in element.get('xyz', '0 0 0').split()]
    rpy = [float(v) for v in element.get('rpy', '0 0 0').split()]
    if len(xyz) != 3 or len(rpy) != 3:
        raise DescriptionError(f'invalid <origin xyz={xyz!r} rpy={rpy!r}>')
    # URDF rpy: roll about x, then pitch about y, then yaw about z, all about fixed axes.
    matrix[:3, :3] = transforms3d.euler.euler2mat(*rpy, axes='sxyz')
    matrix[:3, 3] = xyz
    return matrix


class UrdfKinematics:
    """Tree of a URDF's joints for forward kinematics at joint position zero."""

    def __init__(self, urdf: str, root_link: str = ROOT_LINK) -> None:
        self.root_link = root_link
        try:
            self.root = ET.fromstring(urdf)
        except ET.ParseError as exc:
            raise DescriptionError(f'URDF is not well-formed XML: {exc}') from exc
        # Only the robot's own joints (not the <joint> entries of <ros2_control>).
        self.joints = {joint.get('name'): joint for joint in self.root.findall('joint')}
        self.parent_joint = {
            joint.find('child').get('link'): joint for joint in self.joints.values()
        }

    def transform(self, link: str, frame: str | None = None) -> np.ndarray:
        """4x4 pose of ``link`` in ``frame`` (an ancestor; default the root) at joint zero."""
        frame = frame or self.root_link
        matrix = np.eye(4)
        current = link
        while current != frame:
            joint = self.parent_joint.get(current)
            if joint is None:
                raise DescriptionError(f'link {link!r} is not below {frame!r} in the URDF')
            matrix = _origin_matrix(joint.find('origin')) @ matrix
            current = joint.find('parent').get('link')
        return matrix

    def position(self, link: str, frame: str | None = None) -> np.ndarray:
        """Origin of ``link`` expressed in ``frame`` (default the root link), metres."""
        if frame is None or frame == self.root_link:
            return self.transform(link)[:3, 3]
        relative = np.linalg.inv(self.transform(frame)) @ self.transform(link)
        return relative[:3, 3]


def finger_joints(urdf: str, prefix: str = '') -> list[JointInfo]:
    """The finger joints of a BackHug URDF in the canonical order (left head→tail, then right)."""
    kinematics = UrdfKinematics(urdf, prefix + ROOT_LINK)
    pattern = re.compile(rf'{re.escape(prefix)}finger_([lr])_(\d+)_joint')
    spine_frame = prefix + SPINE_FRAME
    found: list[JointInfo] = []
    for name, joint in kinematics.joints.items():
        match = pattern.fullmatch(name or '')
        if match is None:
            continue
        if joint.get('type') != 'prismatic':
            raise DescriptionError(f'joint {name!r} must be prismatic, got {joint.get("type")!r}')
        limit = joint.find('limit')
        if limit is None:
            raise DescriptionError(f'joint {name!r} has no <limit>')
        tip_link = name[: -len('_joint')] + '_tip'
        tip = kinematics.position(tip_link)
        offset = kinematics.position(tip_link, spine_frame)[0]
        found.append(
            JointInfo(
                name=name,
                side=match.group(1),
                row=int(match.group(2)),
                lower_m=float(limit.get('lower', '0')),
                upper_m=float(limit.get('upper', '0')),
                effort_limit_n=float(limit.get('effort')),
                velocity_limit_m_s=float(limit.get('velocity')),
                tip_xyz_m=(float(tip[0]), float(tip[1]), float(tip[2])),
                spine_offset_m=float(offset),
            )
        )
    found.sort(key=lambda joint: (SIDES.index(joint.side), joint.row))
    return found
