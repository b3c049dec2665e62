"""RViz finger-force markers: the marker maths, and the node over DDS from real /joint_states."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time

import pytest
from backhug_bringup.force_markers import (
    MARKERS_QOS,
    MARKERS_TOPIC,
    ForceMarkers,
    force_marker_array,
)
from rclpy.node import Node
from sensor_msgs.msg import JointState
from visualization_msgs.msg import Marker, MarkerArray

from backhug_description import load_description
from backhug_hw_interface import qos


@pytest.fixture(scope='module')
def joints():
    return load_description('sim', rows=3).joints


def test_markers_sit_on_the_tips_and_grow_and_redden_with_load(joints):
    names = [j.name for j in joints]
    state = JointState(name=names, effort=[0.0] * len(names))
    state.effort[names.index('finger_r_02_joint')] = 180.0
    state.effort[names.index('finger_l_03_joint')] = math.nan
    markers = force_marker_array(state, joints, state.header.stamp).markers
    spheres = {m.header.frame_id: m for m in markers if m.type == Marker.SPHERE}
    texts = {m.header.frame_id: m for m in markers if m.type == Marker.TEXT_VIEW_FACING}
    assert set(spheres) == {n.replace('_joint', '_tip') for n in names}
    loaded = spheres['finger_r_02_tip']
    idle = spheres['finger_l_01_tip']
    assert loaded.scale.x > idle.scale.x
    assert (loaded.color.r, loaded.color.g) == (1.0, 0.0)  # at the 180 N limit: red
    assert (idle.color.r, idle.color.g) == (0.0, 1.0)  # unloaded: green
    assert texts['finger_r_02_tip'].text == '180 N'
    assert texts['finger_l_03_tip'].text == '-'  # NaN load: unknown, drawn grey
    assert spheres['finger_l_03_tip'].color.r == spheres['finger_l_03_tip'].color.g == 0.5
    assert len({(m.ns, m.id) for m in markers}) == len(markers)  # RViz replaces by (ns, id)


def test_the_node_publishes_markers_from_live_joint_states(ros_context, spin_nodes, wait, joints):
    host = Node('marker_host', context=ros_context)
    source = Node('joints_source', context=ros_context)
    markers = ForceMarkers(host, joints, rate_hz=20.0)
    publisher = source.create_publisher(JointState, qos.JOINT_STATES, qos.STATE_QOS)
    received: list[MarkerArray] = []
    source.create_subscription(MarkerArray, MARKERS_TOPIC, received.append, MARKERS_QOS)
    spin_nodes(host, source)
    names = [j.name for j in joints]
    state = JointState(name=names, effort=[42.0] * len(names))

    def seen_load() -> bool:
        publisher.publish(state)
        return any(m.text == '42 N' for array in received[-3:] for m in array.markers)

    assert wait(seen_load, 10), 'no markers with the published load'
    assert markers.published >= 1
    markers.close()
    with pytest.raises(ValueError, match='rate_hz must be > 0'):
        ForceMarkers(host, joints, rate_hz=0.0)


def test_the_executable_refuses_an_unknown_hardware():
    from ament_index_python.packages import get_package_prefix

    exe = os.path.join(
        get_package_prefix('backhug_bringup'), 'lib', 'backhug_bringup', 'force_markers'
    )
    assert os.access(exe, os.X_OK), 'force_markers is not installed (tools/setup.sh)'
    bad = subprocess.run(
        [exe, '--ros-args', '-p', 'hardware:=simulator'],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert "parameter hardware: 'simulator' is not one of sim" in bad.stderr + bad.stdout
    good = subprocess.Popen([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 60  # start-up (imports, xacro) is slow on a loaded machine
    while time.monotonic() < deadline:
        line = good.stdout.readline()
        lines.append(line)
        if not line or '/finger_forces/markers at 10 Hz for hardware sim' in line:
            break
    good.send_signal(signal.SIGINT)
    output, _ = good.communicate(timeout=15)
    output = ''.join(lines) + output
    assert '/finger_forces/markers at 10 Hz for hardware sim' in output, output
    assert good.returncode == 0, output
