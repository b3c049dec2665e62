"""System fault tests: hw_interface (mujoco backend), finger_controllers and safety_monitor as
separate processes with their installed parameter files; this test process plays
program_sequencer (setpoints at 100 Hz and its heartbeat) and the operator (reset).

Each fault must end with every finger retracted; the safety status latches (except when the
monitor itself is killed: then hw_interface and the controllers retract on its silence); a reset
is refused while the fault persists and accepted after it cleared. Times from the fault to the
first retracting command, to the latch and to "every finger below 1 mm" are printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for

PRESS_N = 40.0
RETRACTED_M = 0.001


def _share(package: str, name: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return str(Path(get_package_share_directory(package)) / 'config' / name)


def _exe(package: str, name: str) -> str:
    from ament_index_python.packages import get_package_prefix

    return str(Path(get_package_prefix(package)) / 'lib' / package / name)


COMMANDS = {
    'hw_interface': lambda: [
        _exe('backhug_hw_interface', 'hw_interface'),
        '--ros-args',
        '--params-file',
        _share('backhug_hw_interface', 'hw_interface.yaml'),
        '-p',
        'autostart:=true',
        '-p',
        'fault_injection:=true',
    ],
    'finger_controllers': lambda: [
        _exe('backhug_control', 'finger_controllers'),
        '--ros-args',
        '--params-file',
        _share('backhug_control', 'finger_controllers.yaml'),
        '-p',
        'use_sim_time:=true',
    ],
    'safety_monitor': lambda: [
        _exe('backhug_control', 'safety_monitor'),
        '--ros-args',
        '--params-file',
        _share('backhug_control', 'safety_monitor.yaml'),
    ],
}


class System:
    """The three processes plus this process's rclpy peer."""

    def __init__(
        self,
        log_dir: Path,
        hw_overrides: dict[str, str] | None = None,
        monitor_overrides: dict[str, str] | None = None,
    ) -> None:
        import rclpy
        from rclpy.clock import Clock, ClockType
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from backhug_description import load_description
        from backhug_hw_interface import qos
        from backhug_interfaces.msg import (
            FingerCommands,
            FingerSetpoints,
            HardwareStatus,
            Heartbeat,
            SafetyStatus,
        )

        self.msgs = {'FingerSetpoints': FingerSetpoints, 'Heartbeat': Heartbeat}
        self.Trigger = Trigger
        self.String = String
        self.SafetyStatus = SafetyStatus
        self.log_dir = log_dir
        # Extra hw_interface parameters (e.g. the serial backend); without the mujoco backend
        # there is no /clock, so the controllers run on wall time.
        self.hw_overrides = dict(hw_overrides or {})
        self.monitor_overrides = dict(monitor_overrides or {})
        self.sim_time = self.hw_overrides.get('backend', 'mujoco') == 'mujoco'
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, object] = {}
        self.names = [j.name for j in load_description('sim').joints]
        self.setpoints = np.zeros(len(self.names))
        self.lock = threading.Lock()
        self.joint_states: list[tuple[float, np.ndarray, np.ndarray, float]] = []
        self.commands: list[tuple[float, dict[str, float]]] = []
        self.status = None
        self.status_log: list[tuple[float, object]] = []
        self.hardware = None
        self.heartbeat_seen: dict[str, float] = {}
        self.context = Context()
        rclpy.init(context=self.context)
        node = self.node = Node('program_sequencer', context=self.context)
        self.setpoint_pub = node.create_publisher(
            FingerSetpoints, qos.FINGER_SETPOINTS, qos.STATE_QOS
        )
        self.beat_pub = node.create_publisher(Heartbeat, qos.HEARTBEAT, qos.HEARTBEAT_QOS)
        self.fault_pub = node.create_publisher(String, '/hw_interface/sim_fault', 10)
        node.create_subscription(JointState, qos.JOINT_STATES, self._on_state, qos.STATE_QOS)
        node.create_subscription(
            FingerCommands, qos.FINGER_COMMANDS, self._on_command, qos.STATE_QOS
        )
        node.create_subscription(SafetyStatus, qos.SAFETY_STATUS, self._on_status, qos.LATCHED_QOS)
        node.create_subscription(
            HardwareStatus, qos.HARDWARE_STATUS, self._on_hardware, qos.STATE_QOS
        )
        node.create_subscription(Heartbeat, qos.HEARTBEAT, self._on_beat, qos.HEARTBEAT_QOS)
        self.reset_client = node.create_client(Trigger, qos.SAFETY_RESET_SERVICE)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        node.create_timer(0.01, self._publish_setpoints, clock=steady)
        node.create_timer(0.05, self._publish_heartbeat, clock=steady)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    # -- peer ----------------------------------------------------------------------------------

    def _spin(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.executor.spin_once(timeout_sec=0.05)

    def _on_state(self, msg) -> None:
        with self.lock:
            stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            self.joint_states.append(
                (time.monotonic(), np.asarray(msg.position), np.asarray(msg.effort), stamp_s)
            )
            del self.joint_states[:-2000]

    def _on_command(self, msg) -> None:
        with self.lock:
            targets = dict(zip(msg.name, msg.position_m, strict=True))
            self.commands.append((time.monotonic(), targets))
            del self.commands[:-4000]

    def _on_status(self, msg) -> None:
        with self.lock:
            self.status = msg
            self.status_log.append((time.monotonic(), msg))
            del self.status_log[:-2000]

    def _on_beat(self, msg) -> None:
        self.heartbeat_seen[msg.node_name] = time.monotonic()

    def _on_hardware(self, msg) -> None:
        self.hardware = msg

    def _publish_setpoints(self) -> None:
        msg = self.msgs['FingerSetpoints'](
            name=self.names, force_n=[float(x) for x in self.setpoints]
        )
        self.setpoint_pub.publish(msg)

    def _publish_heartbeat(self) -> None:
        self.beat_pub.publish(self.msgs['Heartbeat'](node_name='program_sequencer'))

    def fault(self, command: str) -> None:
        self.fault_pub.publish(self.String(data=command))

    def state(self):
        with self.lock:
            return self.joint_states[-1] if self.joint_states else None

    def positions(self) -> np.ndarray:
        sample = self.state()
        return np.full(len(self.names), np.nan) if sample is None else sample[1]

    def loads(self) -> np.ndarray:
        sample = self.state()
        return np.full(len(self.names), np.nan) if sample is None else sample[2]

    def safety(self) -> tuple[int | None, bool]:
        status = self.status
        return (None, False) if status is None else (status.state, status.latched)

    def reset(self) -> tuple[bool, str]:
        assert self.reset_client.wait_for_service(timeout_sec=10.0)
        future = self.reset_client.call_async(self.Trigger.Request())
        assert wait_for(future.done, 10.0), 'reset did not answer'
        response = future.result()
        return response.success, response.message

    # -- processes -----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        log = open(self.log_dir / f'{name}.log', 'a')  # noqa: SIM115 - closed in stop_all
        self.logs[name] = log
        command = COMMANDS[name]()
        if name == 'hw_interface':
            command += [arg for k, v in self.hw_overrides.items() for arg in ('-p', f'{k}:={v}')]
        if name == 'safety_monitor':
            overrides = self.monitor_overrides.items()
            command += [arg for k, v in overrides for arg in ('-p', f'{k}:={v}')]
        if name == 'finger_controllers' and not self.sim_time:
            command[-1] = 'use_sim_time:=false'
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def ensure_running(self) -> None:
        for name in COMMANDS:
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                self.start(name)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for log in self.logs.values():
            log.close()
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        with contextlib.suppress(Exception):
            import rclpy

            rclpy.shutdown(context=self.context)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f'{name}.log'
        return '\n'.join(path.read_text().splitlines()[-lines:]) if path.exists() else ''


@pytest.fixture(scope='module')
def system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp('system_faults'))
    try:
        yield system
    finally:
        system.setpoints[:] = 0.0
        system.stop_all()


@pytest.fixture
def pressing(system):
    """Every process up, safety OK (reset if latched), row 5 pressing at 40 N."""
    return press_row_5(system)


def press_row_5(system) -> list[int]:
    """Every process up, safety OK (reset if latched), row 5 pressing at 40 N."""
    system.setpoints[:] = 0.0
    system.ensure_running()
    ok = system.SafetyStatus.OK

    def ready() -> bool:
        state, latched = system.safety()
        held = system.hardware is None or system.hardware.safe_stopped
        if latched or (state == ok and held):
            system.reset()  # also asks hw_interface to release its safe stop
            time.sleep(0.3)
        return state == ok and not held

    assert wait_for(ready, 60.0, 0.1), (
        f'safety never OK: {system.status and list(system.status.reasons)}; heartbeats seen '
        f'{ {n: round(time.monotonic() - t, 2) for n, t in system.heartbeat_seen.items()} } s ago\n'
        + '\n'.join(system.log_tail(n, 10) for n in COMMANDS)
    )
    # hw_interface may still hold the safe stop of the previous test: the monitor's reset asks it.
    with system.lock:
        system.commands.clear()
    fingers = [i for i, n in enumerate(system.names) if n.endswith('_05_joint')]
    system.setpoints[fingers] = PRESS_N
    reached = wait_for(lambda: np.all(np.abs(system.loads()[fingers] - PRESS_N) < 4.0), 30.0)
    assert reached, (
        f'row 5 never reached {PRESS_N} N: loads {system.loads()[fingers]}, '
        f'hardware safe_stopped={system.hardware and system.hardware.safe_stopped}\n'
        + system.log_tail('hw_interface')
    )
    time.sleep(0.5)
    return fingers


def _report(system, fingers, fault_at: float, what: str, commands: bool = True) -> None:
    """Wait for the retract; print fault -> first retracting command / latch / all < 1 mm."""
    retracted = wait_for(lambda: np.nanmax(system.positions()) < RETRACTED_M, 15.0)
    done_at = time.monotonic()
    assert retracted, f'{what}: fingers not retracted: {system.positions()[fingers]}'
    text = f'\n{what}: every finger < 1 mm {done_at - fault_at:.2f} s after the fault'
    latch = [t for t, m in list(system.status_log) if t >= fault_at and m.latched]
    if latch:
        text += f'; latched after {latch[0] - fault_at:.3f} s'
    if commands:
        with system.lock:
            history = [(t, c) for t, c in system.commands]
        before = [c for t, c in history if t < fault_at]
        if before:
            reference = before[-1]
            names = [system.names[i] for i in fingers]
            first = next(
                (
                    t
                    for t, c in history
                    if t >= fault_at and all(c[n] < reference[n] - 0.0002 for n in names)
                ),
                None,
            )
            if first is not None:
                text += f'; first retracting /finger_commands after {first - fault_at:.3f} s'
    print(text)


def test_load_spike_on_one_finger(system, pressing) -> None:
    fingers = pressing
    name = system.names[fingers[0]]
    fault_at = time.monotonic()
    system.fault(f'push {name} 400 1.5')
    assert wait_for(lambda: system.safety()[1], 5.0), 'the spike did not latch'
    status = system.status
    assert status.state == system.SafetyStatus.FAULT
    index = list(status.finger_names).index(name)
    flags = status.finger_flags[index]
    assert flags & (system.SafetyStatus.FLAG_OVERLOAD | system.SafetyStatus.FLAG_RISE_RATE)
    assert name in ' '.join(status.reasons)
    _report(system, fingers, fault_at, f'load spike on {name}')
    ok, message = system.reset()  # the 1.5 s (sim time) push still presses the finger down
    assert not ok and name in message, message
    assert wait_for(lambda: system.reset()[0], 20.0, 0.5), 'reset refused after the push ended'


def test_kill_controllers(system, pressing) -> None:
    fingers = pressing
    fault_at = time.monotonic()
    system.kill('finger_controllers')
    assert wait_for(lambda: system.safety()[1], 5.0)
    assert 'heartbeat of finger_controllers missing' in ' '.join(system.status.reasons)
    _report(system, fingers, fault_at, 'kill -9 finger_controllers', commands=False)
    ok, message = system.reset()
    assert not ok and 'finger_controllers' in message, message
    system.start('finger_controllers')
    assert wait_for(lambda: system.reset()[0], 30.0, 0.5), 'reset refused after the restart'


def test_kill_safety_monitor(system, pressing) -> None:
    fingers = pressing
    fault_at = time.monotonic()
    system.kill('safety_monitor')
    _report(system, fingers, fault_at, 'kill -9 safety_monitor')
    time.sleep(1.0)
    assert np.nanmax(system.positions()) < RETRACTED_M, 'moved without a safety monitor'
    system.start('safety_monitor')
    # The restarted monitor starts in 'waiting' (FAULT, unlatched), then OK once all are seen.
    assert wait_for(lambda: system.safety()[0] == system.SafetyStatus.OK, 30.0, 0.1)


def test_frozen_joint_states(system, pressing) -> None:
    fingers = pressing
    fault_at = time.monotonic()
    system.fault('joint_states off')
    assert wait_for(lambda: system.safety()[1], 5.0)
    assert '/joint_states stale' in ' '.join(system.status.reasons)
    # No /joint_states to watch: the commands show the controllers retracting.
    assert wait_for(
        lambda: system.commands and max(system.commands[-1][1].values()) < RETRACTED_M, 10.0
    ), 'controllers did not retract on frozen /joint_states'
    ok, message = system.reset()
    assert not ok and '/joint_states' in message, message
    system.fault('joint_states on')
    _report(system, fingers, fault_at, 'frozen /joint_states')
    assert wait_for(lambda: system.reset()[0], 10.0, 0.3)


def test_board_estop(system, pressing) -> None:
    """The simulated board's e-stop input (mujoco backend) -> ESTOP latched, retract."""
    fingers = pressing
    fault_at = time.monotonic()
    system.fault('estop on')
    assert wait_for(lambda: system.safety() == (system.SafetyStatus.ESTOP, True), 5.0)
    assert system.status.reasons[0] == 'emergency stop pressed (board)'
    _report(system, fingers, fault_at, 'board e-stop')
    ok, message = system.reset()
    assert not ok and 'emergency stop pressed' in message, message
    system.fault('estop off')
    assert wait_for(lambda: system.reset()[0], 10.0, 0.3), 'reset refused after the release'
    assert wait_for(lambda: system.safety()[0] == system.SafetyStatus.OK, 5.0)
