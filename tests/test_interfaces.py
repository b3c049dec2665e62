"""Our interface types cross a process boundary intact over DDS.

One process (tests/ros_peer.py) publishes a non-default sample of every backhug_interfaces
message and serves the RunProgram action; this process receives and compares.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the ROS environment (source env.sh)')

from interface_samples import message_class, message_names, sample  # noqa: E402

PEER = Path(__file__).resolve().parent / 'ros_peer.py'


@pytest.fixture
def peer():
    """Start tests/ros_peer.py with the given arguments; killed after the test."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(PEER), *args])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_every_message_type_is_defined():
    names = message_names()
    for required in (
        'FingerSetpoints',
        'FingerCommands',
        'SafetyStatus',
        'HardwareStatus',
        'Heartbeat',
        'SpineMap',
        'UserProfile',
    ):
        assert required in names


def test_every_message_field_documents_its_unit_or_meaning():
    """Each field line of our .msg/.srv/.action files carries a comment."""
    root = Path(__file__).resolve().parents[1] / 'src' / 'backhug_interfaces'
    missing = []
    for path in [*root.glob('msg/*.msg'), *root.glob('srv/*.srv'), *root.glob('action/*.action')]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split('#')[0].strip()
            if code and code != '---' and '=' not in code and '#' not in line:
                missing.append(f'{path.name}:{number}: {line}')
    assert not missing, 'fields without a comment:\n' + '\n'.join(missing)


def test_messages_cross_processes_intact(ros_context, spin_nodes, wait, peer):
    names = message_names()
    node = rclpy.create_node('interface_sample_receiver', context=ros_context)
    received: dict[str, object] = {}
    for name in names:
        node.create_subscription(
            message_class(name),
            f'sample/{name}',
            lambda msg, n=name: received.setdefault(n, msg),
            10,
        )
    spin_nodes(node)
    peer('publish', *names)
    assert wait(lambda: len(received) == len(names), timeout_s=30), (
        f'never received: {sorted(set(names) - set(received))}'
    )
    for name in names:
        assert received[name] == sample(message_class(name)), name


def test_run_program_action_feedback_result_and_cancel(ros_context, spin_nodes, wait, peer):
    from rclpy.action import ActionClient

    from backhug_interfaces.action import RunProgram

    node = rclpy.create_node('program_client', context=ros_context)
    client = ActionClient(node, RunProgram, 'run_program')
    spin_nodes(node)
    peer('action_server')
    assert client.wait_for_server(timeout_sec=30)

    def send(intensity: float):
        feedback: list = []
        goal = RunProgram.Goal(program_id='demo', intensity=intensity)
        future = client.send_goal_async(goal, feedback_callback=feedback.append)
        assert wait(future.done, timeout_s=10)
        handle = future.result()
        assert handle.accepted
        return handle, feedback

    # Runs to the end with feedback.
    handle, feedback = send(0.6)
    result_future = handle.get_result_async()
    assert wait(result_future.done, timeout_s=20)
    result = result_future.result().result
    assert result.outcome == RunProgram.Result.COMPLETED
    assert len(feedback) >= 10
    progress = [fb.feedback.progress for fb in feedback]
    assert progress == sorted(progress) and 0.0 <= progress[0] < progress[-1] <= 1.0
    assert all(abs(fb.feedback.intensity - 0.6) < 1e-9 for fb in feedback)

    # Cancelled part-way.
    handle, feedback = send(0.3)
    assert wait(lambda: len(feedback) >= 3, timeout_s=10)
    cancel = handle.cancel_goal_async()
    assert wait(cancel.done, timeout_s=10)
    result_future = handle.get_result_async()
    assert wait(result_future.done, timeout_s=10)
    result = result_future.result().result
    assert result.outcome == RunProgram.Result.CANCELLED
    assert result.duration_s < 3.0


def test_each_test_process_has_its_own_domain():
    import os

    domain = int(os.environ['ROS_DOMAIN_ID'])
    assert 1 <= domain <= 100
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'


def test_nodes_can_be_spun_in_threads(ros_context, spin_nodes, wait):
    """The shared fixture spins several nodes concurrently."""
    from std_msgs.msg import String

    talker = rclpy.create_node('talker', context=ros_context)
    listener = rclpy.create_node('listener', context=ros_context)
    got: list[str] = []
    listener.create_subscription(String, 'chatter', lambda m: got.append(m.data), 10)
    pub = talker.create_publisher(String, 'chatter', 10)
    spin_nodes(talker, listener)
    stop = threading.Event()

    def talk() -> None:
        while not stop.is_set():
            pub.publish(String(data='hello'))
            time.sleep(0.02)

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    try:
        assert wait(lambda: len(got) >= 5, timeout_s=10)
    finally:
        stop.set()
        thread.join()
