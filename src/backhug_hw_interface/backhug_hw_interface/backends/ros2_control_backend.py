"""The ``ros2_control`` backend: a ros2_control system driven through the standard controllers.

For ``hardware:=gazebo`` (gz_ros2_control's GazeboSimSystem) and ``hardware:=mock``
(mock_components/GenericSystem) a controller manager owns the joints. This backend plays the
part of a client of two stock controllers (ros2_controllers):

- ``forward_command_controller/ForwardCommandController`` (``finger_position_controller``,
  interface ``position``): targets go out as ``std_msgs/Float64MultiArray`` on
  ``<controller>/commands``, one value per joint in the controller's ``joints`` order;
- ``joint_state_broadcaster/JointStateBroadcaster`` with ``use_local_topics: true``: states come
  in as ``sensor_msgs/JointState`` on ``/joint_state_broadcaster/joint_states`` (so that
  hw_interface alone publishes the device's ``/joint_states``).

It is the one backend that needs rclpy, because its device is on the ROS graph: hw_interface
hands it its node. The link is up while broadcaster states keep arriving within
``state_timeout_s``; effort is the joint's effort state interface (N, + = pushing up).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from backhug_hw_interface.backends.base import Backend, BackendError, HardwareState

FAULT_LINK = 128  # backhug_interfaces/HardwareStatus.FAULT_LINK


class Ros2ControlBackend(Backend):
    """Backend over a forward command controller and a joint state broadcaster."""

    def __init__(
        self,
        joint_names: list[str],
        *,
        node,
        command_topic: str = '/finger_position_controller/commands',
        state_topic: str = '/joint_state_broadcaster/joint_states',
        controller_joints: list[str] | None = None,
        state_timeout_s: float = 0.2,
    ) -> None:
        super().__init__(joint_names)
        self._node = node
        self.command_topic = command_topic
        self.state_topic = state_topic
        self.controller_joints = list(controller_joints or joint_names)
        self.state_timeout_s = state_timeout_s
        self._lock = threading.Lock()
        self._publisher = None
        self._subscription = None
        self._state = HardwareState.zeros(self.joint_count)
        self._last_state_wall: float | None = None
        self._frames_rx = 0
        self._frames_tx = 0
        self._timeouts = 0
        self._was_ok = False
        self._missing_warned = ''

    def open(self) -> None:
        """Create the command publisher and the state subscription on hw_interface's node."""
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        from backhug_hw_interface.qos import STATE_QOS

        missing = [n for n in self.joint_names if n not in self.controller_joints]
        if missing:
            raise BackendError(
                f'ros2_control backend: joints {missing} are not in controller_joints '
                f'{self.controller_joints}'
            )
        self._publisher = self._node.create_publisher(
            Float64MultiArray, self.command_topic, STATE_QOS
        )
        self._subscription = self._node.create_subscription(
            JointState, self.state_topic, self._on_state, STATE_QOS
        )
        self._command_type = Float64MultiArray

    def close(self) -> None:
        """Command every joint retracted, then drop the publisher and subscription."""
        if self._publisher is not None:
            self.write(np.zeros(self.joint_count), np.zeros(self.joint_count, dtype=bool))
            self._node.destroy_publisher(self._publisher)
            self._publisher = None
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None

    def _on_state(self, msg) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            if self._missing_warned != str(missing):
                self._missing_warned = str(missing)
                self._node.get_logger().error(
                    f'{self.state_topic} lacks joints {missing}: state ignored'
                )
            return
        order = [index[n] for n in self.joint_names]

        def pick(values) -> np.ndarray:
            array = np.asarray(values, dtype=float)
            if array.shape[0] != len(msg.name):
                return np.full(self.joint_count, np.nan)
            return array[order]

        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self._state = HardwareState(
                stamp_s=stamp,
                position_m=pick(msg.position),
                velocity_m_s=pick(msg.velocity),
                effort_n=pick(msg.effort),
                finger_faults=np.zeros(self.joint_count, dtype=np.uint32),
            )
            self._last_state_wall = time.monotonic()
            self._frames_rx += 1

    def read(self) -> HardwareState:
        """The latest broadcaster state; link down when it is older than state_timeout_s."""
        with self._lock:
            state = self._state
            fresh = (
                self._last_state_wall is not None
                and time.monotonic() - self._last_state_wall <= self.state_timeout_s
            )
            if self._was_ok and not fresh:
                self._timeouts += 1
            self._was_ok = fresh
            state = HardwareState(
                stamp_s=state.stamp_s,
                position_m=state.position_m.copy(),
                velocity_m_s=state.velocity_m_s.copy(),
                effort_n=state.effort_n.copy(),
                link_ok=fresh,
                board_faults=0 if fresh else FAULT_LINK,
                finger_faults=state.finger_faults.copy(),
                fault_messages=[]
                if fresh
                else [f'no joint states on {self.state_topic} for > {self.state_timeout_s} s'],
                frames_rx=self._frames_rx,
                frames_tx=self._frames_tx,
                timeouts=self._timeouts,
            )
        return state

    def write(self, position_m: np.ndarray, enable: np.ndarray) -> None:
        """Publish the targets in the controller's joint order (disabled joints retracted)."""
        if self._publisher is None:
            raise BackendError('ros2_control backend is not open (call open() first)')
        position = np.asarray(position_m, dtype=float)
        flags = np.asarray(enable, dtype=bool)
        if position.shape != (self.joint_count,) or flags.shape != (self.joint_count,):
            raise BackendError(
                f'targets need {self.joint_count} entries, got {position.shape} / {flags.shape}'
            )
        if not np.all(np.isfinite(position)):
            raise BackendError('targets must be finite (NaN/inf refused, nothing sent)')
        by_name = dict(zip(self.joint_names, np.where(flags, position, 0.0), strict=True))
        msg = self._command_type()
        msg.data = [float(by_name.get(name, 0.0)) for name in self.controller_joints]
        self._publisher.publish(msg)
        self._frames_tx += 1
