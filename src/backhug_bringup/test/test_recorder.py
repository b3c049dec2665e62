"""SessionRecorder over real DDS: rclpy publishers -> recorder -> MCAP -> mcap + mcap_ros2 readers.

Also kills a recording process with SIGKILL mid-write and reads what it left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from backhug_bringup.recorder import (
    DEFAULT_TOPICS,
    PROGRAM_FEEDBACK_TOPIC,
    PROGRAM_RESULT_TOPIC,
    RecorderError,
    SessionRecorder,
    decodable_schema,
    message_definition,
    read_session,
)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from backhug_hw_interface import qos
from backhug_interfaces.action import RunProgram
from backhug_interfaces.msg import FingerCommands, FingerSetpoints, Heartbeat, SafetyStatus

NAMES = ['finger_l_01_joint', 'finger_l_02_joint', 'finger_r_01_joint', 'finger_r_02_joint']


def _joint_state(i: int) -> JointState:
    msg = JointState(name=NAMES)
    msg.header.stamp.sec = i
    msg.position = [0.001 * i] * 4
    msg.velocity = [0.0] * 4
    msg.effort = [float(i), 2.0 * i, 3.0 * i, 4.0 * i]
    return msg


def test_definitions_concatenate_dependencies_the_rosbag2_way():
    text = message_definition('sensor_msgs/msg/JointState')
    assert text.startswith('# This is a message that holds data')
    blocks = text.split('=' * 80 + '\n')
    assert [b.splitlines()[0] for b in blocks[1:]] == [
        'MSG: std_msgs/msg/Header',
        'MSG: builtin_interfaces/msg/Time',
    ]
    feedback = message_definition('backhug_interfaces/action/RunProgram_FeedbackMessage')
    assert 'MSG: unique_identifier_msgs/msg/UUID' in feedback
    assert 'MSG: backhug_interfaces/action/RunProgram_Feedback' in feedback
    assert 'float64 remaining_s' in feedback and 'float64 duration_s' not in feedback
    with pytest.raises(RecorderError, match='no message definition'):
        message_definition('std_msgs/msg/NoSuchType')


def test_records_real_topics_into_a_file_mcap_and_mcap_ros2_read(
    ros_context, spin_nodes, wait, tmp_path
):
    path = tmp_path / 'session.mcap'
    recorder_node = Node('recorder', context=ros_context)
    source = Node('source', context=ros_context)
    recorder = SessionRecorder(recorder_node, path)
    publishers = {
        '/joint_states': source.create_publisher(JointState, '/joint_states', qos.STATE_QOS),
        '/finger_setpoints': source.create_publisher(
            FingerSetpoints, '/finger_setpoints', qos.STATE_QOS
        ),
        '/finger_commands': source.create_publisher(
            FingerCommands, '/finger_commands', qos.STATE_QOS
        ),
        '/safety/status': source.create_publisher(SafetyStatus, '/safety/status', qos.LATCHED_QOS),
        '/heartbeat': source.create_publisher(Heartbeat, '/heartbeat', qos.HEARTBEAT_QOS),
        '/diagnostics': source.create_publisher(DiagnosticArray, '/diagnostics', qos.STATE_QOS),
        '/robot_description': source.create_publisher(
            String, '/robot_description', qos.LATCHED_QOS
        ),
        PROGRAM_FEEDBACK_TOPIC: source.create_publisher(
            RunProgram.Impl.FeedbackMessage, PROGRAM_FEEDBACK_TOPIC, qos.STATE_QOS
        ),
    }
    spin_nodes(recorder_node, source)
    assert wait(lambda: all(p.get_subscription_count() > 0 for p in publishers.values()), 10)

    sent = [_joint_state(i) for i in range(50)]
    for i, msg in enumerate(sent):
        # One at a time: a reliable KEEP_LAST(10) writer may drop what a starved reader has not
        # acknowledged yet, and this test counts messages.
        publishers['/joint_states'].publish(msg)
        assert wait(lambda i=i: recorder.counts['/joint_states'] == i + 1, 10), recorder.counts
    publishers['/finger_setpoints'].publish(FingerSetpoints(name=NAMES, force_n=[10.0] * 4))
    publishers['/finger_commands'].publish(
        FingerCommands(name=NAMES, position_m=[0.01] * 4, enable=[True] * 4)
    )
    publishers['/safety/status'].publish(
        SafetyStatus(state=SafetyStatus.FAULT, latched=True, reasons=['finger_l_01 overload'])
    )
    publishers['/heartbeat'].publish(Heartbeat(node_name='finger_controllers', sequence=7))
    publishers['/diagnostics'].publish(
        DiagnosticArray(status=[DiagnosticStatus(name='hw_interface', message='ok')])
    )
    publishers['/robot_description'].publish(String(data='<robot name="backhug"/>'))
    feedback = RunProgram.Impl.FeedbackMessage()
    feedback.feedback.phase_name = 'warm up'
    feedback.feedback.progress = 0.25
    publishers[PROGRAM_FEEDBACK_TOPIC].publish(feedback)
    result = RunProgram.Result(outcome=RunProgram.Result.COMPLETED, duration_s=120.0)
    recorder.record(PROGRAM_RESULT_TOPIC, result, stamp_ns=123)
    recorder.add_metadata('session', {'program': 'full_back', 'intensity': 0.6})

    assert wait(lambda: recorder.counts['/joint_states'] == 50, 10), recorder.counts
    assert wait(lambda: recorder.counts[PROGRAM_FEEDBACK_TOPIC] == 1, 5), recorder.counts
    recorder.close()
    recorder.close()  # idempotent

    # The plain mcap reader: a complete file with a summary and the real ROS type names.
    factory = DecoderFactory()
    with open(path, 'rb') as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count == 58
        assert {c.topic for c in summary.channels.values()} == {
            *DEFAULT_TOPICS,
            PROGRAM_RESULT_TOPIC,
        }
        assert {s.name for s in summary.schemas.values()} >= {
            'sensor_msgs/msg/JointState',
            'backhug_interfaces/msg/SafetyStatus',
            'backhug_interfaces/action/RunProgram_FeedbackMessage',
            'backhug_interfaces/action/RunProgram_Result',
        }
        assert all(s.encoding == 'ros2msg' for s in summary.schemas.values())
        decoded: dict[str, list] = {}
        for schema, channel, message in reader.iter_messages():
            assert channel.message_encoding == 'cdr'
            decoder = factory.decoder_for('cdr', decodable_schema(schema))
            decoded.setdefault(channel.topic, []).append(decoder(message.data))
            if channel.topic == '/joint_states':
                # The bytes are the publisher's CDR, untouched: rclpy reads them back exactly.
                assert deserialize_message(message.data, JointState) in sent
    joint_states = decoded['/joint_states']
    assert [list(m.effort) for m in joint_states] == [list(m.effort) for m in sent]
    assert list(joint_states[0].name) == NAMES
    assert decoded['/safety/status'][0].state == SafetyStatus.FAULT
    assert list(decoded['/safety/status'][0].reasons) == ['finger_l_01 overload']
    assert decoded['/heartbeat'][0].node_name == 'finger_controllers'
    assert decoded['/diagnostics'][0].status[0].name == 'hw_interface'
    assert decoded['/robot_description'][0].data == '<robot name="backhug"/>'
    assert decoded[PROGRAM_FEEDBACK_TOPIC][0].feedback.phase_name == 'warm up'
    assert decoded[PROGRAM_RESULT_TOPIC][0].duration_s == 120.0

    session = read_session(path)
    assert not session.truncated and session.error == ''
    assert session.counts() == {
        '/joint_states': 50,
        '/finger_setpoints': 1,
        '/finger_commands': 1,
        '/safety/status': 1,
        '/hardware/status': 0,
        '/diagnostics': 1,
        '/heartbeat': 1,
        '/robot_description': 1,
        PROGRAM_FEEDBACK_TOPIC: 1,
        PROGRAM_RESULT_TOPIC: 1,
    }
    assert session.metadata['session'] == {'program': 'full_back', 'intensity': '0.6'}
    assert session.on(PROGRAM_RESULT_TOPIC)[0].log_time_ns == 123
    assert session.topics['/hardware/status'] == 'backhug_interfaces/msg/HardwareStatus'
    selected = read_session(path, topics=['/heartbeat'], types=['std_msgs/msg/String'])
    assert sorted(m.topic for m in selected.messages) == ['/heartbeat', '/robot_description']


def test_messages_arriving_while_topics_register_never_precede_a_schema(
    ros_context, spin_nodes, wait, tmp_path, monkeypatch
):
    """The first topic's subscription delivers on the executor thread while the recorder is
    still registering the others (slowed here to make the overlap certain). Every schema and
    channel record must come before any message, and the file must read back."""
    import threading

    import backhug_bringup.recorder as recorder_module
    from mcap.records import Channel, DataEnd, Message, Schema
    from mcap.stream_reader import StreamReader

    definition = recorder_module.message_definition

    def slow_definition(type_name):
        time.sleep(0.05)
        return definition(type_name)

    node = Node('recorder', context=ros_context)
    source = Node('source', context=ros_context)
    publisher = source.create_publisher(String, '/a', qos.STATE_QOS)
    spin_nodes(node, source)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            publisher.publish(String(data='x'))
            time.sleep(0.001)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    monkeypatch.setattr(recorder_module, 'message_definition', slow_definition)
    path = tmp_path / 'race.mcap'
    topics = {
        '/a': 'std_msgs/msg/String',
        '/b': 'sensor_msgs/msg/JointState',
        '/c': 'backhug_interfaces/msg/FingerCommands',
        '/d': 'backhug_interfaces/msg/SafetyStatus',
        '/e': 'backhug_interfaces/msg/Heartbeat',
        '/f': 'diagnostic_msgs/msg/DiagnosticArray',
    }
    try:
        recorder = SessionRecorder(node, path, topics)
        assert wait(lambda: recorder.counts['/a'] > 20, 10), recorder.counts
    finally:
        stop.set()
        flooder.join(timeout=5)
    recorder.close()
    kinds = []
    with open(path, 'rb') as handle:
        for record in StreamReader(handle, skip_magic=False, emit_chunks=False).records:
            if isinstance(record, DataEnd):  # the summary after it repeats schemas, channels
                break
            if isinstance(record, (Schema, Channel, Message)):
                kinds.append(type(record).__name__)
    first_message = kinds.index('Message')
    assert kinds[:first_message].count('Schema') == len(topics), kinds[: first_message + 3]
    assert 'Schema' not in kinds[first_message:] and 'Channel' not in kinds[first_message:]
    session = read_session(path)
    assert not session.truncated and session.counts()['/a'] == recorder.counts['/a']


def test_max_rate_thins_only_the_named_topic(ros_context, tmp_path):
    node = Node('recorder', context=ros_context)
    recorder = SessionRecorder(node, tmp_path / 'thin.mcap', {}, max_rate_hz={'/a': 10.0})
    for i in range(100):  # 100 messages over 1 s of stamps
        recorder.record('/a', String(data=str(i)), stamp_ns=i * 10_000_000)
        recorder.record('/b', String(data=str(i)), stamp_ns=i * 10_000_000)
    recorder.close()
    node.destroy_node()
    counts = read_session(tmp_path / 'thin.mcap').counts()
    assert counts == {'/a': 10, '/b': 100}


def test_a_file_cut_anywhere_reads_up_to_the_cut(ros_context, tmp_path):
    node = Node('recorder', context=ros_context)
    path = tmp_path / 'full.mcap'
    recorder = SessionRecorder(node, path, {}, chunk_size=2048)
    for i in range(400):
        recorder.record('/joint_states', _joint_state(i), stamp_ns=i)
    recorder.close()
    node.destroy_node()
    data = path.read_bytes()
    previous = -1
    for fraction in (0.1, 0.33, 0.5, 0.77, 0.95, 0.999):
        cut = tmp_path / f'cut_{fraction}.mcap'
        cut.write_bytes(data[: int(len(data) * fraction)])
        session = read_session(cut)
        assert session.truncated and session.error, fraction
        count = session.counts().get('/joint_states', 0)
        assert count >= previous
        previous = count
        stamps = [m.log_time_ns for m in session.messages]
        assert stamps == list(range(count)), 'a cut file yields a clean prefix'
    assert previous > 300
    with pytest.raises(RecorderError, match='cannot read session recording'):
        read_session(tmp_path / 'absent.mcap')


CHILD = textwrap.dedent(
    """
    import sys, time
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from backhug_hw_interface import qos
    from backhug_bringup.recorder import SessionRecorder

    context = Context()
    rclpy.init(context=context)
    node = Node('killed_recorder', context=context)
    source = Node('killed_source', context=context)
    recorder = SessionRecorder(node, sys.argv[1])
    recorder.add_metadata('session', {'program': 'killed'})
    publisher = source.create_publisher(JointState, '/joint_states', qos.STATE_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(source)
    i = 0
    while True:
        msg = JointState(name=['a', 'b'], position=[0.0, 0.0], effort=[float(i), 1.0])
        publisher.publish(msg)
        i += 1
        executor.spin_once(timeout_sec=0.002)
        if i % 50 == 0:
            print(recorder.counts['/joint_states'], flush=True)
    """
)


def test_a_sigkilled_recorder_leaves_a_readable_file(tmp_path):
    path = tmp_path / 'killed.mcap'
    process = subprocess.Popen(
        [sys.executable, '-c', CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        recorded = 0
        deadline = time.monotonic() + 30
        while recorded < 300 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            recorded = int(line)
        assert recorded >= 300, process.stderr.read() if process.poll() is not None else recorded
        time.sleep(1.5)  # several flush periods: what was recorded by now must be on disk
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    session = read_session(path)
    assert session.truncated  # no footer: it never closed
    assert session.metadata['session'] == {'program': 'killed'}
    efforts = [m.message.effort[0] for m in session.on('/joint_states')]
    assert len(efforts) >= recorded
    assert efforts == sorted(efforts)
    assert session.topics['/joint_states'] == 'sensor_msgs/msg/JointState'
