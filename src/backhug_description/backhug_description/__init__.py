"""BackHug device description: the parametric URDF, its config, and a Python API to load it.

The package also holds the ros2_control block, the RViz config and the Gazebo world.

The Python API (no rclpy) is the contract of docs/architecture.md::

    from backhug_description import load_description, load_config, DescriptionError
    description = load_description(hardware='sim', rows=8)
    description.urdf, description.config, description.joints
"""

from backhug_description.config import EFFORT_CEILING_N, DeviceConfig, load_config
from backhug_description.description import (
    HARDWARE_CHOICES,
    LAYOUT_OVERRIDES,
    Description,
    JointInfo,
    load_description,
)
from backhug_description.errors import DescriptionError
from backhug_description.paths import share_directory

__all__ = [
    'EFFORT_CEILING_N',
    'HARDWARE_CHOICES',
    'LAYOUT_OVERRIDES',
    'Description',
    'DescriptionError',
    'DeviceConfig',
    'JointInfo',
    'load_config',
    'load_description',
    'share_directory',
]
