"""hw_interface with ``backend:=ros2_control``, its two controllers played by an rclpy peer.

There is no ros2_control on this machine (ROS 2 from PyPI wheels), so ``FakeControllers`` plays
what a controller manager would run for ``hardware:=mock``: the ``joint_state_broadcaster``
(sensor_msgs/JointState on the node's ``ros2_control_state_topic``, joints in an order of its
own) and the forward command controller ``finger_position_controller`` (std_msgs/
Float64MultiArray on ``ros2_control_command_topic``, one value per joint in the controller's
joint order), with hardware that follows each command at once, as mock_components do. The
hw_interface node runs as its own process; ``Peer`` (hw_node_support.py) plays the safety
monitor and the finger controllers and listens to /joint_states and /hardware/status.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from backhug_hw_interface import qos
from backhug_interfaces.msg import HardwareStatus, SafetyStatus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hw_node_support import PARAMETER_DEFAULTS, Peer, output_tail, start_node, stop_node

COMMAND_TOPIC = PARAMETER_DEFAULTS['ros2_control_command_topic']
STATE_TOPIC = PARAMETER_DEFAULTS['ros2_control_state_topic']
PATIENCE_S = 30.0
#: The product's 0.2 s state timeout and 0.2-0.5 s guards trip by themselves on this shared
#: 2-core host (see test_hw_interface_serial.py); no test here is about those values.
TOLERANT_TIMING = {
    'ros2_control_state_timeout_s': 1.0,
    'command_timeout_s': 1.0,
    'hold_timeout_s': 1.0,
    'safety_timeout_s': 2.0,
}


class FakeControllers:
    """joint_state_broadcaster + forward command controller over mock hardware, in one node."""

    def __init__(self, context, joints: list[str]) -> None:
        self.node = Node('fake_controller_manager', context=context)
        self.joints = list(joints)  # the controller's joint order
        self.broadcast_order = list(reversed(joints))  # the broadcaster's: another one
        self.position = dict.fromkeys(joints, 0.0)
        # Distinct per joint, so a mix-up of names shows in the republished values.
        self.effort = {name: 1.0 + 0.5 * i for i, name in enumerate(self.broadcast_order)}
        self.broadcasting = True
        self.follow = True  # the mock hardware goes where it is commanded
        self.commands: list[tuple[float, np.ndarray]] = []
        self.lock = threading.Lock()
        self.state_pub = self.node.create_publisher(JointState, STATE_TOPIC, qos.STATE_QOS)
        self.node.create_subscription(
            Float64MultiArray, COMMAND_TOPIC, self._on_command, qos.STATE_QOS
        )
        self.node.create_timer(0.01, self._broadcast)

    def _on_command(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=float)
        with self.lock:
            self.commands.append((time.monotonic(), data))
            del self.commands[:-5000]
        if self.follow and data.size == len(self.joints):  # at once, like mock_components
            self.position.update(zip(self.joints, data.tolist(), strict=True))

    def _broadcast(self) -> None:
        if not self.broadcasting:
            return
        msg = JointState(
            name=self.broadcast_order,
            position=[self.position[n] for n in self.broadcast_order],
            velocity=[0.0] * len(self.joints),
            effort=[self.effort[n] for n in self.broadcast_order],
        )
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.state_pub.publish(msg)

    def last_command(self) -> np.ndarray:
        with self.lock:
            return self.commands[-1][1] if self.commands else np.zeros(0)

    def commands_since(self, start: float) -> list[np.ndarray]:
        with self.lock:
            return [data for stamp, data in self.commands if stamp >= start]


@pytest.fixture(scope='module')
def joints() -> list[str]:
    """The node's joints, in its order: the description's (hardware mock)."""
    from backhug_hw_interface.urdf_joints import driven_joints

    from backhug_description import load_description

    return [j.name for j in driven_joints(load_description('mock').urdf)]


def start_ros2_control_node():
    """hw_interface on the ros2_control backend (mock hardware), tolerant timing."""
    return start_node(
        backend='ros2_control',
        hardware='mock',
        fault_injection=False,
        publish_clock=False,
        **TOLERANT_TIMING,
    )


@pytest.fixture
def system(ros_context, spin_nodes, wait, joints):
    """(node process, peer, fake controllers), the controllers up first (a running controller
    manager), every finger commanded to 0 and the node following commands."""
    controllers = FakeControllers(ros_context, joints)
    peer = Peer(ros_context)
    spin_nodes(controllers.node, peer.node)
    process = start_ros2_control_node()
    try:
        assert wait(lambda: len(peer.joint_states) > 5, PATIENCE_S), output_tail(process)
        assert list(peer.latest().name) == joints
        peer.targets = np.zeros(len(joints))
        peer.names = list(joints)
        assert wait(lambda: peer.status and peer.status.link == HardwareStatus.LINK_OK, 10.0)
        # A link that was never up is waited for, not latched (guards.CommandGuard.set_link).
        assert not peer.status.safe_stopped, output_tail(process)
        yield process, peer, controllers
    finally:
        output = stop_node(process)
        if os.environ.get('BACKHUG_TEST_VERBOSE'):
            print(f'\n--- hw_interface output ---\n{output}')


def by_name(names, values) -> dict[str, float]:
    return dict(zip(names, (float(v) for v in values), strict=True))


def test_joint_states_are_republished_from_the_broadcaster(system, joints, wait) -> None:
    """The broadcaster's states (its own joint order) come out on /joint_states in the node's
    joint order, name for name, and the link is reported up."""
    _process, peer, controllers = system
    controllers.follow = False  # the hardware stands where the test puts it
    for i, name in enumerate(joints):
        controllers.position[name] = 0.001 * (i + 1)

    def republished() -> bool:
        msg = peer.latest()
        return (
            list(msg.name) == joints
            and by_name(msg.name, msg.position) == pytest.approx(controllers.position)
            and by_name(msg.name, msg.effort) == pytest.approx(controllers.effort)
        )

    assert wait(republished, 10.0), (peer.latest().position, peer.latest().effort)
    msg = peer.latest()
    print(
        f'\n/joint_states in joint order: first {msg.name[0]} position {msg.position[0]:.4f} m '
        f'effort {msg.effort[0]:.2f} N (broadcast last); status link {peer.status.link}, '
        f'frames_rx {peer.status.frames_rx}'
    )
    assert peer.status.link == HardwareStatus.LINK_OK and not peer.status.safe_stopped


def test_finger_commands_are_forwarded_in_the_controllers_joint_order(system, joints, wait) -> None:
    """FingerCommands in a shuffled order reach the forward command controller as one value per
    joint in its order; targets beyond the limits arrive clamped to them."""
    _process, peer, controllers = system
    shuffled = list(joints)
    random.Random(4).shuffle(shuffled)
    wanted = {name: 0.002 + 0.001 * i for i, name in enumerate(joints)}
    wanted[joints[3]], wanted[joints[20]] = 0.05, -0.01  # beyond the 0..0.04 m limits
    peer.names = shuffled
    peer.targets = np.array([wanted[name] for name in shuffled])
    expected = np.clip([wanted[name] for name in joints], 0.0, 0.04)
    assert wait(lambda: np.allclose(controllers.last_command(), expected, atol=1e-9), 10.0), (
        controllers.last_command()
    )
    print(
        f'\nforwarded in joint order: {np.round(controllers.last_command()[:5], 4)} ... '
        f'(joint 3 asked 0.05 -> {controllers.last_command()[3]}, joint 20 asked -0.01 -> '
        f'{controllers.last_command()[20]})'
    )
    # The mock hardware followed: /joint_states shows the same, name for name.
    assert wait(lambda: np.allclose(peer.positions(), expected, atol=1e-9), 10.0)


def raise_all(peer: Peer, controllers: FakeControllers, wait, height_m: float = 0.02) -> None:
    """Every finger commanded to ``height_m`` and reported there on /joint_states (a retract
    starts from the reported position: from a stale 0 it would drop at once)."""
    peer.targets = np.full(len(peer.names), height_m)
    assert wait(lambda: np.allclose(controllers.last_command(), height_m), 10.0), (
        f'not forwarded: {controllers.last_command()}; status {peer.status.fault_messages}'
    )
    assert wait(lambda: np.allclose(peer.positions(), height_m), 10.0)


def assert_commands_retract(controllers: FakeControllers, since: float, wait, what: str) -> float:
    """The commands fall to the lower limits (0) without ever rising; returns the wall time."""
    assert wait(lambda: np.all(controllers.last_command() == 0.0), PATIENCE_S), (
        f'{what}: commands not at the lower limits: {controllers.last_command()}'
    )
    elapsed = time.monotonic() - since
    commands = np.array(controllers.commands_since(since))
    rises = np.diff(commands, axis=0).max() if len(commands) > 1 else 0.0
    print(
        f'\n{what}: every command at its lower limit {elapsed:.2f} s after it, in '
        f'{len(commands)} commands, none rising (largest step {rises * 1000:+.3f} mm)'
    )
    assert rises <= 1e-12, f'{what}: a command rose while retracting'
    return elapsed


def test_silent_broadcaster_retracts_and_latches_until_reset(system, wait) -> None:
    """No joint states: link down, a latched safe stop, commands lowered to the lower limits;
    states back: still held down until /hw_interface/reset, then the commands are followed."""
    _process, peer, controllers = system
    raise_all(peer, controllers, wait)
    silent_from = time.monotonic()
    controllers.broadcasting = False
    assert wait(
        lambda: peer.status.link == HardwareStatus.LINK_DISCONNECTED and peer.status.safe_stopped,
        PATIENCE_S,
    ), peer.status
    detected_s = time.monotonic() - silent_from
    assert any('no joint states' in m for m in peer.status.fault_messages)
    assert_commands_retract(controllers, silent_from, wait, 'broadcaster silent')
    refused = peer.call(peer.reset, Trigger.Request())
    assert not refused.success and 'link to the device is down' in refused.message
    controllers.broadcasting = True
    assert wait(lambda: peer.status.link == HardwareStatus.LINK_OK, PATIENCE_S)
    count = len(controllers.commands_since(0.0))
    assert wait(lambda: len(controllers.commands_since(0.0)) > count + 100, PATIENCE_S)
    assert np.all(controllers.last_command() == 0.0), 'moved after the states came back'
    assert peer.status.safe_stopped
    accepted = peer.call(peer.reset, Trigger.Request())
    assert accepted.success, accepted.message
    assert wait(lambda: np.allclose(controllers.last_command(), 0.02), PATIENCE_S)
    print(f'broadcaster silent: link down reported after {detected_s:.2f} s; {refused.message!r}')


def test_safety_fault_retracts(system, wait) -> None:
    """SafetyStatus FAULT: the commands fall to the lower limits though the peer keeps asking."""
    _process, peer, controllers = system
    raise_all(peer, controllers, wait)
    since = time.monotonic()
    peer.safety_state = SafetyStatus.FAULT
    assert_commands_retract(controllers, since, wait, 'safety FAULT')
    assert np.allclose(peer.targets, 0.02)  # still asked for


def test_a_node_started_before_the_broadcaster_follows_once_states_flow(
    ros_context, spin_nodes, wait, joints
) -> None:
    controllers = FakeControllers(ros_context, joints)
    controllers.broadcasting = False  # the controller manager is not up yet
    peer = Peer(ros_context)
    spin_nodes(controllers.node, peer.node)
    process = start_ros2_control_node()
    try:
        assert wait(lambda: len(peer.joint_states) > 5, PATIENCE_S), output_tail(process)
        peer.targets = np.full(len(joints), 0.02)
        peer.names = list(joints)
        assert wait(lambda: peer.status and peer.status.link != HardwareStatus.LINK_OK, 10.0)
        controllers.broadcasting = True
        assert wait(lambda: peer.status.link == HardwareStatus.LINK_OK, PATIENCE_S)
        followed = wait(lambda: np.allclose(controllers.last_command(), 0.02), 10.0)
        print(f'\nstarted before the broadcaster: {list(peer.status.fault_messages)}')
        assert followed, f'held down: {list(peer.status.fault_messages)}'
    finally:
        stop_node(process)
