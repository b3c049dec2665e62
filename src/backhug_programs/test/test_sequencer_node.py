"""program_sequencer over DDS: the test talks to it with real rclpy clients, as `backhug run` does.

Programs are short inline YAML so each scenario takes seconds of wall time; the node runs on the
wall clock here (the MuJoCo system tests run it on simulated time).
"""

from __future__ import annotations

import math
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from backhug_programs.sequencer_node import ProgramSequencer
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from backhug_hw_interface import qos
from backhug_interfaces.action import RunProgram, ScanSpine
from backhug_interfaces.msg import FingerSetpoints, Heartbeat, SafetyStatus, UserProfile
from backhug_interfaces.srv import SetIntensity

RATE_LIMIT_N_S = 200.0


def program_yaml(pattern: str = 'sustained_hold', duration_s: float = 4.0, force_n: float = 40.0):
    frequency = '' if pattern == 'sustained_hold' else '\n    frequency_hz: 1.0'
    return (
        'id: inline_test\nname: Inline test\ndescription: A short program for the node tests.\n'
        'phases:\n'
        f'  - name: work\n    region: T4-T9\n    pattern: {pattern}\n    force_n: {force_n}'
        f'{frequency}\n    duration_s: {duration_s}\n    ramp_s: 0.5\n'
    )


class Client:
    """The test's side of the graph: action client, service clients, subscriptions."""

    def __init__(self, node) -> None:
        self.node = node
        self.action = ActionClient(node, RunProgram, 'run_program')
        self.pause = node.create_client(Trigger, '/program_sequencer/pause')
        self.resume = node.create_client(Trigger, '/program_sequencer/resume')
        self.set_intensity = node.create_client(SetIntensity, '/program_sequencer/set_intensity')
        self.safety = node.create_publisher(SafetyStatus, qos.SAFETY_STATUS, qos.LATCHED_QOS)
        self.lock = threading.Lock()
        self.setpoints: list[tuple[float, float, np.ndarray]] = []  # (stamp, wall, forces)
        self.heartbeats: list[Heartbeat] = []
        self.feedback: list[RunProgram.Feedback] = []
        node.create_subscription(
            FingerSetpoints, qos.FINGER_SETPOINTS, self._on_setpoints, qos.STATE_QOS
        )
        node.create_subscription(Heartbeat, qos.HEARTBEAT, self._on_heartbeat, qos.HEARTBEAT_QOS)
        self.diagnostics: list = []
        node.create_subscription(
            DiagnosticArray, qos.DIAGNOSTICS, self._on_diagnostics, qos.STATE_QOS
        )

    def _on_setpoints(self, msg: FingerSetpoints) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self.lock:
            self.setpoints.append((stamp, time.monotonic(), np.array(msg.force_n)))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.extend(s for s in msg.status if s.name.startswith('program_sequencer'))

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        if msg.node_name == 'program_sequencer':
            with self.lock:
                self.heartbeats.append(msg)

    def publish_safety(self, state: int, reasons: list[str] | None = None) -> None:
        msg = SafetyStatus(state=state, latched=state >= SafetyStatus.FAULT)
        msg.reasons = reasons or []
        self.safety.publish(msg)

    def forces_since(self, wall: float) -> np.ndarray:
        with self.lock:
            rows = [f for _s, w, f in self.setpoints if w >= wall]
        return np.array(rows)

    def latest(self) -> np.ndarray:
        with self.lock:
            return self.setpoints[-1][2]

    def send(self, wait, *, yaml_text='', program_id='', intensity=0.5, height_m=1.75):
        goal = RunProgram.Goal(program_id=program_id, program_yaml=yaml_text, intensity=intensity)
        goal.user = UserProfile(
            user_id=f'test-{uuid.uuid4().hex[:6]}',
            height_m=height_m,
            c7_position_m=math.nan,
            max_force_n=0.0,
            weight_kg=250.0,  # budget 835 N: the test programs play as written
        )
        assert self.action.wait_for_server(timeout_sec=10.0)
        future = self.action.send_goal_async(goal, feedback_callback=self._on_feedback)
        assert wait(future.done, 10.0)
        handle = future.result()
        assert handle.accepted
        return handle, handle.get_result_async()

    def _on_feedback(self, message) -> None:
        with self.lock:
            self.feedback.append(message.feedback)

    def call(self, wait, client, request):
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(request)
        assert wait(future.done, 10.0)
        return future.result()


@pytest.fixture
def graph(ros_context, spin_nodes, wait):
    sequencer = ProgramSequencer(
        context=ros_context,
        parameter_overrides=[
            Parameter('transition_ramp_s', value=0.5),
            Parameter('intensity_rate_per_s', value=0.5),
            Parameter('pause_force_n', value=5.0),
            Parameter('max_force_rate_n_s', value=RATE_LIMIT_N_S),
            Parameter('safety_status_wait_s', value=1.0),
        ],
    )
    from rclpy.node import Node

    client = Client(Node('sequencer_test_client', context=ros_context))
    spin_nodes(sequencer, client.node)
    assert wait(lambda: len(client.setpoints) > 5, 10.0), 'no idle setpoints'
    return sequencer, client


def transition_s(client: Client, since: float, begun, ended) -> float:
    """Wall time from the first sample whose peak force satisfies ``begun`` to ``ended``."""
    with client.lock:
        rows = [(w, float(f.max())) for _s, w, f in client.setpoints if w >= since]
    start = next(w for w, peak in rows if begun(peak))
    return next(w for w, peak in rows if w >= start and ended(peak)) - start


def safety_ok(graph, wait) -> None:
    sequencer, client = graph
    client.publish_safety(SafetyStatus.OK)
    assert wait(lambda: sequencer._safety_state == SafetyStatus.OK, 5.0)


def result_of(wait, future, timeout_s=20.0):
    assert wait(future.done, timeout_s), 'no result'
    return future.result().result


def assert_rate_limited(rows: list[tuple[float, float, np.ndarray]]) -> None:
    stamps = np.array([s for s, _w, _f in rows])
    forces = np.array([f for _s, _w, f in rows])
    dt = np.diff(stamps)
    assert np.all(dt > 0)
    rate = np.abs(np.diff(forces, axis=0)).max(axis=1) / dt
    assert rate.max() <= RATE_LIMIT_N_S * 1.001, rate.max()


def test_program_runs_to_completion_with_feedback_and_a_second_goal_is_rejected(graph, wait):
    _sequencer, client = graph
    assert np.all(client.latest() == 0.0) and client.latest().size == 26  # idle: zero
    asked = time.monotonic()
    _h, future = client.send(wait, yaml_text=program_yaml(), intensity=0.5)
    refused = result_of(wait, future, 5.0)
    assert refused.outcome == RunProgram.Result.REJECTED
    assert 'no /safety/status' in refused.reason  # no safety status: nothing moves
    assert time.monotonic() - asked >= 0.9  # after waiting safety_status_wait_s for one
    assert np.all(client.forces_since(asked) == 0.0)

    # A goal that arrives just before the first status waits for it (bring-up order).
    start = time.monotonic()
    _handle, future = client.send(
        wait, yaml_text=program_yaml('rhythmic_press', duration_s=3.0), intensity=0.5
    )
    client.publish_safety(SafetyStatus.OK)
    assert wait(lambda: len(client.feedback) >= 2, 5.0)
    _h2, second = client.send(wait, program_id='demo', intensity=0.5)
    busy = result_of(wait, second, 5.0)
    assert busy.outcome == RunProgram.Result.REJECTED and 'busy' in busy.reason

    result = result_of(wait, future)
    assert result.outcome == RunProgram.Result.COMPLETED, result.reason
    assert result.reason == '' and result.completed_fraction == pytest.approx(1.0)
    assert result.duration_s == pytest.approx(3.0, abs=0.05)
    time.sleep(0.2)
    with client.lock:
        rows = [r for r in client.setpoints if r[1] >= start]
        feedback = list(client.feedback)
        beats = list(client.heartbeats)
    forces = np.array([f for _s, _w, f in rows])
    # 20 N peak = 40 N x 0.5, oscillating between 10 and 20 N on the T4–T9 rows only.
    assert forces.max() == pytest.approx(20.0, abs=0.3)
    assert forces.max() <= 20.0 + 1e-9
    assert 14 <= np.count_nonzero(forces.max(axis=0) == 0.0) <= 20  # 3-6 rows x 2 sides
    assert_rate_limited(rows)
    assert np.all(forces[-1] == 0.0)  # idle again
    assert 5 <= len(feedback) <= 100  # ~5 Hz over 3 s (longer on a loaded machine)
    assert feedback[-1].phase_name == 'work' and feedback[-1].phase_count == 1
    progress = [f.progress for f in feedback]
    assert progress == sorted(progress) and not any(f.paused for f in feedback)
    assert all(0.49 <= f.intensity <= 0.51 for f in feedback)
    with client.lock:
        diagnostics = list(client.diagnostics)
    assert diagnostics and any('inline_test' in d.message for d in diagnostics)
    # Setpoints at ~100 Hz and heartbeats at ~20 Hz.
    span = rows[-1][1] - rows[0][1]
    assert 25 <= len(rows) / span <= 130  # 100 Hz nominal; 2 shared cores under load drop ticks
    assert len(beats) >= 20 and beats[-1].sequence > beats[0].sequence


def test_bad_goals_are_rejected_with_the_reason_and_move_nothing(graph, wait):
    _sequencer, client = graph
    safety_ok(graph, wait)
    start = time.monotonic()
    bad_yaml = program_yaml().replace('force_n: 40.0', 'force_n: 400')
    cases = [
        ({'yaml_text': bad_yaml}, '<goal program_yaml>:8: phases[0].force_n'),
        ({'yaml_text': 'id: [unclosed\n'}, 'invalid YAML'),
        ({'program_id': 'no_such_program'}, 'no library program'),
        ({'program_id': 'demo', 'intensity': 1.5}, 'intensity'),
        ({'program_id': 'demo', 'intensity': math.nan}, 'intensity'),
        ({'program_id': 'demo', 'height_m': math.nan}, 'height_m'),
        ({'program_id': 'demo', 'height_m': 3.0}, 'height_m'),
        ({}, 'names no program'),
    ]
    for kwargs, words in cases:
        _h, future = client.send(wait, **kwargs)
        result = result_of(wait, future, 5.0)
        assert result.outcome == RunProgram.Result.REJECTED, kwargs
        assert words in result.reason, (kwargs, result.reason)
    assert np.all(client.forces_since(start) == 0.0)


def test_pause_holds_low_force_and_resume_continues(graph, wait):
    _sequencer, client = graph
    safety_ok(graph, wait)
    start = time.monotonic()
    _h, future = client.send(wait, yaml_text=program_yaml(duration_s=4.0), intensity=1.0)
    assert wait(lambda: client.latest().max() >= 39.9, 5.0)
    assert client.call(wait, client.pause, Trigger.Request()).success
    assert wait(lambda: client.latest().max() <= 5.0 + 1e-9, 3.0)
    reached = time.monotonic()
    time.sleep(1.0)
    held = client.forces_since(reached)
    assert held.max() <= 5.0 + 1e-9 and held.max() >= 4.9  # light contact, not retracted
    with client.lock:
        frozen = [f.elapsed_s for f in client.feedback if f.paused]
    assert len(frozen) >= 3 and max(frozen) - min(frozen) < 0.05  # program clock held
    assert not client.call(wait, client.pause, Trigger.Request()).success  # already paused
    assert client.call(wait, client.resume, Trigger.Request()).success
    assert wait(lambda: client.latest().max() >= 39.9, 3.0)
    result = result_of(wait, future)
    assert result.outcome == RunProgram.Result.COMPLETED
    assert result.duration_s == pytest.approx(4.0, abs=0.05)  # program time: pause excluded
    assert time.monotonic() - start > 5.0
    with client.lock:
        rows = [r for r in client.setpoints if r[1] >= start]
    assert_rate_limited(rows)
    assert not client.call(wait, client.resume, Trigger.Request()).success  # nothing runs


def test_set_intensity_ramps_and_cancel_ramps_down(graph, wait):
    _sequencer, client = graph
    safety_ok(graph, wait)
    start = time.monotonic()
    handle, future = client.send(wait, yaml_text=program_yaml(duration_s=30.0), intensity=1.0)
    assert wait(lambda: client.latest().max() >= 39.9, 5.0)
    refused = client.call(wait, client.set_intensity, SetIntensity.Request(intensity=1.5))
    assert not refused.success and 'intensity' in refused.message
    changed = time.monotonic()
    response = client.call(wait, client.set_intensity, SetIntensity.Request(intensity=0.5))
    assert response.success and response.ramp_time_s == pytest.approx(1.0, abs=0.05)
    assert wait(lambda: abs(client.latest().max() - 20.0) < 0.05, 6.0)
    # The slew limiter alone would pass 40 → 20 N in 0.1 s: the intensity ramp takes ~1 s.
    assert transition_s(client, changed, lambda peak: peak < 39.9, lambda peak: peak <= 20.05) > 0.8
    with client.lock:
        assert any(0.55 < f.intensity < 0.95 for f in client.feedback)

    cancelled = time.monotonic()
    handle.cancel_goal_async()
    result = result_of(wait, future, 5.0)
    assert result.outcome == RunProgram.Result.CANCELLED
    assert result.completed_fraction < 0.5
    # Ramped down over transition_ramp_s (0.5 s), not dropped (the slew limit alone: 0.1 s).
    assert transition_s(client, cancelled, lambda peak: peak < 19.9, lambda peak: peak == 0.0) > 0.4
    time.sleep(0.1)
    assert np.all(client.latest() == 0.0)
    with client.lock:
        rows = [r for r in client.setpoints if r[1] >= start]
    assert_rate_limited(rows)


def test_latched_safety_fault_aborts_with_the_reason(graph, wait):
    _sequencer, client = graph
    safety_ok(graph, wait)
    _h, future = client.send(wait, yaml_text=program_yaml(duration_s=30.0), intensity=1.0)
    assert wait(lambda: client.latest().max() >= 39.9, 5.0)
    client.publish_safety(SafetyStatus.FAULT, ['overload on finger_l_05_joint: 190 N'])
    result = result_of(wait, future, 5.0)
    assert result.outcome == RunProgram.Result.ABORTED
    assert 'overload on finger_l_05_joint' in result.reason and 'FAULT' in result.reason
    aborted = time.monotonic()
    time.sleep(0.3)
    assert np.all(client.forces_since(aborted) == 0.0)  # zero at once, and stays zero
    _h, future = client.send(wait, program_id='demo', intensity=0.3)
    refused = result_of(wait, future, 5.0)
    assert refused.outcome == RunProgram.Result.REJECTED and 'latched' in refused.reason


def test_a_scan_and_a_program_never_run_at_once(graph, wait):
    sequencer, client = graph
    safety_ok(graph, wait)
    scan_client = ActionClient(client.node, ScanSpine, 'scan_spine')
    assert scan_client.wait_for_server(timeout_sec=10.0)
    user = UserProfile(user_id='scan', height_m=1.75, c7_position_m=math.nan, max_force_n=0.0)

    # A program owns the fingers: the scan is refused.
    _h, future = client.send(wait, yaml_text=program_yaml(duration_s=2.0), intensity=0.5)
    assert wait(lambda: client.latest().max() > 1.0, 5.0)
    scan_goal = scan_client.send_goal_async(ScanSpine.Goal(user=user, measure_stiffness=True))
    assert wait(scan_goal.done, 5.0)
    assert not scan_goal.result().accepted
    assert result_of(wait, future).outcome == RunProgram.Result.COMPLETED

    # A scan owns the fingers (no joint states here, so it aborts after ~2 s): the program is
    # refused and the sequencer's own setpoint stream stays silent meanwhile.
    scan_goal = scan_client.send_goal_async(ScanSpine.Goal(user=user, measure_stiffness=True))
    assert wait(scan_goal.done, 5.0) and scan_goal.result().accepted
    assert wait(lambda: sequencer.scan.active, 5.0)
    time.sleep(0.1)
    silent_from = time.monotonic()
    _h, future = client.send(wait, program_id='demo', intensity=0.5)
    refused = result_of(wait, future, 5.0)
    assert refused.outcome == RunProgram.Result.REJECTED and 'spine scan' in refused.reason
    time.sleep(0.5)
    assert sequencer.scan.active
    assert len(client.forces_since(silent_from)) == 0
    scan_result = scan_goal.result().get_result_async()
    assert wait(scan_result.done, 10.0)
    assert scan_result.result().result.outcome == ScanSpine.Result.ABORTED
    again = time.monotonic()
    assert wait(lambda: len(client.forces_since(again)) > 10, 5.0)  # idle zeros again
    assert np.all(client.forces_since(again) == 0.0)


def test_executable_starts_with_its_parameter_file_and_stops_cleanly(ros_context, wait):
    """The installed executable under use_sim_time with no /clock: its node clock stands still,
    so the only setpoints it publishes are the zeros on its way out; its steady-clock heartbeat
    goes on regardless, and SIGINT stops it promptly."""
    from ament_index_python.packages import get_package_prefix, get_package_share_directory
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    prefix = Path(get_package_prefix('backhug_programs'))
    executable = prefix / 'lib' / 'backhug_programs' / 'program_sequencer'
    params = Path(get_package_share_directory('backhug_programs')) / 'config'
    params = params / 'program_sequencer.yaml'
    if not executable.is_file():
        pytest.skip('workspace not built (tools/setup.sh)')
    node = Node('executable_probe', context=ros_context)
    client = Client(node)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    process = subprocess.Popen(
        [str(executable), '--ros-args', '--params-file', str(params), '-p', 'use_sim_time:=true'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and len(client.heartbeats) < 10:
            executor.spin_once(timeout_sec=0.05)
        assert len(client.heartbeats) >= 10, 'no heartbeat from the executable'
        assert client.heartbeats[-1].detail == 'idle'
        assert not client.setpoints  # simulated time has not started
        process.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        while process.poll() is None and time.monotonic() - stopped < 10.0:
            executor.spin_once(timeout_sec=0.05)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not client.setpoints:
            executor.spin_once(timeout_sec=0.05)
    finally:
        if process.poll() is None:
            process.kill()
        output, _ = process.communicate(timeout=15)
        executor.shutdown()
        node.destroy_node()
    assert process.returncode == 0, output
    assert 'ready: 26 fingers' in output and 'stopped: zero setpoints published' in output
    assert len(client.setpoints) == 1 and np.all(client.latest() == 0.0)


def test_program_time_follows_simulated_time(ros_context, spin_nodes, wait):
    """Under use_sim_time the program clock is /clock: here simulated time runs at ~8x."""
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock as ClockMsg

    sequencer = ProgramSequencer(
        context=ros_context, parameter_overrides=[Parameter('use_sim_time', value=True)]
    )
    client = Client(Node('sim_time_client', context=ros_context))
    clock_pub = client.node.create_publisher(ClockMsg, qos.CLOCK, 10)
    stop = threading.Event()

    def run_clock() -> None:
        t_ns = 100 * 10**9
        while not stop.is_set():
            t_ns += 40_000_000  # 40 ms of simulated time every ~5 ms of wall time
            msg = ClockMsg()
            msg.clock.sec, msg.clock.nanosec = divmod(t_ns, 10**9)
            clock_pub.publish(msg)
            time.sleep(0.005)

    spin_nodes(sequencer, client.node)
    thread = threading.Thread(target=run_clock, daemon=True)
    thread.start()
    try:
        assert wait(lambda: len(client.setpoints) > 5, 10.0)
        safety_ok((sequencer, client), wait)
        start = time.monotonic()
        _h, future = client.send(wait, yaml_text=program_yaml(duration_s=4.0), intensity=0.5)
        result = result_of(wait, future, 10.0)
        wall = time.monotonic() - start
    finally:
        stop.set()
        thread.join(timeout=2)
    assert result.outcome == RunProgram.Result.COMPLETED
    assert result.duration_s == pytest.approx(4.0, abs=0.05)
    # 4 s of program in ~0.5 s of wall time (2.7 s seen on a loaded host): a program clock on
    # wall time could not finish 4 s of program in less than 4 s.
    assert wall < 4.0, f'4 s of program took {wall:.2f} s of wall time: not on /clock'
    with client.lock:
        stamps = [s for s, _w, _f in client.setpoints]
    assert 100.0 < stamps[-1] < 200.0  # setpoints are stamped with simulated time
