"""``backhug run``: the whole system on one machine, one treatment, one session folder.

Where ``ros2 launch`` is absent (the PyPI route) and as a convenience on a distro, this starts
the nodes of ``config/system.yaml`` (the same list, executables and parameter files as
``backhug.launch.py``), one process per node — so a crash of one is seen by the others exactly as
on the device, and kill -9 of one node is a real fault — then runs a program and writes the
session folder: ``session.mcap`` (everything on the graph), ``report.png``, ``summary.json``,
``logs/<node>.log`` and, with ``--scan``, ``spinemap.json`` / ``spinemap.png``.

The supervisor itself is a small rclpy node that publishes ``/robot_description``, records the
session, sends the RunProgram goal, prints progress, and watches its children:

- Ctrl-C (SIGINT/SIGTERM): cancel the goal (the sequencer ramps down), ask hw_interface for a
  safe stop, wait until every finger is retracted, then stop the nodes; exit 130.
- a node that dies: the safety path (safety_monitor's heartbeat rule, or hw_interface's stale
  safety status) retracts the fingers; the supervisor waits for that, then exits 3 naming it.
- the program aborted or was rejected: exit 1 with the reason.

Children run in their own session (a terminal's Ctrl-C reaches only the supervisor, which then
retracts in order) and get SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

THINNED_TOPICS = ('/joint_states', '/finger_commands', '/finger_setpoints')
RETRACTED_M = 0.001  # a finger below 1 mm is retracted (the stroke is 40 mm)
EXIT_COMPLETED, EXIT_NOT_COMPLETED, EXIT_BAD_ARGUMENTS, EXIT_NODE_DIED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
#: Load cycles per finger of `--scan full` (0 = the scan's default, 2) and `--scan quick`.
SCAN_CYCLES = {'full': 0, 'quick': 1}


class RunError(RuntimeError):
    """The run cannot start or continue (message says why)."""


def default_sessions_directory() -> Path:
    """``<user data dir>/backhug/sessions`` (platformdirs), e.g. ~/.local/share/backhug/..."""
    import platformdirs

    return Path(platformdirs.user_data_dir('backhug')) / 'sessions'


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog='backhug run', description=__doc__)
    parser.add_argument('--program', default='demo', help='program id or YAML file (demo)')
    parser.add_argument('--intensity', type=float, default=0.6, help='0..1 (0.6)')
    parser.add_argument('--height', type=float, default=1.75, help='user height, m (1.75)')
    parser.add_argument(
        '--weight',
        type=float,
        default=75.0,
        help="user weight, kg: bounds the fingers' summed force (75 = the default simulated "
        'user; 0 = unknown, budgeted as 50 kg)',
    )
    parser.add_argument('--user', default='guest', help='user id: history key (guest)')
    parser.add_argument(
        '--speed',
        type=float,
        default=2.0,
        help='simulation: simulated seconds per wall second (2; higher needs more CPU)',
    )
    parser.add_argument(
        '--hardware', choices=('sim', 'real'), default='sim', help='sim (MuJoCo) or real'
    )
    parser.add_argument('--serial-port', default='', help='real: the motor board device')
    parser.add_argument('--sim-user', default='default', help='simulated user (default)')
    parser.add_argument('--seed', type=int, default=0, help='simulation seed (0)')
    parser.add_argument('--out', type=Path, help='session folder (default: user data dir)')
    parser.add_argument(
        '--scan',
        nargs='?',
        const='full',
        choices=('full', 'quick'),
        help='spine map before and after the program: full (2 load cycles per finger, with '
        'uncertainty; the default) or quick (1 cycle, no uncertainty)',
    )
    parser.add_argument(
        '--history-db',
        type=Path,
        help='spine-map history database (default: the per-user data dir)',
    )
    parser.add_argument('--foxglove', action='store_true', help='serve a Foxglove live view')
    parser.add_argument('--foxglove-port', type=int, default=8765)
    parser.add_argument(
        '--startup-timeout', type=float, default=90.0, help='s to wait for the nodes (90)'
    )
    parser.add_argument('--log-level', default='info', help='nodes log level (info)')
    return parser


@dataclass
class Child:
    """One node process."""

    name: str
    process: subprocess.Popen
    log_path: Path
    required: bool

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is None:
            return 'running'
        if code < 0:
            with contextlib.suppress(ValueError):
                return f'killed by {signal.Signals(-code).name}'
        return f'exited with code {code}'


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Progress:
    """What the supervisor knows of the running system (updated by ROS callbacks)."""

    positions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loads: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: list[str] = field(default_factory=list)
    joint_states_wall: float = 0.0
    sim_time_s: float = 0.0
    safety_state: int | None = None
    safety_latched: bool = False
    safety_reasons: list[str] = field(default_factory=list)
    feedback: object | None = None
    first_setpoint_wall: float | None = None


class Supervisor:
    """Starts the nodes, runs the program, records, reports (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[Child] = []
        self.progress = Progress()
        self.stop_requested = ''
        self.dead: Child | None = None
        self.started_wall = time.monotonic()
        self._lock = threading.Lock()
        self.node = None
        self.recorder = None
        self.live_view = None

    # -- processes -----------------------------------------------------------------------------

    def start_nodes(self, system, session: Path) -> None:
        logs = session / 'logs'
        logs.mkdir(parents=True, exist_ok=True)
        for spec in system.nodes:
            # No lifecycle manager here: lifecycle nodes configure and activate themselves.
            extra: dict = {'autostart': True} if spec.lifecycle else {}
            if spec.name == 'hw_interface':
                extra['sim_speed'] = float(self.args.speed)
                extra['sim_user'] = self.args.sim_user
                extra['sim_seed'] = int(self.args.seed)
                if self.args.hardware == 'sim':
                    extra['fault_injection'] = True  # the fault campaign's way in
                if self.args.serial_port:
                    extra['serial_port'] = self.args.serial_port
            command = spec.command(extra, log_level=self.args.log_level)
            log_path = logs / f'{spec.name}.log'
            log = open(log_path, 'w', encoding='utf-8')  # noqa: SIM115 - owned by the child
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
                env={**os.environ, 'PYTHONUNBUFFERED': '1'},
            )
            log.close()
            self.children.append(Child(spec.name, process, log_path, spec.required))

    def check_children(self) -> Child | None:
        """The first required node that has exited, if any."""
        for child in self.children:
            if child.process.poll() is not None and child.required:
                return child
        return None

    def stop_nodes(self, timeout_s: float = 10.0) -> None:
        """SIGINT every node (they retract and zero their outputs on exit), then SIGKILL."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=5)

    # -- ROS side ------------------------------------------------------------------------------

    def start_ros(self, description, session: Path) -> None:
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from backhug_bringup.recorder import SessionRecorder
        from backhug_hw_interface import qos
        from backhug_interfaces.action import RunProgram, ScanSpine
        from backhug_interfaces.msg import FingerSetpoints, SafetyStatus
        from backhug_interfaces.srv import SafeStop

        rclpy.init(args=None, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        node = Node('backhug_run')
        self.node = node
        description_pub = node.create_publisher(String, qos.ROBOT_DESCRIPTION, qos.LATCHED_QOS)
        description_pub.publish(String(data=description.urdf))
        self.recorder = SessionRecorder(
            node,
            session / 'session.mcap',
            # Streams thinned to 50 Hz of wall time: enough for the report, and the recorder
            # is one of five Python processes sharing the machine.
            max_rate_hz=dict.fromkeys(THINNED_TOPICS, 50.0),
        )
        node.create_subscription(JointState, qos.JOINT_STATES, self._on_joints, qos.STATE_QOS)
        node.create_subscription(SafetyStatus, qos.SAFETY_STATUS, self._on_safety, qos.LATCHED_QOS)
        node.create_subscription(
            FingerSetpoints, qos.FINGER_SETPOINTS, self._on_setpoints, qos.STATE_QOS
        )
        self.run_client = ActionClient(node, RunProgram, '/run_program')
        self.scan_client = ActionClient(node, ScanSpine, '/scan_spine')
        self.safe_stop_client = node.create_client(SafeStop, qos.SAFE_STOP_SERVICE)
        self.safety_reset_client = node.create_client(Trigger, qos.SAFETY_RESET_SERVICE)
        if self.args.foxglove:
            from backhug_bringup.live_view import LiveView

            self.live_view = LiveView(node, description, port=self.args.foxglove_port)
            print(f'Foxglove live view: {self.live_view.url}', flush=True)
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(node)
        self._spin_thread = threading.Thread(target=self._spin, daemon=True)
        self._spin_thread.start()

    def _spin(self) -> None:
        while self.node is not None:
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:
                if self.node is None:
                    return

    def _on_joints(self, msg) -> None:
        with self._lock:
            p = self.progress
            p.names = list(msg.name)
            p.positions = np.asarray(msg.position, dtype=float)
            p.loads = np.asarray(msg.effort, dtype=float)
            p.joint_states_wall = time.monotonic()
            p.sim_time_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if self.live_view is not None:
            self.live_view.publish(msg)

    def _on_safety(self, msg) -> None:
        with self._lock:
            self.progress.safety_state = msg.state
            self.progress.safety_latched = msg.latched
            self.progress.safety_reasons = list(msg.reasons)

    def _on_setpoints(self, msg) -> None:
        if self.progress.first_setpoint_wall is None and any(f > 0 for f in msg.force_n):
            self.progress.first_setpoint_wall = time.monotonic()

    def retracted(self) -> bool:
        with self._lock:
            fresh = time.monotonic() - self.progress.joint_states_wall < 1.0
            positions = self.progress.positions
        return fresh and positions.size > 0 and float(np.max(positions)) < RETRACTED_M

    def wait_until(self, predicate, timeout_s: float, period_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(period_s)
        return predicate()

    def wait_ready(self, timeout_s: float) -> None:
        """Until joint states flow, the safety status is OK and the action server is up."""
        deadline = time.monotonic() + timeout_s
        next_reset = 0.0
        checks = {
            'hw_interface /joint_states': lambda: (
                time.monotonic() - self.progress.joint_states_wall < 1.0
            ),
            'safety_monitor status OK': lambda: self.progress.safety_state in (0, 1),
            'program_sequencer /run_program': self.run_client.server_is_ready,
        }
        while time.monotonic() < deadline:
            dead = self.check_children()
            if dead is not None:
                raise RunError(
                    f'node {dead.name} {dead.exit_description()} during start-up '
                    f'(log: {dead.log_path})'
                )
            if self.stop_requested:
                raise RunError(f'stopped during start-up ({self.stop_requested})')
            if all(check() for check in checks.values()):
                return
            if self.progress.safety_latched and time.monotonic() > next_reset:
                # Latched during start-up (a node stalled while importing), before any motion:
                # acknowledge it like a power-up reset; a persisting condition is refused.
                next_reset = time.monotonic() + 2.0
                self.reset_safety('start-up')
            time.sleep(0.1)
        missing = [name for name, check in checks.items() if not check()]
        reasons = '; '.join(self.progress.safety_reasons)
        raise RunError(
            f'system not ready after {timeout_s:.0f} s: waiting for {", ".join(missing)}'
            + (f' (safety: {reasons})' if reasons else '')
        )

    def clear_startup_latch(self) -> None:
        """A latch during start-up (a node stalled importing, before any motion) is reset once.

        Nothing has moved yet, so the reset is the operator's normal power-up acknowledgement;
        a condition that persists keeps the reset refused and the program is then rejected.
        """

        time.sleep(1.0)  # let start-up stalls show up before the program starts
        if self.progress.safety_state not in (0, 1):
            self.reset_safety('start-up')

    def reset_safety(self, why: str) -> bool:
        from std_srvs.srv import Trigger

        answer = self.call(self.safety_reset_client, Trigger.Request())
        if answer is not None:
            print(f'{why} safety reset: {answer.message}', flush=True)
        return bool(answer and answer.success)

    def call(self, client, request, timeout_s: float = 5.0):
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        future = client.call_async(request)
        self.wait_until(future.done, timeout_s)
        return future.result() if future.done() else None

    def safe_stop(self, reason: str) -> None:
        from backhug_interfaces.srv import SafeStop

        self.call(self.safe_stop_client, SafeStop.Request(reason=reason), timeout_s=2.0)

    def shutdown_ros(self) -> None:
        if self.live_view is not None:
            with contextlib.suppress(Exception):
                self.live_view.close()
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                self.recorder.close()
        node, self.node = self.node, None
        if node is not None:
            self._spin_thread.join(timeout=2)
            with contextlib.suppress(Exception):
                self.executor.shutdown(timeout_sec=1)
                node.destroy_node()
        import rclpy

        with contextlib.suppress(Exception):
            rclpy.shutdown()

    # -- the session ---------------------------------------------------------------------------

    def regions_line(self) -> str:
        from backhug_bringup.report import _regions_of

        with self._lock:
            names, loads = self.progress.names, self.progress.loads
        if not names or loads.size != len(names):
            return ''
        parts = []
        for region, index in _regions_of(names).items():
            parts.append(f'{region.split("_")[0]} {float(np.mean(loads[index])):5.1f} N')
        return ' | '.join(parts)

    def print_progress(self, final: bool = False) -> None:
        feedback = self.progress.feedback
        if feedback is None:
            return
        line = (
            f'{feedback.phase_index + 1}/{feedback.phase_count} {feedback.phase_name:<18.18} '
            f'{feedback.progress * 100:5.1f} %  {feedback.remaining_s:6.0f} s left  '
            f'{self.regions_line()}' + ('  [paused]' if feedback.paused else '')
        )
        if sys.stdout.isatty():
            print('\r' + line[:150].ljust(150), end='\n' if final else '', flush=True)
        else:
            print(line, flush=True)

    def run_program(self, goal) -> tuple[str, str, float]:
        """Send the goal, follow it to the end; (outcome name, reason, completed fraction)."""
        from action_msgs.msg import GoalStatus

        from backhug_bringup.recorder import PROGRAM_RESULT_TOPIC
        from backhug_interfaces.action import RunProgram

        names = {
            RunProgram.Result.COMPLETED: 'COMPLETED',
            RunProgram.Result.CANCELLED: 'CANCELLED',
            RunProgram.Result.ABORTED: 'ABORTED',
            RunProgram.Result.REJECTED: 'REJECTED',
        }

        def on_feedback(message) -> None:
            self.progress.feedback = message.feedback

        send = self.run_client.send_goal_async(goal, feedback_callback=on_feedback)
        if not self.wait_until(send.done, 15.0):
            raise RunError('program_sequencer did not answer the goal within 15 s')
        handle = send.result()
        if not handle.accepted:
            return 'REJECTED', 'program_sequencer rejected the goal', 0.0
        result_future = handle.get_result_async()
        last_print = cancel_started = 0.0
        cancelled = False
        while not result_future.done():
            time.sleep(0.05)
            now = time.monotonic()
            if now - last_print > (0.5 if sys.stdout.isatty() else 5.0):
                last_print = now
                self.print_progress()
            if self.stop_requested and not cancelled:
                cancelled, cancel_started = True, now
                print(f'\nstopping: {self.stop_requested}; ramping down', flush=True)
                handle.cancel_goal_async()
            dead = self.check_children()
            if dead is not None:
                self.dead = dead
                return 'ABORTED', f'node {dead.name} {dead.exit_description()}', 0.0
            if cancelled and now - cancel_started > 15.0:
                return 'CANCELLED', self.stop_requested, 0.0
        self.print_progress(final=True)
        wrapped = result_future.result()
        result = wrapped.result
        self.recorder.record(PROGRAM_RESULT_TOPIC, result)
        outcome = names.get(result.outcome, str(result.outcome))
        if wrapped.status == GoalStatus.STATUS_CANCELED:
            outcome = 'CANCELLED'
        return outcome, result.reason, float(result.completed_fraction)

    def run_scan(self, user, kind: str, description, cycles: int = 0):
        """One spine scan (``cycles`` 0 = the scan's default); a SpineMapResult or None."""
        from backhug_interfaces.action import ScanSpine

        if not self.scan_client.wait_for_server(timeout_sec=10.0):
            print('spine scan: no /scan_spine server', flush=True)
            return None
        goal = ScanSpine.Goal(user=user, measure_stiffness=True, cycles=cycles)
        send = self.scan_client.send_goal_async(goal)
        if not self.wait_until(send.done, 15.0) or not send.result().accepted:
            print('spine scan: goal not accepted', flush=True)
            return None
        print(f'spine scan ({kind}) ...', flush=True)
        result_future = send.result().get_result_async()
        while not result_future.done():
            if self.stop_requested or self.check_children() is not None:
                send.result().cancel_goal_async()
                self.wait_until(result_future.done, 20.0)
                break
            time.sleep(0.1)
        if not result_future.done():
            return None
        return scan_result_from_message(result_future.result().result.map, description)


def scan_result_from_message(msg, description):
    """A SpineMapResult from a SpineMap message (finger offsets from the description)."""
    from backhug_programs.spinemap.model import SpineMapResult

    offsets = {j.name: j.spine_offset_m for j in description.joints}
    data = {
        'user_id': msg.user_id,
        'stamp': datetime.now(UTC).isoformat(timespec='seconds'),
        'complete': msg.complete,
        'reason': msg.reason,
        'band_min_force_n': msg.band_min_force_n,
        'band_max_force_n': msg.band_max_force_n,
        'fingers': [
            {
                'name': f.name,
                'side': f.side,
                'row': f.row,
                'spine_offset_m': offsets.get(f.name, math.nan),
                'contact_height_m': f.contact_height_m,
                'stiffness_n_per_mm': f.stiffness_n_per_mm,
                'uncertainty_n_per_mm': f.stiffness_uncertainty_n_per_mm,
                'cycles': f.cycles,
            }
            for f in msg.fingers
        ],
        'segments': [
            {
                'level': s.level,
                'position_m': s.position_m,
                'stiffness_left_n_per_mm': s.stiffness_left_n_per_mm,
                'stiffness_right_n_per_mm': s.stiffness_right_n_per_mm,
                'uncertainty_left_n_per_mm': s.uncertainty_left_n_per_mm,
                'uncertainty_right_n_per_mm': s.uncertainty_right_n_per_mm,
            }
            for s in msg.segments
        ],
    }
    return SpineMapResult.from_dict(data)


def session_folder(args: argparse.Namespace, program_id: str) -> Path:
    if args.out is not None:
        return args.out
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    return default_sessions_directory() / f'{stamp}_{program_id}'


def run(args: argparse.Namespace) -> int:
    """The whole session; returns the process exit code."""
    from backhug_programs.library import find_program
    from backhug_programs.schema import ProgramError

    from backhug_bringup.program_client import build_goal
    from backhug_bringup.system import SystemConfigError, load_system
    from backhug_description import load_description

    # Everything that can be wrong with the request is found before anything starts.
    try:
        program = find_program(args.program)
        goal = build_goal(program.id, args.intensity, args.height, args.user, args.weight)
        if not (math.isfinite(args.speed) and 0.05 <= args.speed <= 100.0):
            raise ValueError(f'speed: must be within 0.05..100, got {args.speed}')
        if args.hardware == 'real' and not args.serial_port:
            raise ValueError('--hardware real needs --serial-port')
        system = load_system(args.hardware)
        description = load_description(args.hardware)
    except (ProgramError, ValueError, SystemConfigError, LookupError) as exc:
        print(f'backhug run: {exc}', file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    if Path(args.program).suffix in ('.yaml', '.yml'):
        goal.program_id = ''
        goal.program_yaml = Path(args.program).read_text(encoding='utf-8')
    session = session_folder(args, program.id)
    session.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(args)

    def on_signal(signum, frame) -> None:
        supervisor.stop_requested = f'{signal.Signals(signum).name} received'

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(
        f'BackHug: {program.name} ({program.id}) at intensity {args.intensity:g} for a '
        f'{args.height:g} m, {args.weight:g} kg user on hardware {args.hardware}'
        + (f', simulation x{args.speed:g}' if args.hardware == 'sim' else '')
        + f'\nsession folder: {session}',
        flush=True,
    )
    outcome, reason, fraction = 'ABORTED', '', 0.0
    scans = {}
    exit_code = EXIT_NOT_COMPLETED
    try:
        supervisor.start_ros(description, session)
        supervisor.recorder.add_metadata(
            'session',
            {
                'program': program.id,
                'intensity': str(args.intensity),
                'height_m': str(args.height),
                'weight_kg': str(args.weight),
                'user': args.user,
                'hardware': args.hardware,
                'speed': str(args.speed),
            },
        )
        supervisor.start_nodes(system, session)
        supervisor.wait_ready(args.startup_timeout)
        startup_s = time.monotonic() - supervisor.started_wall
        print(f'system up in {startup_s:.1f} s; running {program.id}', flush=True)
        supervisor.clear_startup_latch()
        cycles = SCAN_CYCLES[args.scan] if args.scan else 0
        if args.scan:
            scans['before'] = supervisor.run_scan(goal.user, 'before', description, cycles)
        if not supervisor.stop_requested and supervisor.check_children() is None:
            outcome, reason, fraction = supervisor.run_program(goal)
        if args.scan and outcome == 'COMPLETED' and not supervisor.stop_requested:
            scans['after'] = supervisor.run_scan(goal.user, 'after', description, cycles)
        if supervisor.stop_requested and outcome not in ('CANCELLED', 'ABORTED'):
            outcome, reason = 'CANCELLED', supervisor.stop_requested
        exit_code = EXIT_COMPLETED if outcome == 'COMPLETED' else EXIT_NOT_COMPLETED
    except RunError as exc:
        reason = str(exc)
        print(f'backhug run: {exc}', file=sys.stderr, flush=True)
    finally:
        dead = supervisor.dead or supervisor.check_children()
        if supervisor.node is not None:
            # Whatever happened, the fingers end retracted before anything stops.
            if not supervisor.retracted():
                supervisor.safe_stop(reason or outcome or 'session ended')
                if not supervisor.wait_until(supervisor.retracted, 15.0):
                    print('WARNING: fingers not confirmed retracted', file=sys.stderr)
            if supervisor.retracted():
                time.sleep(0.5)  # the recording gets the retracted state before nodes stop
                print('fingers retracted', flush=True)
        supervisor.stop_nodes()
        supervisor.shutdown_ros()
    if dead is not None:
        reason = f'node {dead.name} {dead.exit_description()} (log: {dead.log_path})'
        exit_code = EXIT_NODE_DIED
    elif supervisor.stop_requested:
        exit_code = EXIT_INTERRUPTED
    finish_session(
        session,
        program,
        args,
        outcome=outcome,
        reason=reason,
        fraction=fraction,
        scans=scans,
        supervisor=supervisor,
    )
    print(f'outcome: {outcome}' + (f' — {reason}' if reason else ''), flush=True)
    # Our handlers stay until the report is written: a late Ctrl-C must not lose the session.
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    return exit_code


def finish_session(session, program, args, *, outcome, reason, fraction, scans, supervisor) -> None:
    """report.png, summary.json (and the spine map) from the closed recording."""
    from backhug_bringup.report import ReportError, make_report, summary_text

    summary: dict = {}
    try:
        summary = make_report(session / 'session.mcap', session / 'report.png')
        print(summary_text(summary), flush=True)
    except (ReportError, OSError, ValueError) as exc:
        print(f'report: {exc}', file=sys.stderr)
    summary.update(
        program=program.id,
        program_name=program.name,
        outcome=outcome,
        reason=reason,
        completed_fraction=fraction,
        intensity=args.intensity,
        height_m=args.height,
        weight_kg=args.weight,
        user=args.user,
        hardware=args.hardware,
        speed=args.speed,
        startup_to_first_setpoint_s=(
            supervisor.progress.first_setpoint_wall - supervisor.started_wall
            if supervisor.progress.first_setpoint_wall
            else None
        ),
        nodes={c.name: c.exit_description() for c in supervisor.children},
    )
    if scans:
        summary['spinemap'] = write_spinemap(session, scans, args.user, args.history_db)
    (session / 'summary.json').write_text(
        json.dumps(summary, indent=2, default=_json_default), encoding='utf-8'
    )


def write_spinemap(session: Path, scans: dict, user: str, history_db: Path | None = None) -> dict:
    from backhug_programs.spinemap import report as spinemap_report
    from backhug_programs.spinemap.history import HistoryStore, record_scan_safely

    before, after = scans.get('before'), scans.get('after')
    if before is None and after is None:
        return {'error': 'no scan result'}
    spinemap_report.write_json(session, before, after)
    spinemap_report.render_png(session, before, after)
    print(spinemap_report.summary_text(before, after), flush=True)
    notes = []
    try:
        store = HistoryStore(history_db)
        for kind, scan in (('before', before), ('after', after)):
            if scan is not None:
                notes.append(record_scan_safely(store, scan, kind, str(session))[1])
    except Exception as exc:
        notes.append(f'history not written: {exc}')
    return {'json': str(session / 'spinemap.json'), 'history': notes}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)
