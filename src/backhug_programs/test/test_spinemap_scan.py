"""The scan state machine against a simple tissue plant (pure logic, no physics engine).

The plant: each finger's tip meets the back at its contact height, then the load grows linearly
with the given stiffness; the finger moves towards the force setpoint by a first-order admittance.
The MuJoCo-backed acceptance test of the scan lives with the system tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from backhug_programs.spinemap.scan import FingerGeometry, ScanSettings, ScanStage, SpineScan

ROWS = 4


def fingers() -> list[FingerGeometry]:
    return [
        FingerGeometry(f'finger_{side}_{row:02d}_joint', side, row, 0.035 * (row - 1))
        for side in 'lr'
        for row in range(1, ROWS + 1)
    ]


def run(scan: SpineScan, contact_m, stiffness_n_per_mm, *, dt=0.005, t_end=200.0, fault_at=None):
    """Close the loop until the scan is done; returns the highest setpoint it ever asked for."""
    n = len(scan.fingers)
    position = np.zeros(n)
    k = np.asarray(stiffness_n_per_mm) * 1000.0
    contact = np.asarray(contact_m)
    highest = 0.0
    t = 0.0
    while not scan.done and t < t_end:
        load = np.clip(k * (position - contact), 0.0, None)
        if fault_at is not None and t >= fault_at:
            scan.abort('safety fault: overload on finger_l_02_joint')
        setpoints = scan.update(t, position, load)
        highest = max(highest, float(setpoints.max()))
        # Admittance towards the setpoint; retract when the setpoint is zero.
        velocity = np.where(setpoints > 0.0, 2e-3 * (setpoints - load), -0.05)
        position = np.clip(position + np.clip(velocity, -0.05, 0.02) * dt, 0.0, 0.04)
        t += dt
    return highest


def test_scan_measures_contact_and_stiffness_of_every_finger():
    contact = np.array([0.010, 0.012, 0.015, 0.011] * 2)
    stiffness = np.array([3.0, 6.0, 4.0, 2.5, 3.2, 5.8, 4.1, 2.4])
    levels = [('T1', 0.0), ('T2', 0.035), ('T3', 0.07), ('T4', 0.105)]
    scan = SpineScan(fingers(), ScanSettings(cycles=2, ramp_rate_n_per_s=40.0), levels, 'ada')
    highest = run(scan, contact, stiffness)
    assert scan.done
    result = scan.result()
    assert result.complete and result.reason == ''
    assert highest <= 60.0
    for finger, c, k in zip(result.fingers, contact, stiffness, strict=True):
        assert finger.valid, finger
        assert finger.contact_height_m == pytest.approx(c, abs=0.5e-3)
        assert finger.stiffness_n_per_mm == pytest.approx(k, rel=0.05)
        assert finger.cycles == 2
    assert result.stiffest(1) == ['T2']
    assert result.segments[1].stiffness_left_n_per_mm == pytest.approx(6.0, rel=0.05)


def test_rows_at_once_probes_distant_rows_together():
    scan = SpineScan(fingers(), ScanSettings(rows_at_once=2))
    assert sorted(scan.active_fingers) == sorted(
        ['finger_l_01_joint', 'finger_r_01_joint', 'finger_l_03_joint', 'finger_r_03_joint']
    )


def test_abort_mid_scan_gives_a_partial_incomplete_map_and_zero_setpoints():
    scan = SpineScan(fingers(), ScanSettings(cycles=2, ramp_rate_n_per_s=40.0))
    run(scan, [0.01] * 8, [4.0] * 8, fault_at=12.0)
    result = scan.result()
    assert scan.done and not result.complete
    assert 'overload' in result.reason
    assert result.fingers[0].valid
    assert not result.fingers[3].valid
    assert np.all(scan.update(13.0, np.zeros(8), np.zeros(8)) == 0.0)


def test_finger_that_never_touches_is_reported_not_guessed():
    contact = np.array([0.010, 0.5, 0.010, 0.010] * 2)  # row 2 left and right: nothing to touch
    scan = SpineScan(fingers(), ScanSettings(cycles=1, contact_timeout_s=2.0))
    run(scan, contact, [4.0] * 8)
    result = scan.result()
    missing = [f for f in result.fingers if f.row == 2]
    assert all(math.isnan(f.contact_height_m) and not f.valid for f in missing)
    assert all(f.error for f in missing)
    # Finished, but with holes: not a complete map, and the reason names the fingers.
    assert scan.done and not result.complete
    assert 'no measurement on 2 of 8 fingers' in result.reason
    assert 'finger_l_02_joint' in result.reason and 'finger_r_02_joint' in result.reason


def test_nan_in_the_joint_state_aborts_the_scan():
    scan = SpineScan(fingers())
    scan.update(0.0, np.zeros(8), np.zeros(8))
    load = np.zeros(8)
    load[2] = np.nan
    assert np.all(scan.update(0.01, np.zeros(8), load) == 0.0)
    assert scan.stage is ScanStage.DONE
    assert 'NaN' in scan.result().reason


@pytest.mark.parametrize(
    ('field', 'value'),
    [
        ('band_max_force_n', 150.0),
        ('cycles', 0),
        ('contact_force_n', 30.0),
        ('band_min_force_n', 70.0),
    ],
)
def test_settings_out_of_range_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        SpineScan(fingers(), ScanSettings(**{field: value}))


def test_wrong_sample_length_is_rejected():
    with pytest.raises(ValueError, match='expected 8 positions'):
        SpineScan(fingers()).update(0.0, np.zeros(7), np.zeros(7))
