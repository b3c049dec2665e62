"""Finger-force markers for RViz: /joint_states loads -> /finger_forces/markers (MarkerArray).

Per finger a sphere at its tip frame (``finger_<side>_<row>_tip``, from robot_state_publisher's
TF), sized and coloured by the load (green at 0 N, red at the joint's effort limit, the same
scale as the Foxglove live view), and a text with the load in newtons. Published at ``rate_hz``
(10 Hz) of wall time with the last joint state, reliable depth 1 (docs/architecture.md).

    ros2 run backhug_bringup force_markers --ros-args -p hardware:=sim

The launch file starts it with rviz:=true; ``backhug run`` can host :class:`ForceMarkers` in its
own node.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from backhug_bringup.live_view import SPHERE_M_PER_N, SPHERE_MIN_M, load_colour

MARKERS_TOPIC = '/finger_forces/markers'
MARKERS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
NAMESPACE_SPHERES = 'finger_force'
NAMESPACE_TEXT = 'finger_force_text'


def force_marker_array(
    joint_state: Any, joints: list[Any], stamp: Any, lifetime_s: float = 1.0
) -> MarkerArray:
    """Markers for one JointState; ``joints`` are backhug_description JointInfo (names, limits).

    Fingers missing from the state, or with a NaN load, are drawn grey at the minimum size.
    """
    loads = {}
    if joint_state is not None:
        for name, effort in zip(joint_state.name, joint_state.effort, strict=False):
            if math.isfinite(effort):
                loads[name] = max(0.0, float(effort))
    markers = MarkerArray()
    lifetime = Duration(seconds=lifetime_s).to_msg()
    for index, joint in enumerate(joints):
        frame = joint.name.removesuffix('_joint') + '_tip'
        load = loads.get(joint.name)
        if load is None:
            colour = ColorRGBA(r=0.5, g=0.5, b=0.5, a=0.6)
            diameter = SPHERE_MIN_M
        else:
            r, g, b = load_colour(load, joint.effort_limit_n)
            colour = ColorRGBA(r=r, g=g, b=b, a=0.9)
            diameter = SPHERE_MIN_M + SPHERE_M_PER_N * load
        sphere = Marker(ns=NAMESPACE_SPHERES, id=index, type=Marker.SPHERE, action=Marker.ADD)
        sphere.header.frame_id = frame
        sphere.header.stamp = stamp
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = diameter
        sphere.color = colour
        sphere.lifetime = lifetime
        sphere.frame_locked = True
        text = Marker(ns=NAMESPACE_TEXT, id=index, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header = sphere.header
        text.pose.position.z = diameter + 0.01
        text.pose.orientation.w = 1.0
        text.scale.z = 0.012  # text height, m
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = '-' if load is None else f'{load:.0f} N'
        text.lifetime = lifetime
        text.frame_locked = True
        markers.markers += [sphere, text]
    return markers


class ForceMarkers:
    """Subscribe to /joint_states on ``node``, publish the markers at ``rate_hz`` (wall time)."""

    def __init__(self, node: Node, joints: list[Any], rate_hz: float = 10.0) -> None:
        from rclpy.clock import Clock, ClockType
        from sensor_msgs.msg import JointState

        from backhug_hw_interface import qos

        if not rate_hz > 0:
            raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
        self._node = node
        self._joints = list(joints)
        self._latest = None
        self.published = 0
        self._publisher = node.create_publisher(MarkerArray, MARKERS_TOPIC, MARKERS_QOS)
        self._subscription = node.create_subscription(
            JointState, qos.JOINT_STATES, self._on_joint_state, qos.STATE_QOS
        )
        # Wall clock: markers keep coming when simulated time runs fast or stands still.
        self._timer = node.create_timer(
            1.0 / rate_hz, self._publish, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )

    def _on_joint_state(self, msg: Any) -> None:
        self._latest = msg

    def _publish(self) -> None:
        latest = self._latest
        stamp = latest.header.stamp if latest is not None else self._node.get_clock().now().to_msg()
        self._publisher.publish(force_marker_array(latest, self._joints, stamp))
        self.published += 1

    def close(self) -> None:
        """Stop publishing (the node stays the caller's)."""
        self._node.destroy_timer(self._timer)
        self._node.destroy_subscription(self._subscription)
        self._node.destroy_publisher(self._publisher)


def main(argv: list[str] | None = None) -> int:
    """The ``force_markers`` node: parameters hardware (description) and rate_hz."""
    import rclpy
    from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
    from rclpy.executors import ExternalShutdownException

    from backhug_description import HARDWARE_CHOICES, load_description

    rclpy.init(args=argv)
    node = Node('force_markers')
    try:
        hardware = node.declare_parameter(
            'hardware',
            'sim',
            ParameterDescriptor(
                description=f'description to draw ({", ".join(HARDWARE_CHOICES)})',
                read_only=True,
            ),
        ).value
        rate_hz = node.declare_parameter(
            'rate_hz',
            10.0,
            ParameterDescriptor(
                description='marker rate, Hz (wall clock)',
                floating_point_range=[FloatingPointRange(from_value=0.5, to_value=50.0)],
                read_only=True,
            ),
        ).value
        if hardware not in HARDWARE_CHOICES:
            node.get_logger().error(
                f'parameter hardware: {hardware!r} is not one of {", ".join(HARDWARE_CHOICES)}'
            )
            return 2
        ForceMarkers(node, load_description(hardware).joints, rate_hz)
        node.get_logger().info(f'{MARKERS_TOPIC} at {rate_hz:g} Hz for hardware {hardware}')
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # rclpy raises RCLError on SIGINT during spin (ros2-from-pypi.md)
        if rclpy.ok():
            raise
        del exc
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
