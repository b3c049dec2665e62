"""hw_interface over real DDS on the MuJoCo device: loads, guards, safe stop and reset.

The node runs as its own process, as in the system; a peer node in the test plays the safety
monitor (SafetyStatus at 20 Hz) and the controllers (FingerCommands at 100 Hz) and reads the
node's /joint_states, /hardware/status and /diagnostics. Every guard test injects its fault and
checks that the fingers end retracted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from backhug_hw_interface import qos
from backhug_interfaces.msg import FingerCommands, HardwareStatus, SafetyStatus
from backhug_interfaces.srv import SafeStop

RETRACTED_M = 0.001


class Peer:
    """Safety monitor + controllers stand-in, and a listener of the node's outputs."""

    def __init__(self, context) -> None:
        self.node = Node('peer', context=context)
        self.safety_state = SafetyStatus.OK
        self.send_safety = True
        self.send_commands = True
        self.names: list[str] = []
        self.targets = np.zeros(0)
        self.enable: list[bool] | None = None
        self.joint_states: list[JointState] = []
        self.status: HardwareStatus | None = None
        self.device_diagnostics: dict[str, str] = {}
        self.sim_time_s = 0.0
        self.lock = threading.Lock()
        n = self.node
        self.safety_pub = n.create_publisher(SafetyStatus, qos.SAFETY_STATUS, qos.LATCHED_QOS)
        self.command_pub = n.create_publisher(FingerCommands, qos.FINGER_COMMANDS, qos.STATE_QOS)
        n.create_subscription(JointState, qos.JOINT_STATES, self._on_joints, qos.STATE_QOS)
        n.create_subscription(HardwareStatus, qos.HARDWARE_STATUS, self._on_status, qos.STATE_QOS)
        n.create_subscription(Clock, qos.CLOCK, self._on_clock, qos.STATE_QOS)
        n.create_subscription(DiagnosticArray, qos.DIAGNOSTICS, self._on_diag, qos.STATE_QOS)
        n.create_timer(0.05, self._publish_safety)
        n.create_timer(0.01, self._publish_command)
        self.safe_stop = n.create_client(SafeStop, qos.SAFE_STOP_SERVICE)
        self.reset = n.create_client(Trigger, qos.HW_RESET_SERVICE)

    def _publish_safety(self) -> None:
        if self.send_safety:
            self.safety_pub.publish(
                SafetyStatus(state=self.safety_state, latched=self.safety_state >= 2)
            )

    def _publish_command(self) -> None:
        if not self.send_commands or not self.names:
            return
        enable = self.enable if self.enable is not None else [True] * len(self.names)
        self.command_pub.publish(
            FingerCommands(
                name=self.names, position_m=[float(v) for v in self.targets], enable=enable
            )
        )

    def _on_joints(self, msg: JointState) -> None:
        with self.lock:
            self.joint_states.append(msg)
            del self.joint_states[:-400]

    def _on_status(self, msg: HardwareStatus) -> None:
        self.status = msg

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == 'hw_interface: device':
                self.device_diagnostics = {kv.key: kv.value for kv in status.values}

    def diag(self, key: str) -> str:
        return self.device_diagnostics.get(key, '')

    def _on_clock(self, msg: Clock) -> None:
        self.sim_time_s = msg.clock.sec + msg.clock.nanosec * 1e-9

    def latest(self) -> JointState:
        with self.lock:
            return self.joint_states[-1]

    def positions(self) -> np.ndarray:
        return np.asarray(self.latest().position)

    def call(self, client, request, timeout_s: float = 15.0):
        assert client.wait_for_service(timeout_sec=timeout_s), f'{client.srv_name} not served'
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f'{client.srv_name} did not answer'
        return future.result()


def executable() -> str:
    from ament_index_python.packages import get_package_prefix

    return str(
        Path(get_package_prefix('backhug_hw_interface')) / 'lib/backhug_hw_interface/hw_interface'
    )


def start_node(**overrides) -> subprocess.Popen:
    params = {'autostart': True, 'sim_speed': 2.0, 'fault_injection': True, **overrides}
    args = [executable(), '--ros-args']
    for key, value in params.items():
        args += ['-p', f'{key}:={str(value).lower() if isinstance(value, bool) else value}']
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_node(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.stdout.read()


@pytest.fixture
def system(ros_context, spin_nodes, wait):
    process = start_node()
    peer = Peer(ros_context)
    spin_nodes(peer.node)
    try:
        assert wait(lambda: len(peer.joint_states) > 5, 30.0), 'no /joint_states from hw_interface'
        peer.names = list(peer.latest().name)
        peer.targets = np.zeros(len(peer.names))
        yield process, peer
    finally:
        output = stop_node(process)
        if os.environ.get('BACKHUG_TEST_VERBOSE'):
            print(output)


@pytest.fixture(scope='module')
def contact_heights() -> np.ndarray:
    from backhug_hw_interface.sim import DeviceSimulation

    from backhug_description import load_description

    sim = DeviceSimulation(load_description('sim'), 'default', seed=0)
    return sim.true_contact_height_m(), sim.user.trunk_mass_kg * 9.80665


def raise_fingers(peer: Peer, heights: np.ndarray, wait, sim_s: float = 3.0) -> None:
    peer.targets = np.minimum(heights + 0.015, 0.04)
    start = peer.sim_time_s
    assert wait(lambda: peer.sim_time_s > start + sim_s, 60.0), 'simulated time stalled'
    assert peer.positions().max() > 0.01, 'fingers did not rise'


def assert_retracts(peer: Peer, wait, what: str, timeout_s: float = 15.0) -> float:
    started = time.monotonic()
    assert wait(lambda: peer.positions().max() < RETRACTED_M, timeout_s), (
        f'{what}: fingers not retracted, max position {peer.positions().max():.4f} m'
    )
    elapsed = time.monotonic() - started
    print(f'\n{what}: retracted within {elapsed:.2f} s wall')
    return elapsed


def test_touching_fingers_carry_the_simulated_body_weight(system, contact_heights, wait) -> None:
    _process, peer = system
    heights, weight_n = contact_heights
    raise_fingers(peer, heights, wait, sim_s=3.0)

    def at_rest() -> bool:  # the torso has stopped bouncing: the sum is steady over 0.5 s
        with peer.lock:
            sums = [sum(m.effort) for m in peer.joint_states[-100:]]
        return len(sums) == 100 and float(np.std(sums)) < 0.002 * float(np.mean(sums))

    assert wait(at_rest, 60.0), 'the loads never settled'
    with peer.lock:
        total = float(np.mean([sum(m.effort) for m in peer.joint_states[-100:]]))
    assert wait(lambda: peer.diag('rejected_commands') == '0', 5.0)
    print(f'\nload sum {total:.1f} N vs body weight {weight_n:.1f} N ({total / weight_n:.4f})')
    assert total == pytest.approx(weight_n, rel=0.02)
    assert peer.status is not None and peer.status.link == HardwareStatus.LINK_OK
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in peer.joint_states]
    assert np.all(np.diff(stamps) > 0), '/joint_states stamps must advance in simulated time'


def test_stale_commands_are_held_then_retracted(system, contact_heights, wait) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    peer.send_commands = False
    assert_retracts(peer, wait, 'controllers silent')


def test_no_safety_status_means_no_motion_and_retract(system, contact_heights, wait) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    peer.send_safety = False
    assert_retracts(peer, wait, 'safety monitor silent')
    # Commands keep coming, but without a safety monitor nothing rises again.
    time.sleep(1.0)
    assert peer.positions().max() < RETRACTED_M
    # A monitor that comes back (restarted after a crash) does not resume motion by itself.
    peer.send_safety = True
    time.sleep(1.0)
    assert peer.positions().max() < RETRACTED_M, 'motion resumed without a reset'
    assert peer.status.safe_stopped
    assert peer.call(peer.reset, Trigger.Request()).success
    assert wait(lambda: peer.positions().max() > 0.005, 20.0), 'no motion after the reset'


def test_safety_fault_retracts(system, contact_heights, wait) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    peer.safety_state = SafetyStatus.FAULT
    assert_retracts(peer, wait, 'safety FAULT')


def test_bad_commands_are_rejected_without_motion(system, wait) -> None:
    _process, peer = system
    count = len(peer.names)
    peer.targets = np.full(count, np.nan)
    assert wait(lambda: 'must be finite' in peer.diag('last_rejection'), 10.0)
    peer.targets = np.full(count - 1, 0.02)  # 26 names, 25 positions
    assert wait(lambda: 'differ in length' in peer.diag('last_rejection'), 10.0)
    peer.names, peer.enable = peer.names[:-1], [True] * (count - 1)  # a joint missing
    assert wait(lambda: 'the device has 26' in peer.diag('last_rejection'), 10.0)
    time.sleep(0.5)
    assert peer.positions().max() < RETRACTED_M, 'a rejected command moved a finger'


def test_targets_beyond_the_limits_are_clamped_and_reported(system, wait) -> None:
    _process, peer = system
    peer.targets = np.full(len(peer.names), 0.5)
    peer.targets[1] = -0.2
    assert wait(lambda: 'clamped' in peer.diag('last_clamp'), 10.0)
    assert int(peer.diag('clamped_commands')) > 3
    start = peer.sim_time_s
    assert wait(lambda: peer.sim_time_s > start + 2.0, 30.0)
    positions = peer.positions()
    assert positions.max() <= 0.040 + 1e-4, 'a finger went beyond its upper limit'
    assert positions[1] >= -1e-4


def test_safe_stop_holds_until_reset_which_needs_a_clear_safety_status(
    system, contact_heights, wait
) -> None:
    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    answer = peer.call(peer.safe_stop, SafeStop.Request(reason='test: load spike'))
    assert answer.success
    assert_retracts(peer, wait, 'safe_stop service')
    assert wait(lambda: peer.status.safe_stopped, 5.0)
    assert 'load spike' in ' '.join(peer.status.fault_messages)
    peer.safety_state = SafetyStatus.FAULT
    time.sleep(0.2)
    refused = peer.call(peer.reset, Trigger.Request())
    assert not refused.success and 'FAULT' in refused.message
    assert peer.positions().max() < RETRACTED_M
    peer.safety_state = SafetyStatus.OK
    time.sleep(0.2)
    accepted = peer.call(peer.reset, Trigger.Request())
    assert accepted.success, accepted.message
    assert wait(lambda: peer.positions().max() > 0.01, 20.0), 'no motion after a reset'


def test_board_estop_retracts_and_needs_a_reset(system, contact_heights, wait) -> None:
    from std_msgs.msg import String

    _process, peer = system
    raise_fingers(peer, contact_heights[0], wait)
    faults = peer.node.create_publisher(String, '/hw_interface/sim_fault', 10)
    time.sleep(0.3)
    faults.publish(String(data='estop on'))
    assert_retracts(peer, wait, 'board emergency stop')
    assert wait(lambda: peer.status.estop and peer.status.safe_stopped, 5.0)
    faults.publish(String(data='estop off'))
    assert wait(lambda: not peer.status.estop, 5.0)
    time.sleep(1.0)
    assert peer.positions().max() < RETRACTED_M, 'moved after e-stop release without reset'
    assert peer.call(peer.reset, Trigger.Request()).success


def test_bad_backend_parameter_is_refused_with_its_name() -> None:
    process = start_node(backend='teleport')
    try:
        process.wait(timeout=30)
    finally:
        output = stop_node(process)
    assert process.returncode != 0
    assert "backend must be one of ('mujoco', 'serial', 'ros2_control'), got 'teleport'" in output
