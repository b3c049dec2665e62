"""Shared by the hw_interface node tests (mujoco, serial): the node as a process and a peer.

The node runs as its own process, as in the system; ``Peer`` is an rclpy node in the test that
plays the safety monitor (SafetyStatus at 20 Hz) and the controllers (FingerCommands at 100 Hz)
and listens to the node's /joint_states, /hardware/status, /diagnostics and /clock.

Test modules import this file by path (pytest runs with --import-mode=importlib):

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hw_node_support import Peer, start_node, ...
"""

from __future__ import annotations

import functools
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
        self.joint_state_count = 0  # every /joint_states message heard (joint_states keeps 400)
        self.status: HardwareStatus | None = None
        self.statuses: list[HardwareStatus] = []  # every /hardware/status heard, in order
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
            self.joint_state_count += 1
            del self.joint_states[:-400]

    def _on_status(self, msg: HardwareStatus) -> None:
        self.status = msg
        with self.lock:
            self.statuses.append(msg)

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


def executable(name: str = 'hw_interface') -> str:
    """An executable of backhug_hw_interface (hw_interface, backhug_board_emulator)."""
    from ament_index_python.packages import get_package_prefix

    return str(Path(get_package_prefix('backhug_hw_interface')) / 'lib/backhug_hw_interface' / name)


def start_node(**overrides) -> subprocess.Popen:
    """hw_interface as a process with these parameters (defaults: autostart, mujoco at x2).

    Its output is read on a thread (a full pipe would block the node); ``stop_node`` returns it,
    ``output_tail`` shows the end of it while it runs.
    """
    params = {'autostart': True, 'sim_speed': 2.0, 'fault_injection': True, **overrides}
    args = [executable(), '--ros-args']
    for key, value in params.items():
        args += ['-p', f'{key}:={str(value).lower() if isinstance(value, bool) else value}']
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.lines = []

    def read() -> None:
        for line in process.stdout:
            process.lines.append(line)

    process.reader = threading.Thread(target=read, daemon=True)
    process.reader.start()
    return process


def output_tail(process: subprocess.Popen, lines: int = 20) -> str:
    return ''.join(list(process.lines)[-lines:])


def stop_node(process: subprocess.Popen) -> str:
    """SIGINT (the node retracts and exits), SIGKILL after 10 s; returns the node's output."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.reader.join(timeout=5)
    return ''.join(process.lines)


@functools.cache
def contact_heights_and_weight() -> tuple[np.ndarray, float]:
    """Where each finger tip meets the default user's back (m, joint order) and its weight, N."""
    from backhug_hw_interface.sim import DeviceSimulation

    from backhug_description import load_description

    sim = DeviceSimulation(load_description('sim'), 'default', seed=0)
    return sim.true_contact_height_m(), sim.user.trunk_mass_kg * 9.80665


def touching_targets(heights: np.ndarray) -> np.ndarray:
    """Targets 15 mm past where each tip meets the back: the fingers lift the torso off the pad."""
    return np.minimum(heights + 0.015, 0.04)


def raise_fingers(
    peer: Peer,
    heights: np.ndarray,
    wait,
    sim_s: float = 3.0,
    sim_time: Callable[[], float] | None = None,
) -> None:
    """Command the touching targets until the fingers rise, then for ``sim_s`` more of
    simulated time (``/clock`` unless ``sim_time`` reads it elsewhere, e.g. from the board
    emulator). The rise is awaited, not timed: the node hears the peer's safety status only once
    DDS has matched them (seen: 4.5 s after /joint_states reached the peer on a loaded host)."""
    clock = sim_time or (lambda: peer.sim_time_s)
    peer.targets = touching_targets(heights)
    assert wait(lambda: peer.positions().max() > 0.01, 60.0), 'fingers did not rise'
    start = clock()
    assert wait(lambda: clock() > start + sim_s, 60.0), 'simulated time stalled'


def assert_retracts(peer: Peer, wait, what: str, timeout_s: float = 15.0) -> float:
    started = time.monotonic()
    assert wait(lambda: peer.positions().max() < RETRACTED_M, timeout_s), (
        f'{what}: fingers not retracted, max position {peer.positions().max():.4f} m'
    )
    elapsed = time.monotonic() - started
    print(f'\n{what}: retracted within {elapsed:.2f} s wall')
    return elapsed


def _parameter_defaults() -> dict:
    from backhug_hw_interface.node import PARAMETERS

    return {name: default for name, (default, _descriptor) in PARAMETERS.items()}


#: hw_interface's parameter defaults (backhug_hw_interface.node.PARAMETERS).
PARAMETER_DEFAULTS = _parameter_defaults()
