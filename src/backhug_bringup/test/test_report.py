"""Session report from a recording made here with SessionRecorder (known loads, phases, a fault)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from backhug_bringup.recorder import PROGRAM_FEEDBACK_TOPIC, PROGRAM_RESULT_TOPIC, SessionRecorder
from backhug_bringup.report import ReportError, main, make_report, summary_text
from rclpy.node import Node
from sensor_msgs.msg import JointState

from backhug_interfaces.action import RunProgram
from backhug_interfaces.msg import FingerSetpoints, SafetyStatus

ROWS = 6
NAMES = [f'finger_{side}_{row:02d}_joint' for side in 'lr' for row in range(1, ROWS + 1)]
RATE_HZ = 50
DURATION_S = 20
T0_NS = 5_000_000_000  # the recording does not start at zero


def _record_session(ros_context, path, *, close=True, bare_feedback=False):
    """20 s: 'warm up' pushes rows 1-2 at 40 N, 'lower back' rows 5-6 at 80 N; loads reach 90 %
    of the setpoint; at 15 s finger l05 spikes to 150 N and the safety monitor faults."""
    node = Node('report_recorder', context=ros_context)
    recorder = SessionRecorder(node, path, {})
    recorder.add_metadata('session', {'program': 'test_program', 'intensity': 0.5})
    for i in range(DURATION_S * RATE_HZ):
        t = i / RATE_HZ
        stamp = T0_NS + int(t * 1e9)
        phase = 0 if t < 10 else 1
        rows, force = ((1, 2), 40.0) if phase == 0 else ((5, 6), 80.0)
        setpoint = np.array([force if int(n[9:11]) in rows else 0.0 for n in NAMES])
        effort = 0.9 * setpoint
        if i == 15 * RATE_HZ:
            effort[NAMES.index('finger_l_05_joint')] = 150.0
        if i % 5 == 0:
            recorder.record(
                '/finger_setpoints',
                FingerSetpoints(name=NAMES, force_n=setpoint.tolist()),
                stamp,
            )
            feedback = RunProgram.Impl.FeedbackMessage()
            feedback.feedback.phase_name = ['warm up', 'lower back'][phase]
            feedback.feedback.phase_index = phase
            feedback.feedback.phase_count = 2
            feedback.feedback.progress = t / DURATION_S
            if bare_feedback:  # as a supervisor logs what its action client received
                recorder.record('/backhug/program_feedback', feedback.feedback, stamp)
            else:  # as recorded from the action's own feedback topic
                recorder.record(PROGRAM_FEEDBACK_TOPIC, feedback, stamp)
        recorder.record(
            '/joint_states',
            JointState(name=NAMES, position=[0.0] * len(NAMES), effort=effort.tolist()),
            stamp + 1000,
        )
        if i == 0:  # start-up: the monitor waits for the streams (not a session fault)
            for reason in ('waiting for /joint_states (0.1 s)', 'waiting for /joint_states'):
                status = SafetyStatus(state=SafetyStatus.FAULT, reasons=[reason])
                recorder.record('/safety/status', status, stamp - 1000)
        if i in (0, 15 * RATE_HZ, 16 * RATE_HZ) or i % 10 == 0:  # on change + periodic
            status = SafetyStatus(state=SafetyStatus.OK)
            if 15 * RATE_HZ <= i < 16 * RATE_HZ:
                status = SafetyStatus(
                    state=SafetyStatus.FAULT,
                    latched=True,
                    reasons=['finger_l_05_joint overload: 150.0 N > 120.0 N'],
                )
                status.latched_at.sec = 15
            recorder.record('/safety/status', status, stamp + 2000)
    result = RunProgram.Result(
        outcome=RunProgram.Result.ABORTED,
        reason='safety fault',
        duration_s=15.0,
        completed_fraction=0.75,
    )
    recorder.record(PROGRAM_RESULT_TOPIC, result, T0_NS + DURATION_S * 1_000_000_000)
    if close:
        recorder.close()
    else:
        recorder.flush()
    node.destroy_node()
    return recorder


def test_report_summary_and_picture(ros_context, tmp_path):
    import matplotlib.image

    path = tmp_path / 'session.mcap'
    _record_session(ros_context, path)
    summary = make_report(path, tmp_path / 'out' / 'report.png')

    assert summary['program'] == 'test_program'
    assert summary['intensity'] == 0.5
    assert summary['duration_s'] == pytest.approx(DURATION_S - 1 / RATE_HZ, abs=0.05)
    assert summary['completion'] == {
        'outcome': 'aborted',
        'completed_fraction': 0.75,
        'reason': 'safety fault',
        'program_duration_s': 15.0,
    }
    assert [p['name'] for p in summary['phases']] == ['warm up', 'lower back']
    assert summary['phases'][1]['start_s'] == pytest.approx(10.0, abs=0.15)
    regions = summary['regions']
    assert regions['upper_back']['peak_n'] == pytest.approx(36.0)
    assert regions['upper_back']['mean_n'] == pytest.approx(36.0)
    assert regions['mid_back'] == {'peak_n': 0.0, 'mean_n': 0.0, 'contact_fraction': 0.0}
    assert regions['lower_back']['peak_n'] == pytest.approx(150.0)
    assert regions['lower_back']['mean_n'] == pytest.approx(72.0, abs=0.2)
    assert regions['lower_back']['contact_fraction'] == pytest.approx(0.5, abs=0.01)
    assert summary['peak_load_n'] == pytest.approx(150.0)
    # Load is 90 % of the setpoint: 4 N error while warming up, 8 N after.
    assert 4.0 < summary['rms_tracking_error_n'] < 8.0
    assert summary['faults'] == [
        {
            'time_s': pytest.approx(15.0, abs=0.01),
            'state': 'FAULT',
            'reasons': ['finger_l_05_joint overload: 150.0 N > 120.0 N'],
        }
    ]
    assert summary['recording_truncated'] is False
    assert summary['ready_at_s'] == pytest.approx(0.0, abs=0.01)

    image = matplotlib.image.imread(tmp_path / 'out' / 'report.png')
    assert image.shape[:2] == (900, 1200)
    assert image[..., :3].std() > 0.1  # not a blank canvas

    text = summary_text(summary)
    assert 'test_program at intensity 0.50' in text
    assert 'aborted, 75 % (safety fault)' in text
    assert 'FAULT at 15.0 s: finger_l_05_joint overload' in text
    assert 'Lower back   peak 150 N' in text


def test_cli_writes_picture_and_json_and_reads_a_truncated_recording(ros_context, tmp_path, capsys):
    path = tmp_path / 'killed.mcap'
    # Never finished (no summary, no footer); feedback logged by a supervisor on its own topic.
    _record_session(ros_context, path, close=False, bare_feedback=True)
    assert main([str(path), '--json', str(tmp_path / 'summary.json')]) == 0
    assert (tmp_path / 'report.png').is_file()
    summary = json.loads((tmp_path / 'summary.json').read_text(encoding='utf-8'))
    assert summary['recording_truncated'] is True
    assert summary['faults'][0]['state'] == 'FAULT'
    assert [p['name'] for p in summary['phases']] == ['warm up', 'lower back']
    assert summary['completion']['outcome'] == 'aborted'
    out = capsys.readouterr().out
    assert 'the recording was cut short' in out


def test_errors_name_the_recording(ros_context, tmp_path, capsys):
    empty = tmp_path / 'empty.mcap'
    node = Node('empty_recorder', context=ros_context)
    SessionRecorder(node, empty, {'/safety/status': 'backhug_interfaces/msg/SafetyStatus'}).close()
    node.destroy_node()
    with pytest.raises(ReportError, match=r'empty\.mcap: no /joint_states .*/safety/status'):
        make_report(empty, tmp_path / 'r.png')
    assert main([str(tmp_path / 'absent.mcap')]) == 2
    assert 'absent.mcap' in capsys.readouterr().err
