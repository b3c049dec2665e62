"""Foxglove live view of the device: a WebSocket server (foxglove-sdk) fed from the ROS graph.

Open https://app.foxglove.dev (or Foxglove desktop), "Open connection", Foxglove WebSocket,
``ws://localhost:8765``. Channels, at ``rate_hz`` (10 Hz):

- ``/joint_states`` (foxglove.JointStates): finger positions (m) and loads (N) as last received;
- ``/tf`` (foxglove.FrameTransforms): every URDF joint as a transform parent -> child, prismatic
  fingers moved by their measured position, so the 3D panel draws the fingers where they are;
- ``/finger_forces`` (foxglove.SceneUpdate): per finger a sphere at the tip sized and coloured by
  its load (green at 0 N, red at the effort limit) and an arrow of 1 mm per N;
- ``/robot_description`` (std_msgs/msg/String, CDR): the URDF, sent again to every new
  subscriber (the 3D panel's URDF layer, source "Topic"); also served as the parameter
  ``robot_description`` (URDF layer source "Parameter").

Works without tf2 or foxglove_bridge (the PyPI route has neither): the transforms are computed here
from the URDF. No rclpy import at module level (the maths is tested without a ROS graph)::

    view = LiveView(node, load_description('sim'), port=8765)
    ...
    view.close()
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import transforms3d

JOINT_STATES_TOPIC = '/joint_states'
TF_TOPIC = '/tf'
MARKERS_TOPIC = '/finger_forces'
DESCRIPTION_TOPIC = '/robot_description'
DESCRIPTION_PARAMETER = 'robot_description'
ARROW_M_PER_N = 0.001  # 100 N draws a 10 cm arrow
SPHERE_MIN_M = 0.012
SPHERE_M_PER_N = 0.0003


class LiveViewError(RuntimeError):
    """The live view cannot start (port in use, invalid description)."""


@dataclasses.dataclass(frozen=True)
class UrdfJoint:
    """One URDF joint: what the transform parent -> child needs."""

    name: str
    kind: str
    parent: str
    child: str
    xyz: tuple[float, float, float]
    quaternion_wxyz: tuple[float, float, float, float]
    axis: tuple[float, float, float]


def parse_joints(urdf: str) -> list[UrdfJoint]:
    """Every joint of a URDF (origin as translation + quaternion, axis), in file order."""
    try:
        root = ET.fromstring(urdf)
    except ET.ParseError as exc:
        raise LiveViewError(f'robot description is not valid XML: {exc}') from exc
    joints = []
    # Direct children only: <ros2_control> and <gazebo> blocks have <joint> elements too.
    for element in root.findall('joint'):
        origin = element.find('origin')
        xyz = _floats(origin.get('xyz') if origin is not None else None, 3)
        rpy = _floats(origin.get('rpy') if origin is not None else None, 3)
        axis_element = element.find('axis')
        axis = _floats(axis_element.get('xyz') if axis_element is not None else '1 0 0', 3)
        parent = element.find('parent')
        child = element.find('child')
        if parent is None or child is None:
            raise LiveViewError(f'URDF joint {element.get("name")!r} has no parent or child link')
        joints.append(
            UrdfJoint(
                name=element.get('name', ''),
                kind=element.get('type', 'fixed'),
                parent=parent.get('link', ''),
                child=child.get('link', ''),
                xyz=xyz,
                quaternion_wxyz=tuple(transforms3d.euler.euler2quat(*rpy, axes='sxyz')),
                axis=axis,
            )
        )
    return joints


def _floats(text: str | None, count: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in (text or '').split()) or (0.0,) * count
    if len(values) != count:
        raise LiveViewError(f'URDF: expected {count} numbers, got {text!r}')
    return values


def joint_transform(
    joint: UrdfJoint, position: float
) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """Translation and rotation (w, x, y, z) of ``joint.child`` in ``joint.parent``.

    Prismatic joints move along their axis (expressed in the joint frame, i.e. after the origin
    rotation); revolute and continuous joints turn about it; anything else is fixed.
    """
    translation = np.array(joint.xyz)
    rotation = np.array(joint.quaternion_wxyz)
    axis = np.array(joint.axis)
    if joint.kind == 'prismatic' and position:
        origin_matrix = transforms3d.quaternions.quat2mat(rotation)
        translation = translation + origin_matrix @ (axis * position)
    elif joint.kind in ('revolute', 'continuous') and position:
        turn = transforms3d.quaternions.axangle2quat(axis, position)
        rotation = transforms3d.quaternions.qmult(rotation, turn)
    return tuple(float(v) for v in translation), tuple(float(v) for v in rotation)


def load_colour(load_n: float, limit_n: float) -> tuple[float, float, float]:
    """Green at 0 N through yellow to red at the limit (RGB 0..1)."""
    fraction = min(max(load_n / limit_n, 0.0), 1.0) if limit_n > 0 else 0.0
    return (min(1.0, 2 * fraction), min(1.0, 2 * (1 - fraction)), 0.0)


class _Listener:
    """foxglove ServerListener: serves the description parameter, resends it on subscribe."""

    def __init__(self, view: LiveView) -> None:
        self._view = view

    def on_subscribe(self, client: Any, channel: Any) -> None:
        if channel.topic == DESCRIPTION_TOPIC:
            self._view._publish_description()

    def on_get_parameters(self, client: Any, param_names: list[str], request_id=None) -> list:
        import foxglove

        if param_names and DESCRIPTION_PARAMETER not in param_names:
            return []
        return [foxglove.Parameter(DESCRIPTION_PARAMETER, value=self._view.description.urdf)]


class LiveView:
    """Serve the device live to Foxglove (see the module docstring).

    ``node`` is an rclpy node the caller spins (the view only adds a /joint_states subscription);
    ``description`` is a ``backhug_description.Description``. Publishing runs on a thread of its
    own at ``rate_hz`` of wall time, so it keeps going when simulated time is fast or stalled.
    """

    def __init__(
        self,
        node: Any,
        description: Any,
        port: int = 8765,
        *,
        host: str = '127.0.0.1',
        rate_hz: float = 10.0,
    ) -> None:
        import foxglove
        from foxglove.channels import FrameTransformsChannel, JointStatesChannel, SceneUpdateChannel
        from sensor_msgs.msg import JointState

        from backhug_hw_interface import qos

        if not rate_hz > 0:
            raise LiveViewError(f'rate_hz must be > 0, got {rate_hz}')
        self._node = node
        self.description = description
        self._joints = parse_joints(description.urdf)
        self._limits = {j.name: j.effort_limit_n for j in description.joints}
        self._tips = {j.name: j.name.removesuffix('_joint') + '_tip' for j in description.joints}
        self._lock = threading.Lock()
        self._latest: Any = None
        self._published = 0
        self._context = foxglove.Context()
        self._joint_channel = JointStatesChannel(JOINT_STATES_TOPIC, context=self._context)
        self._tf_channel = FrameTransformsChannel(TF_TOPIC, context=self._context)
        self._marker_channel = SceneUpdateChannel(MARKERS_TOPIC, context=self._context)
        self._description_channel = foxglove.Channel(
            DESCRIPTION_TOPIC,
            schema=foxglove.Schema(
                name='std_msgs/msg/String', encoding='ros2msg', data=b'string data\n'
            ),
            message_encoding='cdr',
            context=self._context,
        )
        try:
            self._server = foxglove.start_server(
                name='backhug',
                host=host,
                port=port,
                capabilities=[foxglove.Capability.Parameters],
                server_listener=_Listener(self),
                context=self._context,
            )
        except Exception as exc:  # the SDK raises its own error types for bind failures
            raise LiveViewError(
                f'cannot start the Foxglove server on {host}:{port}: {exc}'
            ) from exc
        self.port = self._server.port
        self._subscription = node.create_subscription(
            JointState, JOINT_STATES_TOPIC, self._on_joint_state, qos.STATE_QOS
        )
        self._period_s = 1.0 / rate_hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name='foxglove-live')
        self._thread.start()
        self._publish_description()

    @property
    def url(self) -> str:
        """The WebSocket address to open in Foxglove."""
        return f'ws://localhost:{self.port}'

    @property
    def published(self) -> int:
        """Number of 10 Hz updates sent so far."""
        return self._published

    def _on_joint_state(self, msg: Any) -> None:
        with self._lock:
            self._latest = msg

    def _publish_description(self) -> None:
        from rclpy.serialization import serialize_message
        from std_msgs.msg import String

        self._description_channel.log(serialize_message(String(data=self.description.urdf)))

    def _loop(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                latest = self._latest
            # Draw the device even before the first joint state: retracted, no load.
            self.publish(latest)
            next_time += self._period_s
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def publish(self, joint_state: Any | None) -> None:
        """Send joint states, transforms and force markers for one JointState (None: at rest)."""
        import foxglove.messages as fm

        now = time.time()
        stamp = fm.Timestamp.from_epoch_secs(now)
        positions: dict[str, float] = {}
        loads: dict[str, float] = {}
        if joint_state is not None:
            for i, name in enumerate(joint_state.name):
                if i < len(joint_state.position) and math.isfinite(joint_state.position[i]):
                    positions[name] = float(joint_state.position[i])
                if i < len(joint_state.effort) and math.isfinite(joint_state.effort[i]):
                    loads[name] = float(joint_state.effort[i])
            self._joint_channel.log(
                fm.JointStates(
                    timestamp=stamp,
                    joints=[
                        fm.JointState(
                            name=name, position=positions.get(name), effort=loads.get(name)
                        )
                        for name in joint_state.name
                    ],
                )
            )
        transforms = []
        for joint in self._joints:
            translation, rotation = joint_transform(joint, positions.get(joint.name, 0.0))
            transforms.append(
                fm.FrameTransform(
                    timestamp=stamp,
                    parent_frame_id=joint.parent,
                    child_frame_id=joint.child,
                    translation=fm.Vector3(x=translation[0], y=translation[1], z=translation[2]),
                    rotation=fm.Quaternion(
                        w=rotation[0], x=rotation[1], y=rotation[2], z=rotation[3]
                    ),
                )
            )
        self._tf_channel.log(fm.FrameTransforms(transforms=transforms))
        self._marker_channel.log(fm.SceneUpdate(entities=self._markers(stamp, loads)))
        self._published += 1

    def _markers(self, stamp: Any, loads: dict[str, float]) -> list:
        import foxglove.messages as fm

        entities = []
        for name, tip in self._tips.items():
            load = max(0.0, loads.get(name, 0.0))
            r, g, b = load_colour(load, self._limits.get(name, 180.0))
            colour = fm.Color(r=r, g=g, b=b, a=0.9)
            diameter = SPHERE_MIN_M + SPHERE_M_PER_N * load
            arrow_length = ARROW_M_PER_N * load
            up = fm.Quaternion(x=0.0, y=-math.sqrt(0.5), z=0.0, w=math.sqrt(0.5))  # +x -> +z
            entities.append(
                fm.SceneEntity(
                    timestamp=stamp,
                    frame_id=tip,
                    id=f'force/{name}',
                    frame_locked=True,
                    spheres=[
                        fm.SpherePrimitive(
                            pose=fm.Pose(position=fm.Vector3(), orientation=fm.Quaternion(w=1.0)),
                            size=fm.Vector3(x=diameter, y=diameter, z=diameter),
                            color=colour,
                        )
                    ],
                    arrows=[
                        fm.ArrowPrimitive(
                            pose=fm.Pose(position=fm.Vector3(), orientation=up),
                            shaft_length=arrow_length * 0.8,
                            shaft_diameter=0.004,
                            head_length=arrow_length * 0.2,
                            head_diameter=0.01,
                            color=colour,
                        )
                    ]
                    if arrow_length > 0
                    else [],
                    texts=[
                        fm.TextPrimitive(
                            pose=fm.Pose(
                                position=fm.Vector3(z=diameter + arrow_length + 0.01),
                                orientation=fm.Quaternion(w=1.0),
                            ),
                            billboard=True,
                            font_size=12.0,
                            scale_invariant=True,
                            color=fm.Color(r=1.0, g=1.0, b=1.0, a=1.0),
                            text=f'{load:.0f} N',
                        )
                    ],
                )
            )
        return entities

    def close(self) -> None:
        """Stop publishing and the server; remove the subscription. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self._node.destroy_subscription(self._subscription)
        self._server.stop()

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
