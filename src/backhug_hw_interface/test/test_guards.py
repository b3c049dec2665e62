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


def follow(g: CommandGuard, seconds: float, device, load_n=(0.0, 0.0)) -> str:
    """Run the guard against ``device(target, measured) -> measured`` (loads ``load_n``) with
    fresh commands of (0.03, 0.03) and OK status; the reason it latched ('' if it never did)."""
    now, measured = 0.0, np.zeros(2)
    while now < seconds:
        g.accept_safety(OK, now)
        command(g, now, (0.03, 0.03))
        out = g.update(now, DT, measured)
        measured = device(out.position_m, measured)
        reason = g.check_following(DT, out.position_m, measured, np.array(load_n))
        if reason:
            return reason
        now += DT
    return ''


def ramp(target, measured, speed=0.02):
    return measured + np.clip(target - measured, -speed * DT, speed * DT)


def test_a_finger_following_its_target_is_never_latched():
    g = guard()
    g.set_link(True)
    # 30 mm steps at 20 mm/s: 25 mm behind for 1.5 s, but moving all the time
    assert follow(g, 3.0, ramp) == ''
    # slow (2.5 mm/s) but moving: still following
    g2 = guard()
    g2.set_link(True)
    assert follow(g2, 3.0, lambda t, m: ramp(t, m, speed=0.0025)) == ''
    # pressing 150 N, 3.1 mm short of its target: 3 mm sag (50 N/mm servo) + 0.1 mm: not a stall
    g3 = guard()
    g3.set_link(True)
    short = lambda t, m: np.minimum(ramp(t, m), t - 0.0031)  # noqa: E731
    assert follow(g3, 3.0, short, load_n=(150.0, 150.0)) == ''
    # settling 0.1 mm above its target (within stall_error_m): not a stall
    g4 = guard()
    g4.set_link(True)
    assert follow(g4, 3.0, lambda t, m: np.minimum(ramp(t, m), t) + 0.0001) == ''


def test_a_finger_short_of_its_target_with_no_load_to_explain_it_latches():
    g = guard()
    g.set_link(True)
    short = lambda t, m: np.minimum(ramp(t, m), t - 0.0033)  # noqa: E731
    reason = follow(g, 3.0, short, load_n=(160.0, 10.0))  # r_01: 10 N explains 0.2 mm of 3.3
    assert 'finger_r_01_joint' in reason and 'finger_l_01_joint' not in reason, reason


def test_a_finger_jammed_low_that_does_not_retract_latches():
    """Jammed 4 mm up while its target is 0 (the controllers lowering it): above its target,
    which no load explains."""
    g = guard(stall_time_s=0.3)
    g.set_link(True)
    now, measured = 0.0, np.array([0.004, 0.0])
    reason = ''
    while now < 2.0 and not reason:
        g.accept_safety(OK, now)
        command(g, now, (0.0, 0.0))
        out = g.update(now, DT, measured)
        reason = g.check_following(DT, out.position_m, measured)  # finger_l_01 stays at 4 mm
        now += DT
    assert 'finger_l_01_joint' in reason and 'finger_r_01_joint' not in reason, reason
    assert 0.3 < now < 0.45


def test_a_jammed_finger_latches_a_safe_stop_naming_it():
    g = guard(stall_time_s=0.3)
    g.set_link(True)
    jam_at = 0.010

    def device(target, measured):
        moved = ramp(target, measured)
        moved[1] = min(moved[1], jam_at)  # finger_r_01 jams at 10 mm
        return moved

    reason = follow(g, 3.0, device)
    assert 'finger_r_01_joint' in reason and 'finger_l_01_joint' not in reason, reason
    assert 'not following' in reason and '10.0 mm' in reason
    assert g.safe_stop_reason == reason
    out = g.update(5.0, DT, np.array([0.03, jam_at]))
    assert out.mode is GuardMode.RETRACT, 'a latched stall must retract every finger'
    # and it holds until a reset
    g.accept_safety(OK, 5.0)
    command(g, 5.0)
    assert g.update(5.0, DT, np.array([0.0, jam_at])).mode is GuardMode.RETRACT


def test_a_frozen_position_sensor_latches_within_the_stall_time():
    g = guard(stall_time_s=0.5)
    g.set_link(True)
    frozen, ticks = {}, []

    def device(target, measured):
        ticks.append(1)
        moved = ramp(target, measured)
        if moved[0] >= 0.004:
            frozen.setdefault('at', moved[0])
            moved[0] = frozen['at']  # the sensor of finger_l_01 reads the same from here on
        return moved

    reason = follow(g, 3.0, device)
    assert 'finger_l_01_joint' in reason, reason
    # frozen at 0.2 s (4 mm at 20 mm/s), already > 5 mm from its 30 mm target: latched 0.5 s
    # later, not at the end of the run
    assert 0.65 < len(ticks) * DT < 0.8


def test_no_stall_judged_while_the_link_is_down():
    g = guard(stall_time_s=0.1)
    g.set_link(True)
    run(g, 0.0, 0.1)
    g.set_link(False, 'unplugged')
    for _ in range(100):  # stale positions while the link is down: not a stall
        assert g.check_following(DT, np.full(2, 0.03), np.zeros(2)) == ''
    assert 'unplugged' in g.safe_stop_reason


@pytest.mark.parametrize(
    'name',
    [
        'command_timeout_s',
        'safety_timeout_s',
        'retract_speed_m_s',
        'stall_error_m',
        'stall_time_s',
        'servo_stiffness_n_per_m',
    ],
)
@pytest.mark.parametrize('value', [math.nan, -1.0, 1e9])
def test_bad_parameters_are_refused_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        GuardParams(**{name: value}).validate()
