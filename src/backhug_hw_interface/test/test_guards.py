"""CommandGuard (pure): the hw_interface guards without a ROS graph.

The node tests (test_hw_interface_node.py, test_hw_interface_serial.py,
test_ros2_control_backend.py) inject each fault through the running node; these pin the
guard's own rules, including start-up before the device link is up.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from backhug_hw_interface.guards import CommandGuard, GuardMode, GuardParams

NAMES = ['finger_l_01_joint', 'finger_r_01_joint']
OK, FAULT = 0, 2
DT = 0.01


def guard(**params) -> CommandGuard:
    return CommandGuard(NAMES, [0.0, 0.0], [0.04, 0.04], GuardParams(**params))


def command(g: CommandGuard, now: float, targets=(0.02, 0.02)) -> None:
    error = g.accept_command(NAMES, list(targets), [True, True], now)
    assert not error, error


def run(g: CommandGuard, start: float, seconds: float, measured=(0.0, 0.0), feed=True):
    """Tick the guard with fresh safety status (and commands if ``feed``); the last output."""
    now, output = start, None
    while now < start + seconds:
        g.accept_safety(OK, now)
        if feed:
            command(g, now)
        output = g.update(now, DT, np.array(measured))
        now += DT
    return output


def test_a_link_never_up_is_waited_for_not_latched():
    g = guard()
    g.set_link(False)  # the board / controller manager not there yet
    out = run(g, 0.0, 0.5)
    assert out.mode is GuardMode.RETRACT and 'waiting for the link' in out.reason
    assert np.all(out.position_m == 0.0), 'moved before the link was up'
    assert g.safe_stop_reason == ''
    g.set_link(True)
    out = run(g, 0.5, 0.1)
    assert out.mode is GuardMode.ACTIVE and np.allclose(out.position_m, 0.02)


def test_a_link_lost_after_it_was_up_latches_and_needs_a_reset_once_it_is_back():
    g = guard()
    g.set_link(True)
    assert run(g, 0.0, 0.1).mode is GuardMode.ACTIVE
    g.set_link(False, 'link to the device lost: unplugged')
    out = run(g, 0.1, 0.3, measured=(0.02, 0.02))
    assert out.mode is GuardMode.RETRACT and 'unplugged' in out.reason
    assert np.all(out.position_m < 0.02), 'not retracting'
    ok, message = g.reset(0.4)
    assert not ok and 'link' in message
    g.set_link(True)  # replugged: fresh commands still move nothing ...
    out = run(g, 0.4, 0.3)
    assert out.mode is GuardMode.RETRACT and 'safe stop' in out.reason
    ok, message = g.reset(0.7)  # ... until the reset
    assert ok, message
    assert run(g, 0.7, 0.1).mode is GuardMode.ACTIVE


def test_stale_commands_hold_then_retract_from_where_the_finger_is():
    g = guard(command_timeout_s=0.2, hold_timeout_s=0.3, retract_speed_m_s=0.02)
    g.set_link(True)
    run(g, 0.0, 0.1)
    held = run(g, 0.1, 0.25, measured=(0.015, 0.02), feed=False)
    assert held.mode is GuardMode.HOLD and np.allclose(held.position_m, 0.02)
    out = run(g, 0.35, 0.3, measured=(0.015, 0.02), feed=False)
    assert out.mode is GuardMode.RETRACT and 'controllers gone' in out.reason
    # Started from the measured 15 mm (not the 20 mm target) on the blocked finger.
    assert out.position_m[0] < 0.015 and out.position_m[0] > 0.015 - 0.02 * 0.3


def test_bad_commands_are_rejected_and_out_of_range_targets_clamped():
    g = guard()
    g.set_link(True)
    for names, targets in (
        (NAMES, [math.nan, 0.01]),
        (NAMES, [0.01]),
        (['finger_l_01_joint', 'nobody'], [0.01, 0.01]),
    ):
        assert g.accept_command(names, targets, [True] * len(targets), 0.0)
    assert g.rejected_commands == 3
    command(g, 0.0, (0.05, -0.01))
    assert g.clamped_commands == 1
    g.accept_safety(OK, 0.0)
    out = g.update(0.0, DT, np.zeros(2))
    assert np.allclose(out.position_m, [0.04, 0.0])


def test_no_safety_monitor_no_motion_and_a_silent_one_latches():
    g = guard(safety_timeout_s=0.5)
    g.set_link(True)
    command(g, 0.0)
    out = g.update(0.0, DT, np.zeros(2))
    assert out.mode is GuardMode.RETRACT and 'no safety status' in out.reason
    assert g.safe_stop_reason == ''  # never heard: a pause, not a latch
    run(g, 0.0, 0.1)
    command(g, 0.8)
    out = g.update(0.8, DT, np.zeros(2))  # the monitor was heard and went silent
    assert out.mode is GuardMode.RETRACT and g.safe_stop_reason
    g.accept_safety(FAULT, 0.9)
    assert not g.reset(0.9)[0]


@pytest.mark.parametrize('name', ['command_timeout_s', 'safety_timeout_s', 'retract_speed_m_s'])
@pytest.mark.parametrize('value', [math.nan, -1.0, 100.0])
def test_bad_parameters_are_refused_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        GuardParams(**{name: value}).validate()
