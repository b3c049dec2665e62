"""Foxglove live view: a real WebSocket client against the server fed by real /joint_states."""

from __future__ import annotations

import json
import math
import socket
import time

import pytest
from backhug_bringup.live_view import (
    DESCRIPTION_TOPIC,
    JOINT_STATES_TOPIC,
    MARKERS_TOPIC,
    TF_TOPIC,
    LiveView,
    LiveViewError,
    joint_transform,
    load_colour,
    parse_joints,
)
from rclpy.node import Node
from sensor_msgs.msg import JointState
from websockets.sync.client import connect

from backhug_description import load_description
from backhug_hw_interface import qos

SUBPROTOCOL = 'foxglove.sdk.v1'  # the only one foxglove-sdk 0.30 accepts


@pytest.fixture(scope='module')
def description():
    return load_description('sim', rows=4)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_transforms_follow_the_urdf_and_the_finger_position(description):
    joints = {j.name: j for j in parse_joints(description.urdf)}
    finger = joints['finger_l_02_joint']
    assert finger.kind == 'prismatic' and finger.parent == 'base_link'
    assert finger.child == 'finger_l_02_link'
    rest, rotation = joint_transform(finger, 0.0)
    assert rest == pytest.approx(finger.xyz)
    raised, _ = joint_transform(finger, 0.025)
    assert raised[2] - rest[2] == pytest.approx(0.025)
    assert raised[:2] == pytest.approx(rest[:2])
    assert rotation == pytest.approx((1.0, 0.0, 0.0, 0.0))
    # The chain base_link -> finger link -> tip puts the tip where the description says.
    tip_joint = joints['finger_l_02_tip_joint']
    tip_offset, _ = joint_transform(tip_joint, 0.0)
    info = next(j for j in description.joints if j.name == 'finger_l_02_joint')
    assert [a + b for a, b in zip(rest, tip_offset, strict=True)] == pytest.approx(info.tip_xyz_m)
    revolute = parse_joints(
        '<robot name="r"><joint name="j" type="revolute"><parent link="a"/><child link="b"/>'
        '<origin xyz="0 0 1" rpy="0 0 0"/><axis xyz="0 0 1"/></joint></robot>'
    )[0]
    _, turned = joint_transform(revolute, math.pi / 2)
    assert turned == pytest.approx((math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)))
    with pytest.raises(LiveViewError, match='not valid XML'):
        parse_joints('<robot')


def test_load_colours_run_green_to_red():
    assert load_colour(0.0, 180.0) == (0.0, 1.0, 0.0)
    assert load_colour(90.0, 180.0) == (1.0, 1.0, 0.0)
    assert load_colour(400.0, 180.0) == (1.0, 0.0, 0.0)


def _receive_json(ws, op: str, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(frame, str):
            message = json.loads(frame)
            if message.get('op') == op:
                return message
    raise AssertionError(f'no {op} message within {timeout_s} s')


def _receive_binary(ws, subscription_id: int, timeout_s: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        # Message data: opcode 1, u32 subscription id, u64 log time, payload.
        if (
            isinstance(frame, bytes)
            and frame[0] == 1
            and int.from_bytes(frame[1:5], 'little') == subscription_id
        ):
            return frame[13:]
    raise AssertionError(f'no data for subscription {subscription_id} within {timeout_s} s')


def test_a_websocket_client_sees_the_device_channels_and_live_data(
    ros_context, spin_nodes, wait, description
):
    view_node = Node('live_view', context=ros_context)
    source = Node('joint_source', context=ros_context)
    publisher = source.create_publisher(JointState, JOINT_STATES_TOPIC, qos.STATE_QOS)
    view = LiveView(view_node, description, port=_free_port())
    try:
        spin_nodes(view_node, source)
        assert wait(lambda: publisher.get_subscription_count() > 0, 10)
        names = [j.name for j in description.joints]
        state = JointState(name=names, position=[0.01] * len(names), effort=[0.0] * len(names))
        state.effort[names.index('finger_r_03_joint')] = 123.0
        stop_publishing = time.monotonic() + 30

        with connect(view.url, subprotocols=[SUBPROTOCOL], open_timeout=5) as ws:
            assert ws.subprotocol == SUBPROTOCOL
            info = _receive_json(ws, 'serverInfo')
            assert 'parameters' in info['capabilities']
            advertise = _receive_json(ws, 'advertise')
            channels = {c['topic']: c for c in advertise['channels']}
            assert channels[JOINT_STATES_TOPIC]['schemaName'] == 'foxglove.JointStates'
            assert channels[TF_TOPIC]['schemaName'] == 'foxglove.FrameTransforms'
            assert channels[MARKERS_TOPIC]['schemaName'] == 'foxglove.SceneUpdate'
            assert channels[DESCRIPTION_TOPIC]['schemaName'] == 'std_msgs/msg/String'
            assert channels[DESCRIPTION_TOPIC]['encoding'] == 'cdr'

            ws.send(
                json.dumps(
                    {
                        'op': 'subscribe',
                        'subscriptions': [
                            {'id': 1, 'channelId': channels[JOINT_STATES_TOPIC]['id']},
                            {'id': 2, 'channelId': channels[TF_TOPIC]['id']},
                            {'id': 3, 'channelId': channels[MARKERS_TOPIC]['id']},
                            {'id': 4, 'channelId': channels[DESCRIPTION_TOPIC]['id']},
                        ],
                    }
                )
            )
            # The description is re-sent to a new subscriber (a late joiner still gets the URDF).
            urdf_payload = _receive_binary(ws, 4)
            assert b'finger_r_03_tip' in urdf_payload and b'<robot' in urdf_payload
            # Live data: keep publishing until the client has seen the load of finger r03.
            while time.monotonic() < stop_publishing:
                publisher.publish(state)
                joints_payload = _receive_binary(ws, 1, timeout_s=1.0)
                if b'finger_r_03_joint' in joints_payload:
                    break
            assert b'finger_r_03_joint' in joints_payload
            tf_payload = _receive_binary(ws, 2)
            assert b'finger_l_04_link' in tf_payload and b'base_link' in tf_payload
            markers_payload = _receive_binary(ws, 3)
            assert b'force/finger_r_03_joint' in markers_payload
            assert b'123 N' in markers_payload

            ws.send(
                json.dumps(
                    {'op': 'getParameters', 'parameterNames': ['robot_description'], 'id': 'p1'}
                )
            )
            values = _receive_json(ws, 'parameterValues')
            assert values['id'] == 'p1'
            (parameter,) = values['parameters']
            assert parameter['name'] == 'robot_description'
            assert parameter['value'] == description.urdf
        assert view.published >= 1
    finally:
        view.close()
        view.close()


def test_a_port_in_use_is_named(ros_context, description):
    node = Node('live_view_port', context=ros_context)
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LiveViewError, match=f'cannot start the Foxglove server on .*:{port}'):
            LiveView(node, description, port=port)
    node.destroy_node()
