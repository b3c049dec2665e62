"""run_program (the launch file's program:= client) against a RunProgram server over DDS.

The server here is a short stand-in for program_sequencer (the real one needs the whole graph):
it accepts a goal, sends feedback for two phases and answers like the sequencer. The session
recorder runs alongside and must capture that feedback from the action's own feedback topic.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from backhug_bringup.program_client import build_goal
from backhug_bringup.recorder import PROGRAM_FEEDBACK_TOPIC, SessionRecorder, read_session
from rclpy.action import ActionServer, CancelResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from backhug_interfaces.action import RunProgram


def _client() -> str:
    path = shutil.which('run_program')
    if path is None:
        from ament_index_python.packages import get_package_prefix

        candidate = os.path.join(get_package_prefix('backhug_bringup'), 'lib', 'backhug_bringup')
        path = shutil.which('run_program', path=candidate)
    assert path, 'run_program is not installed (tools/setup.sh)'
    return path


def _execute(goal_handle):
    goal = goal_handle.request
    if goal.program_id == 'long':  # runs until cancelled
        deadline = time.monotonic() + 30
        while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
            goal_handle.publish_feedback(RunProgram.Feedback(phase_name='hold', phase_count=1))
            time.sleep(0.1)
        goal_handle.canceled()
        return RunProgram.Result(outcome=RunProgram.Result.CANCELLED, reason='cancelled')
    for index, phase in enumerate(('warm up', 'mobilise')):
        feedback = RunProgram.Feedback(
            phase_name=phase, phase_index=index, phase_count=2, progress=0.5 * index
        )
        goal_handle.publish_feedback(feedback)
        time.sleep(0.1)
    if goal.program_id == 'short' and goal.user.height_m == pytest.approx(1.68):
        goal_handle.succeed()
        return RunProgram.Result(
            outcome=RunProgram.Result.COMPLETED, duration_s=0.2, completed_fraction=1.0
        )
    goal_handle.abort()
    return RunProgram.Result(outcome=RunProgram.Result.ABORTED, reason='safety fault: estop')


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_client(), *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def test_bad_arguments_and_no_server_are_named():
    bad = _run('short', '--intensity', '1.5')
    assert bad.returncode == 2 and 'intensity: must be within 0..1, got 1.5' in bad.stderr
    short = _run('short', '--height', '0.5')
    assert short.returncode == 2 and 'height: must be within 1.2..2.2 m' in short.stderr
    alone = _run('short', '--server-timeout', '1')
    assert alone.returncode == 2 and 'no /run_program action server' in alone.stderr
    with pytest.raises(ValueError, match='program: give a program id'):
        build_goal('', 0.5, 1.75)


def test_program_runs_to_completion_and_feedback_is_recorded(ros_context, spin_nodes, tmp_path):
    server_node = Node('program_sequencer_standin', context=ros_context)
    cancels = []

    def on_cancel(goal_handle):
        cancels.append(goal_handle)
        return CancelResponse.ACCEPT

    server = ActionServer(
        server_node,
        RunProgram,
        '/run_program',
        _execute,
        cancel_callback=on_cancel,
        callback_group=ReentrantCallbackGroup(),
    )
    recorder_node = Node('recorder', context=ros_context)
    recorder = SessionRecorder(recorder_node, tmp_path / 'program.mcap')
    spin_nodes(server_node, recorder_node)

    done = _run('short', '--intensity', '0.4', '--height', '1.68')
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'short: completed' in done.stdout + done.stderr
    failed = _run('other', '--intensity', '0.4')
    assert failed.returncode == 1
    assert 'aborted' in failed.stdout + failed.stderr and 'safety fault: estop' in (
        failed.stdout + failed.stderr
    )
    # Ctrl-C (or launch's SIGINT) cancels the goal on the server before the client exits.
    interrupted = subprocess.Popen(
        [_client(), 'long'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(4)
    interrupted.send_signal(signal.SIGINT)
    out, err = interrupted.communicate(timeout=30)
    assert interrupted.returncode == 1, out + err
    assert "'long' cancelled" in err
    assert len(cancels) == 1
    recorder.close()
    server.destroy()  # gone from the graph now, not when the garbage collector gets to it
    feedback = read_session(tmp_path / 'program.mcap').on(PROGRAM_FEEDBACK_TOPIC)
    names = [m.message.feedback.phase_name for m in feedback]
    assert names[:4] == ['warm up', 'mobilise', 'warm up', 'mobilise']
    assert set(names[4:]) == {'hold'}


SERVER_THAT_DIES = """
import threading, time, rclpy
from rclpy.action import ActionServer, CancelResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from backhug_interfaces.action import RunProgram

rclpy.init()
node = rclpy.create_node('sequencer_that_dies')
stop = threading.Event()

def execute(goal_handle):
    goal_handle.publish_feedback(RunProgram.Feedback(phase_name='warm up', phase_count=1))
    stop.set()
    time.sleep(60)

server = ActionServer(node, RunProgram, '/run_program', execute)
executor = MultiThreadedExecutor()
executor.add_node(node)
threading.Thread(target=executor.spin, daemon=True).start()
print('ready', flush=True)
stop.wait(60)
time.sleep(0.5)
server.destroy()
node.destroy_node()
rclpy.shutdown()
"""


def test_a_server_that_goes_away_mid_program_ends_the_client():
    import sys

    server = subprocess.Popen(
        [sys.executable, '-c', SERVER_THAT_DIES], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout.readline().strip() == 'ready'
        started = time.monotonic()
        lost = _run('short', '--intensity', '0.4')
        assert lost.returncode == 1, lost.stdout + lost.stderr
        assert 'server left while' in lost.stderr
        assert time.monotonic() - started < 40
    finally:
        server.kill()
        server.wait(timeout=10)
        server.stdout.close()
