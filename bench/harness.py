"""Shared by bench/run_bench.py and bench/faults.py: real node processes (the commands of
config/system.yaml through backhug_bringup.system), an optional in-process board emulator (so
its command_log and fault_log are readable), and an rclpy peer that records what the graph says.

No pytest here. A DDS domain of its own is reserved (ros-domain-coordinator), as the tests do.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

_domain = None


def reserve_domain() -> str:
    """A ROS_DOMAIN_ID of this process's own (before rclpy is imported), localhost discovery."""
    global _domain
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    if _domain is None:
        from domain_coordinator import domain_id

        start = random.Random(os.getpid()).randrange(100)

        def selector(state=[start]):  # noqa: B006 - a tiny counter
            state[0] += 1
            return state[0] % 100 + 1

        _domain = domain_id(selector)
        os.environ['ROS_DOMAIN_ID'] = str(_domain.__enter__())
    return os.environ['ROS_DOMAIN_ID']


def wait_for(predicate, timeout_s: float, period_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return bool(predicate())


def stats(values) -> dict:
    """median, p99, max (and n) of a list of numbers; empty -> n 0."""
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if a.size == 0:
        return {'n': 0}
    return {
        'n': int(a.size),
        'median': float(np.median(a)),
        'p99': float(np.percentile(a, 99)),
        'max': float(a.max()),
    }


def machine() -> dict:
    """CPU model, cores, RAM, Python, load average now."""
    import psutil

    model = platform.processor() or ''
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    return {
        'cpu': model,
        'cores_logical': psutil.cpu_count(),
        'cores_physical': psutil.cpu_count(logical=False),
        'ram_gb': round(psutil.virtual_memory().total / 2**30, 1),
        'python': platform.python_version(),
        'platform': platform.platform(),
        'loadavg_at_start': [round(x, 2) for x in os.getloadavg()],
    }


class Emulator:
    """BoardEmulator in this process (command_log and fault_log readable)."""

    def __init__(self, folder: Path, **kwargs) -> None:
        from backhug_hw_interface.emulator import BoardEmulator

        self.socket = str(folder / 'board.sock')
        self.board = BoardEmulator(control_socket=self.socket, **kwargs)
        self.port = self.board.start()

    def control(self, command: str) -> str:
        return self.board.control(command)

    def commands_since(self, t0: float) -> list[tuple[float, np.ndarray, np.ndarray]]:
        return [c for c in list(self.board.command_log) if c[0] >= t0]

    def faults_since(self, t0: float) -> list:
        return [f for f in list(self.board.fault_log) if f[0] >= t0]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.board.stop()


class EmulatorProcess:
    """The board emulator in a child process (bench/emulator_proc.py): same reads as Emulator
    through a line protocol, faults through its control socket."""

    def __init__(self, folder: Path) -> None:
        import sys

        self.folder = folder
        self.socket = str(folder / 'board.sock')
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name('emulator_proc.py')), self.socket],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        self.lock = threading.Lock()
        line = self.process.stdout.readline().split()
        if len(line) != 3 or line[0] != 'port':
            raise RuntimeError(f'board emulator did not start: {line}')
        self.port = line[1]
        self.niceness = int(line[2])  # -10: prioritised as a separate board would be

    def control(self, command: str) -> str:
        from backhug_hw_interface.emulator import send_control

        return send_control(self.socket, command)

    def _ask(self, line: str) -> str:
        with self.lock:
            self.process.stdin.write(line + '\n')
            self.process.stdin.flush()
            return self.process.stdout.readline().strip()

    def _log(self, t0: float) -> dict:
        import json

        path = self.folder / 'log.json'
        self._ask(f'log {path} {t0!r}')
        return json.loads(path.read_text())

    def commands_since(self, t0: float) -> list:
        return [(t, np.asarray(p), np.asarray(e)) for t, p, e in self._log(t0)['commands']]

    def faults_since(self, t0: float) -> list:
        return self._log(t0)['faults']

    def positions(self) -> np.ndarray:
        import json

        return np.asarray(json.loads(self._ask('pos')), dtype=float)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.process.stdin.close()
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()


class Nodes:
    """Node processes of config/system.yaml ('sim' entries), with per-node overrides."""

    def __init__(self, log_dir: Path, overrides: dict[str, dict], names=None) -> None:
        from backhug_bringup.system import load_system

        self.system = load_system('sim')
        self.log_dir = log_dir
        self.overrides = overrides
        self.names = list(names or [n.name for n in self.system.nodes])
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, object] = {}

    def start(self, name: str) -> None:
        spec = self.system.node(name)
        extra = {'autostart': True} if spec.lifecycle else {}
        extra.update(self.overrides.get(name, {}))
        log = open(self.log_dir / f'{name}.log', 'a')  # noqa: SIM115 - closed in stop_all
        self.logs[name] = log
        self.processes[name] = subprocess.Popen(
            spec.command(extra), stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def ensure_running(self) -> list[str]:
        started = [n for n in self.names if not self.alive(n)]
        for name in started:
            self.start(name)
        return started

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.processes.items() if p.poll() is None}

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

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f'{name}.log'
        return '\n'.join(path.read_text().splitlines()[-lines:]) if path.exists() else ''


class Peer:
    """An rclpy node in this process: records /joint_states, /finger_commands, /safety/status,
    /hardware/status, /diagnostics; can play program_sequencer (setpoints at 100 Hz +
    heartbeat) and the operator (reset)."""

    def __init__(self, play_sequencer: bool = True, name: str = 'program_sequencer') -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
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

        self.FingerSetpoints, self.Heartbeat, self.String = FingerSetpoints, Heartbeat, String
        self.Trigger, self.SafetyStatus = Trigger, SafetyStatus
        self.names = [j.name for j in load_description('sim').joints]
        self.setpoints = np.zeros(len(self.names))
        self.lock = threading.Lock()
        #: (arrival monotonic, header stamp s, position, effort)
        self.joint_states: deque = deque(maxlen=40_000)
        #: (arrival monotonic, header stamp s, position array)
        self.commands: deque = deque(maxlen=40_000)
        self.status = None
        self.status_log: deque = deque(maxlen=5000)
        self.hardware = None
        self.diagnostics: dict[str, dict] = {}
        self.diagnostics_at = 0.0  # monotonic arrival of the last /diagnostics
        self.context = Context()
        rclpy.init(context=self.context)
        node = self.node = Node(name, context=self.context)
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
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.reset_client = node.create_client(Trigger, qos.SAFETY_RESET_SERVICE)
        self.playing = play_sequencer
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        node.create_timer(0.01, self._publish_setpoints, clock=steady)
        node.create_timer(0.05, self._publish_heartbeat, clock=steady)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.executor.spin_once(timeout_sec=0.05)

    def _on_state(self, msg) -> None:
        now = time.monotonic()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.joint_states.append((now, stamp, np.asarray(msg.position), np.asarray(msg.effort)))

    def _on_command(self, msg) -> None:
        now = time.monotonic()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.commands.append((now, stamp, np.asarray(msg.position_m)))

    def _on_status(self, msg) -> None:
        self.status = msg
        self.status_log.append((time.monotonic(), msg))

    def _on_hardware(self, msg) -> None:
        self.hardware = msg

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
        self.diagnostics_at = time.monotonic()

    def _publish_setpoints(self) -> None:
        if self.playing:
            self.publish_setpoints(self.setpoints)

    def publish_setpoints(self, values) -> None:
        self.setpoint_pub.publish(
            self.FingerSetpoints(name=self.names, force_n=[float(x) for x in values])
        )

    def _publish_heartbeat(self) -> None:
        if self.playing:
            self.beat_pub.publish(self.Heartbeat(node_name='program_sequencer'))

    def fault(self, command: str) -> None:
        self.fault_pub.publish(self.String(data=command))

    def positions(self) -> np.ndarray:
        return self.joint_states[-1][2] if self.joint_states else np.full(len(self.names), np.nan)

    def loads(self) -> np.ndarray:
        return self.joint_states[-1][3] if self.joint_states else np.full(len(self.names), np.nan)

    def true_positions(self, since: float) -> np.ndarray | None:
        """Where the simulated fingers really are (hw_interface's /diagnostics, 1 Hz, mujoco
        only), from a message that arrived after ``since`` (monotonic); else None."""
        if self.diagnostics_at <= since:
            return None
        try:
            return np.array(
                [
                    float(self.diagnostics[f'hw_interface: {name}']['sim_position_mm']) / 1000.0
                    for name in self.names
                ]
            )
        except (KeyError, ValueError):
            return None

    def safety(self) -> tuple[int | None, bool]:
        status = self.status
        return (None, False) if status is None else (status.state, status.latched)

    def reset(self, timeout_s: float = 10.0) -> tuple[bool, str]:
        if not self.reset_client.wait_for_service(timeout_sec=timeout_s):
            return False, 'no reset service'
        future = self.reset_client.call_async(self.Trigger.Request())
        if not wait_for(future.done, timeout_s):
            return False, 'reset did not answer'
        response = future.result()
        return response.success, response.message

    def ready(self, timeout_s: float = 60.0) -> bool:
        """Safety OK and hw_interface not safe-stopped (resetting as needed)."""
        ok = self.SafetyStatus.OK

        def check() -> bool:
            state, latched = self.safety()
            held = self.hardware is None or self.hardware.safe_stopped
            if latched or (state == ok and held):
                self.reset(5.0)
                time.sleep(0.3)
            return state == ok and not held

        return wait_for(check, timeout_s, 0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.executor.shutdown(timeout_sec=1)
            self.node.destroy_node()
        with contextlib.suppress(Exception):
            import rclpy

            rclpy.shutdown(context=self.context)
