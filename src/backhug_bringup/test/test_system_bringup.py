"""The whole system from config/system.yaml, on the simulated device, end to end.

Starts every node of system.yaml for hardware:=sim with the command lines load_system() builds
(parameter files + overrides, as `backhug run` does), brings the lifecycle node (hw_interface)
to active over its services with lifecycle.activate(), records the session with
SessionRecorder, runs the demo program through run_program, interrupts it (the cancel path),
stops every node with SIGINT and checks their exit codes, then makes the report from the
recording and checks what it says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from backhug_bringup.lifecycle import LifecycleError, activate
from backhug_bringup.recorder import PROGRAM_FEEDBACK_TOPIC, SessionRecorder, read_session
from backhug_bringup.report import make_report
from backhug_bringup.system import load_system
from rclpy.node import Node
from sensor_msgs.msg import JointState

from backhug_hw_interface import qos
from backhug_interfaces.msg import SafetyStatus

pytestmark = pytest.mark.timeout(150)

# This test is about bringup (system.yaml -> processes -> recording -> report), not about the
# safety monitor's timing, which its own tests cover. On a shared 2-core test machine a loaded
# moment can stall a 200 Hz Python node past the 0.3 s staleness limit and latch a fault, so
# the monitor's timeouts are relaxed here (through the same override path `backhug run` uses).
RELAXED = {
    'safety_monitor': {
        'joint_states_timeout_s': 2.0,
        'heartbeat_timeout_s': 2.0,
        'hardware_status_timeout_s': 3.0,
        'frozen_sample_timeout_s': 3.0,
    },
}


def test_the_sim_system_runs_a_program_and_reports_it(ros_context, spin_nodes, wait, tmp_path):
    system = load_system('sim')
    logs = {}
    processes = {}
    for spec in system.nodes:
        logs[spec.name] = open(tmp_path / f'{spec.name}.log', 'w')  # noqa: SIM115
        processes[spec.name] = subprocess.Popen(
            spec.command(RELAXED.get(spec.name)), stdout=logs[spec.name], stderr=subprocess.STDOUT
        )
    node = Node('bringup_test', context=ros_context)
    recorder = SessionRecorder(node, tmp_path / 'session.mcap')
    recorder.add_metadata('session', {'program': 'demo', 'intensity': 0.5})
    states: list[JointState] = []
    safety: list[SafetyStatus] = []
    node.create_subscription(JointState, qos.JOINT_STATES, states.append, qos.STATE_QOS)
    node.create_subscription(SafetyStatus, qos.SAFETY_STATUS, safety.append, qos.LATCHED_QOS)
    spin_nodes(node)

    def log_tail() -> str:
        for handle in logs.values():
            if not handle.closed:
                handle.flush()
        return '\n'.join(
            f'--- {name}\n' + (tmp_path / f'{name}.log').read_text()[-1500:] for name in logs
        )

    client = None
    try:
        for spec in system.nodes:
            if spec.lifecycle:
                try:
                    activate(node, spec.name, timeout_s=40)
                except LifecycleError as exc:
                    pytest.fail(f'{exc}\n{log_tail()}')

        assert wait(lambda: len(states) > 50, 20), 'no /joint_states\n' + log_tail()
        assert len(states[-1].name) == 26
        assert wait(lambda: safety and safety[-1].state <= SafetyStatus.WARNING, 30), (
            f'safety never OK: {safety[-1].reasons if safety else "no status"}\n' + log_tail()
        )

        client = subprocess.Popen(
            ['run_program', 'demo', '--intensity', '0.5'],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        # Let the first phase push on the simulated back, then interrupt: the sequencer ramps
        # down and the fingers retract.
        assert wait(lambda: recorder.counts.get(PROGRAM_FEEDBACK_TOPIC, 0) > 10, 30), log_tail()
        assert wait(lambda: max(states[-1].effort) > 5.0, 45), (
            f'no finger pushed: efforts {list(states[-1].effort)}\n' + log_tail()
        )
        time.sleep(2)
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=30)
        assert client.returncode == 1 and "'demo' cancelled" in err, out + err
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        recorder.close()
        for process in processes.values():
            process.send_signal(signal.SIGINT)
        codes = {name: process.wait(timeout=20) for name, process in processes.items()}
        for handle in logs.values():
            handle.close()
    assert codes == dict.fromkeys(processes, 0), log_tail()

    session = read_session(tmp_path / 'session.mcap')
    assert not session.truncated
    counts = session.counts()
    for topic in ('/joint_states', '/finger_commands', '/finger_setpoints', '/heartbeat'):
        assert counts[topic] > 10, (topic, counts)
    summary = make_report(tmp_path / 'session.mcap', tmp_path / 'report.png')
    assert summary['program'] == 'demo'
    assert summary['phases'][0]['name'] == 'upward wave'
    assert summary['faults'] == [], summary['faults']
    # The wave at 40 N x 0.5 reached the back: some region carried a real load.
    assert max(r['peak_n'] for r in summary['regions'].values()) > 5.0, summary['regions']
    assert (tmp_path / 'report.png').stat().st_size > 10_000
