"""finger_controllers node over DDS: rclpy peers publish /joint_states, /finger_setpoints and
/safety/status (one peer runs the real MuJoCo DeviceSimulation as the device) and check
/finger_commands, /heartbeat, /diagnostics and the parameter service."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from backhug_control.controllers_node import FingerControllersNode
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import JointState

from backhug_hw_interface import qos
from backhug_interfaces.msg import FingerCommands, FingerSetpoints, Heartbeat, SafetyStatus

# Known to fail in the full suite's process on the 2-core CI host (not alone): see issue 5 note.
IN_PROCESS_TIMING = pytest.mark.xfail(
    reason='in-process timing: passes alone, fails in the full make-test process on 2 cores '
    '(0.2-0.3 s code-default liveness limits; see the issue 5 note)',
    strict=False,
)


@pytest.fixture(scope='module')
def description():
    from backhug_description import load_description

    return load_description('sim')


class Peer:
    """Test-side node: the device (static state or a DeviceSimulation), sequencer and monitor."""

    def __init__(self, context, description, sim=None) -> None:
        from rclpy.clock import Clock, ClockType
        from rclpy.node import Node

        self.node = Node('controllers_test_peer', context=context)
        self.names = [j.name for j in description.joints]
        self.sim = sim
        self.position = np.full(len(self.names), 0.01)
        self.effort = np.full(len(self.names), 20.0)
        self.setpoints: np.ndarray | None = None
        self.safety_state: int | None = SafetyStatus.OK
        self.state_order = list(range(len(self.names)))
        self.publish_states = True
        self.lock = threading.Lock()
        self.commands: list[tuple[float, FingerCommands]] = []
        self.heartbeats: list[float] = []
        self.diagnostics: list[DiagnosticArray] = []
        node = self.node
        self.state_pub = node.create_publisher(JointState, qos.JOINT_STATES, qos.STATE_QOS)
        self.setpoint_pub = node.create_publisher(
            FingerSetpoints, qos.FINGER_SETPOINTS, qos.STATE_QOS
        )
        self.safety_pub = node.create_publisher(SafetyStatus, qos.SAFETY_STATUS, qos.LATCHED_QOS)
        node.create_subscription(FingerCommands, qos.FINGER_COMMANDS, self._on_cmd, qos.STATE_QOS)
        node.create_subscription(Heartbeat, qos.HEARTBEAT, self._on_beat, qos.HEARTBEAT_QOS)
        node.create_subscription(
            DiagnosticArray, qos.DIAGNOSTICS, self.diagnostics.append, qos.STATE_QOS
        )
        self.params = node.create_client(SetParameters, '/finger_controllers/set_parameters')
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        node.create_timer(0.005, self._device, clock=steady)
        node.create_timer(0.01, self._sequencer, clock=steady)
        node.create_timer(0.05, self._monitor, clock=steady)

    def _on_cmd(self, msg: FingerCommands) -> None:
        with self.lock:
            self.commands.append((time.monotonic(), msg))
        if self.sim is not None:
            order = [self.names.index(n) for n in msg.name]
            target = np.zeros(len(self.names))
            enable = np.zeros(len(self.names), dtype=bool)
            target[order] = msg.position_m
            enable[order] = msg.enable
            self.sim.set_targets(target, enable)

    def _on_beat(self, msg: Heartbeat) -> None:
        if msg.node_name == 'finger_controllers':
            self.heartbeats.append(time.monotonic())

    def _device(self) -> None:
        if self.sim is not None:
            self.sim.step(0.005)
            self.position, self.effort = self.sim.position_m, self.sim.load_n
        if not self.publish_states:
            return
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = [self.names[i] for i in self.state_order]
        msg.position = [float(self.position[i]) for i in self.state_order]
        msg.velocity = [0.0] * len(self.names)
        msg.effort = [float(self.effort[i]) for i in self.state_order]
        self.state_pub.publish(msg)

    def _sequencer(self) -> None:
        if self.setpoints is not None:
            msg = FingerSetpoints(name=self.names, force_n=[float(x) for x in self.setpoints])
            self.setpoint_pub.publish(msg)

    def _monitor(self) -> None:
        if self.safety_state is not None:
            self.safety_pub.publish(SafetyStatus(state=self.safety_state))

    def last_command(self) -> FingerCommands | None:
        with self.lock:
            return self.commands[-1][1] if self.commands else None

    def targets(self) -> dict[str, float]:
        msg = self.last_command()
        if msg is None:  # NaN compares false: nothing passes before the first command
            return dict.fromkeys(self.names, math.nan)
        return dict(zip(msg.name, msg.position_m, strict=True))

    def set_parameter(self, name: str, value) -> tuple[bool, str]:
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value))
        assert self.params.wait_for_service(timeout_sec=10.0)
        future = self.params.call_async(
            SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
        )
        deadline = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        result = future.result().results[0]
        return result.successful, result.reason


def _start(ros_context, spin_nodes, description, sim=None, **overrides):
    from rclpy.parameter import Parameter as RclpyParameter

    node = FingerControllersNode(
        context=ros_context,
        parameter_overrides=[RclpyParameter(k, value=v) for k, v in overrides.items()],
    )
    peer = Peer(ros_context, description, sim)
    spin_nodes(node, peer.node)
    return node, peer


def test_start_up_retracts_until_every_input_is_fresh_and_safe(
    ros_context, spin_nodes, wait, description
) -> None:
    node, peer = _start(ros_context, spin_nodes, description)
    peer.safety_state = None  # no safety monitor yet
    peer.setpoints = np.full(len(peer.names), 50.0)
    assert wait(lambda: len(peer.commands) > 50, 10.0)
    msg = peer.last_command()
    assert list(msg.name) == peer.names
    assert all(x == 0.0 for x in msg.position_m), 'no safety status: nothing rises'
    assert node.retract_reason == 'no /safety/status yet'
    peer.safety_state = SafetyStatus.FAULT  # waiting at start-up: FAULT, unlatched
    time.sleep(0.3)
    assert all(x == 0.0 for x in peer.last_command().position_m)
    peer.safety_state = SafetyStatus.OK
    # Load 20 N under every finger, 50 N wanted: every target rises.
    assert wait(lambda: min(peer.targets().values()) > 0.0105, 10.0)
    assert node.retract_reason == ''
    # Heartbeat at ~20 Hz from a steady timer.
    beats = np.array(peer.heartbeats)
    window = beats[beats > beats[-1] - 1.0]
    print(f'\nheartbeats in the last second: {len(window)}')
    assert 8 <= len(window) <= 30  # 20 Hz; generous for a shared 2-core machine


@IN_PROCESS_TIMING
def test_closed_loop_over_dds_on_the_simulated_device(
    ros_context, spin_nodes, wait, description
) -> None:
    from backhug_hw_interface.sim import DeviceSimulation, SimulatedUser

    sim = DeviceSimulation(description, SimulatedUser.load('default'), seed=0)
    _, peer = _start(ros_context, spin_nodes, description, sim=sim)
    row7 = [i for i, j in enumerate(description.joints) if j.row == 7]
    setpoints = np.zeros(len(peer.names))
    setpoints[row7] = 40.0
    peer.setpoints = setpoints
    start = time.monotonic()
    assert wait(lambda: np.all(np.abs(peer.effort[row7] - 40.0) < 3.0), 15.0), peer.effort[row7]
    reached = time.monotonic() - start
    loads = []
    for _ in range(50):
        time.sleep(0.02)
        loads.append(peer.effort[row7].copy())
    loads = np.array(loads)
    print(
        f'\nDDS closed loop: 40 N reached in {reached:.2f} s wall; then load '
        f'{loads.mean():.1f} N mean, |error| median {np.median(np.abs(loads - 40)):.2f} N, '
        f'p95 {np.percentile(np.abs(loads - 40), 95):.2f} N (a starved test executor shows up '
        'as stale /joint_states and a retract)'
    )
    assert np.abs(loads.mean() - 40.0) < 3.0
    others = np.delete(np.arange(len(peer.names)), row7)
    assert all(peer.targets()[peer.names[i]] == 0.0 for i in others)
    # Safety says FAULT: every finger retracts, the load goes away.
    peer.safety_state = SafetyStatus.FAULT
    fault_at = time.monotonic()
    assert wait(lambda: max(peer.targets().values()) < 0.003, 5.0)
    print(f'FAULT -> every target below 3 mm in {time.monotonic() - fault_at:.2f} s wall')
    assert wait(lambda: np.all(peer.effort[row7] < 1.0), 5.0)


def test_stale_setpoints_and_silent_safety_retract(ros_context, spin_nodes, wait, description):
    node, peer = _start(ros_context, spin_nodes, description)
    peer.setpoints = np.full(len(peer.names), 60.0)
    assert wait(lambda: min(peer.targets().values()) > 0.012, 10.0)
    peer.setpoints = None  # sequencer died
    stopped = time.monotonic()
    assert wait(lambda: node.retract_reason.startswith('/finger_setpoints'), 5.0)
    detected = time.monotonic() - stopped
    top = max(peer.targets().values())
    assert wait(lambda: max(peer.targets().values()) < top - 0.002, 5.0)
    print(f'\nsetpoints stale detected after {detected:.2f} s (timeout 0.2 s)')
    assert detected >= 0.15
    peer.setpoints = np.full(len(peer.names), 60.0)
    assert wait(lambda: node.retract_reason == '', 5.0)
    peer.safety_state = None  # safety monitor died
    assert wait(lambda: node.retract_reason.startswith('/safety/status not heard'), 5.0)
    peer.safety_state = SafetyStatus.OK
    peer.publish_states = False  # hw_interface died
    assert wait(lambda: node.retract_reason.startswith('/joint_states'), 5.0)
    assert wait(lambda: max(peer.targets().values()) < 0.0005, 5.0)


def test_parameters_validated_and_changed_live(ros_context, spin_nodes, wait, description):
    node, peer = _start(ros_context, spin_nodes, description)
    peer.setpoints = np.full(len(peer.names), 50.0)
    assert wait(lambda: min(peer.targets().values()) > 0.0105, 10.0)
    finger = 'fingers.finger_l_03_joint'
    ok, reason = peer.set_parameter(f'{finger}.max_force_n', 250.0)
    assert not ok and 'max_force_n' in reason, reason
    ok, reason = peer.set_parameter(f'{finger}.admittance_gain_m_s_per_n', math.nan)
    assert not ok and 'admittance_gain_m_s_per_n' in reason and 'nan' in reason.lower(), reason
    ok, reason = peer.set_parameter(f'{finger}.release_threshold_n', 5.0)
    assert not ok and 'release_threshold_n' in reason and 'contact_threshold_n' in reason, reason
    ok, reason = peer.set_parameter('gains.max_force_n', 100.0)
    assert not ok and 'read-only' in reason.lower(), reason
    assert node.bank.gains('finger_l_03_joint').max_force_n == 150.0
    ok, reason = peer.set_parameter(f'{finger}.admittance_gain_m_s_per_n', 0.002)
    assert ok, reason
    assert node.bank.gains('finger_l_03_joint').admittance_gain_m_s_per_n == 0.002
    ok, _ = peer.set_parameter(f'{finger}.enabled', False)
    assert ok

    def disabled() -> bool:
        msg = peer.last_command()
        return not dict(zip(msg.name, msg.enable, strict=True))['finger_l_03_joint']

    assert wait(disabled, 5.0)
    msg = peer.last_command()
    index = list(msg.name).index('finger_l_03_joint')
    assert msg.position_m[index] == 0.0
    assert sum(msg.enable) == len(peer.names) - 1, 'the other fingers stay enabled'


def test_nan_finger_retracts_alone_and_diagnostics_report_it(
    ros_context, spin_nodes, wait, description
) -> None:
    _, peer = _start(ros_context, spin_nodes, description)
    peer.state_order = list(reversed(range(len(peer.names))))  # commands follow this order
    peer.setpoints = np.full(len(peer.names), 50.0)
    assert wait(lambda: min(peer.targets().values()) > 0.0105, 10.0)
    assert list(peer.last_command().name) == list(reversed(peer.names))
    peer.effort[4] = math.nan
    name = peer.names[4]
    assert wait(lambda: peer.targets()[name] < 0.0095, 5.0)
    others = [v for k, v in peer.targets().items() if k != name]
    assert min(others) > 0.0105, 'the other fingers keep tracking'
    peer.diagnostics.clear()

    def finger_status():
        for array in peer.diagnostics:
            for status in array.status:
                if status.name == f'finger_controllers: {name}':
                    return status
        return None

    assert wait(lambda: finger_status() is not None, 5.0)
    status = finger_status()
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == status.ERROR and values['invalid_input'] == 'True'
    assert {'mode', 'contact', 'tracking_error_rms_n', 'saturated_fraction'} <= set(values)
    assert len(peer.diagnostics[-1].status) == len(peer.names) + 1


@pytest.mark.parametrize(
    ('argument', 'expected'),
    [
        ('fingers.finger_l_01_joint.max_force_n:=250.0', 'fingers.finger_l_01_joint.max_force_n'),
        ('fingers.finger_r_13_joint.admittance_gain_m_s_per_n:=.nan', 'admittance_gain_m_s_per_n'),
        ('fingers.finger_l_02_joint.release_threshold_n:=4.0', 'must be below contact_threshold'),
    ],
)
def test_bad_parameter_file_value_exits_naming_it(argument: str, expected: str) -> None:
    import subprocess
    from pathlib import Path

    from ament_index_python.packages import get_package_prefix

    exe = Path(get_package_prefix('backhug_control')) / 'lib/backhug_control/finger_controllers'
    result = subprocess.run(
        [str(exe), '--ros-args', '-p', argument], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr
    assert 'Traceback' not in result.stderr


def test_heartbeat_degraded_when_the_node_clock_stops(ros_context, spin_nodes, wait, description):
    """use_sim_time without /clock: no control cycles, and the heartbeat says so."""
    from rclpy.node import Node

    node, _ = _start(ros_context, spin_nodes, description, use_sim_time=True)
    listener = Node('heartbeat_listener', context=ros_context)
    beats: list[Heartbeat] = []
    listener.create_subscription(
        Heartbeat,
        qos.HEARTBEAT,
        lambda m: beats.append(m) if m.node_name == 'finger_controllers' else None,
        qos.HEARTBEAT_QOS,
    )
    spin_nodes(listener)
    assert wait(lambda: any(b.state == Heartbeat.STATE_DEGRADED for b in beats), 10.0)
    degraded = next(b for b in beats if b.state == Heartbeat.STATE_DEGRADED)
    assert 'control loop idle' in degraded.detail
    assert node.cycle_count == 0
