"""DeviceSimulation on real MuJoCo physics: load sharing, stiffness, contact, servo and faults.

Every figure is measured from the simulation through the same interface the board emulator and
the mujoco backend use (targets in, positions and tip loads out) and compared with the simulated
user's configuration or the ground-truth accessors.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from backhug_hw_interface.sim import DeviceSimulation, SimulatedUser, destiffened_stiffness

from backhug_description import load_description

CONTROL_DT_S = 0.005  # 200 Hz, the slowest control rate hw_interface runs at
ROW_5_LEFT = 4  # joint order: left rows 1..13, then right rows 1..13


@pytest.fixture(scope='module')
def description():
    return load_description('sim')


def _hold(sim: DeviceSimulation, targets: np.ndarray, enable: np.ndarray, seconds: float) -> None:
    sim.set_targets(targets, enable)
    for _ in range(round(seconds / CONTROL_DT_S)):
        sim.step(CONTROL_DT_S)


def _only(sim: DeviceSimulation, finger: int) -> np.ndarray:
    enable = np.zeros(sim.joint_count, dtype=bool)
    enable[finger] = True
    return enable


def measure_stiffness(
    sim: DeviceSimulation, finger: int, low_n: float = 20.0, high_n: float = 60.0
) -> float:
    """Load ramp low->high N on one finger through position targets; slope of load vs position.

    The finger approaches to 3 mm below the back, then rises at 3 mm/s (quasi-static for the
    tissue's ~20 ms time constant); the slope is fitted over the samples between the two loads.
    """
    enable = _only(sim, finger)
    targets = np.zeros(sim.joint_count)
    targets[finger] = max(0.0, sim.true_contact_height_m()[finger] - 0.003)
    _hold(sim, targets, enable, 1.0)
    positions, loads = [], []
    while sim.load_n[finger] < high_n + 5.0:
        targets[finger] += 0.003 * CONTROL_DT_S
        assert targets[finger] < sim.joints[finger].upper_m, 'ramp ran out of stroke'
        _hold(sim, targets, enable, CONTROL_DT_S)
        positions.append(sim.position_m[finger])
        loads.append(sim.load_n[finger])
    positions, loads = np.array(positions), np.array(loads)
    window = (loads >= low_n) & (loads <= high_n)
    assert window.sum() > 50
    slope_n_per_m = np.polyfit(positions[window], loads[window], 1)[0]
    return slope_n_per_m / 1000.0


def test_fingers_raised_carry_the_whole_trunk_weight(description) -> None:
    sim = DeviceSimulation(description, 'default', seed=0)
    enable = np.ones(sim.joint_count, dtype=bool)
    # Retracted: the back rests on the pad, the fingers carry nothing.
    _hold(sim, np.zeros(sim.joint_count), enable, 0.5)
    assert np.all(np.abs(sim.load_n) < 0.5)
    # Every finger 15 mm above where it meets the back: the torso leaves the pad.
    targets = np.minimum(sim.true_contact_height_m() + 0.015, 0.04)
    started = time.perf_counter()
    _hold(sim, targets, enable, 5.0)
    elapsed = time.perf_counter() - started
    assert sim.torso_height_m() > 0.005
    total = sim.load_n.sum()
    weight = sim.user.trunk_mass_kg * 9.80665
    print(
        f'\ntip loads sum {total:.2f} N, trunk weight {weight:.2f} N (ratio {total / weight:.5f}); '
        f'5 s simulated at {CONTROL_DT_S * 1000:.0f} ms steps in {elapsed:.2f} s: '
        f'real-time factor ~{5.0 / elapsed:.1f}'
    )
    assert total == pytest.approx(weight, rel=0.02)
    assert np.all(sim.load_n > -0.5)


@pytest.mark.parametrize('finger', [0, ROW_5_LEFT, 8, 12, 13 + 6])
def test_load_ramp_measures_the_configured_row_stiffness(description, finger: int) -> None:
    sim = DeviceSimulation(description, 'default', seed=1)
    configured = sim.true_stiffness_n_per_mm()[finger]
    measured = measure_stiffness(sim, finger)
    print(f'\n{sim.joint_names[finger]}: configured {configured:.2f}, measured {measured:.2f} N/mm')
    assert measured == pytest.approx(configured, rel=0.10)
    # The torso's weight and the pad hold it: it hardly moves under a single 60 N finger.
    assert abs(sim.torso_height_m()) < 0.0005


def test_stiff_segment_measures_stiffer_than_its_neighbours(description) -> None:
    user = SimulatedUser.load('stiff_t7')
    user = dataclasses.replace(
        user, destiffening=dataclasses.replace(user.destiffening, enabled=False)
    )
    measured = {}
    for finger in (ROW_5_LEFT - 1, ROW_5_LEFT, ROW_5_LEFT + 1):
        sim = DeviceSimulation(description, user, seed=2)
        measured[finger] = measure_stiffness(sim, finger)
        assert measured[finger] == pytest.approx(sim.true_stiffness_n_per_mm()[finger], rel=0.10)
    print(f'\nstiff_t7 rows 4, 5, 6 measured (N/mm): {list(measured.values())}')
    assert measured[ROW_5_LEFT] > 1.5 * measured[ROW_5_LEFT - 1]
    assert measured[ROW_5_LEFT] > 1.5 * measured[ROW_5_LEFT + 1]


def test_slow_rise_finds_the_true_contact_height(description) -> None:
    sim = DeviceSimulation(description, 'default', seed=3)
    truth = sim.true_contact_height_m()
    assert np.ptp(truth) > 0.010  # the back's curve shows up in the profile
    threshold_n, speed_m_s = 1.5, 0.002
    enable = np.ones(sim.joint_count, dtype=bool)
    targets = np.zeros(sim.joint_count)
    found = np.full(sim.joint_count, np.nan)
    while np.isnan(found).any():
        assert sim.time_s < 30.0, f'no contact for fingers {np.flatnonzero(np.isnan(found))}'
        rising = np.isnan(found)
        targets[rising] += speed_m_s * CONTROL_DT_S
        _hold(sim, targets, enable, CONTROL_DT_S)
        touched = rising & (sim.load_n > threshold_n)
        found[touched] = sim.position_m[touched]
        targets[touched] = sim.position_m[touched]
    error_mm = (found - truth) * 1000.0
    print(f'\ncontact height error (mm): max |{np.max(np.abs(error_mm)):.2f}|')
    assert np.all(np.abs(error_mm) < 2.0)
    # Touching fingers do not lift the back: the ground truth has not moved.
    np.testing.assert_allclose(sim.true_contact_height_m(), truth, atol=0.0005)


def _scripted_run(description, seed: int) -> np.ndarray:
    sim = DeviceSimulation(description, 'default', seed=seed)
    enable = np.ones(sim.joint_count, dtype=bool)
    trace = []
    for step in range(600):
        phase = np.sin(2 * np.pi * 1.5 * step * CONTROL_DT_S + np.arange(sim.joint_count) / 4)
        targets = sim.true_contact_height_m() * 0 + 0.012 + 0.008 * phase
        if step == 300:
            sim.push(ROW_5_LEFT, 40.0, 0.2)
        sim.set_targets(targets, enable)
        sim.step(CONTROL_DT_S)
        trace.append(np.concatenate([sim.position_m, sim.velocity_m_s, sim.load_n]))
    trace.append(sim.data.qpos.copy())
    return np.concatenate(trace)


def test_same_seed_gives_bit_identical_trajectories(description) -> None:
    first = _scripted_run(description, seed=7)
    second = _scripted_run(description, seed=7)
    assert np.array_equal(first, second)
    other = _scripted_run(description, seed=8)
    assert not np.array_equal(first, other)  # the seed drives the load-cell noise


def test_disabled_fingers_retract_at_the_velocity_limit(description) -> None:
    sim = DeviceSimulation(description, 'default', seed=0)
    enable = np.ones(sim.joint_count, dtype=bool)
    _hold(sim, np.full(sim.joint_count, 0.030), enable, 1.2)
    raised = sim.position_m.copy()
    assert np.all(raised > 0.025)
    enable[::2] = False
    limit = np.array([j.velocity_limit_m_s for j in sim.joints])
    peak_speed = np.zeros(sim.joint_count)
    sim.set_targets(np.full(sim.joint_count, 0.030), enable)
    for _ in range(round(1.0 / CONTROL_DT_S)):
        sim.step(CONTROL_DT_S)
        peak_speed = np.maximum(peak_speed, np.abs(sim.velocity_m_s))
    assert np.all(sim.position_m[::2] < 0.0005)
    np.testing.assert_allclose(sim.position_m[1::2], raised[1::2], atol=0.001)
    assert np.all(peak_speed <= 1.1 * limit)
    assert np.all(peak_speed[::2] >= 0.8 * limit[::2])


def test_bad_targets_are_rejected_before_anything_moves(description) -> None:
    sim = DeviceSimulation(description, 'default', seed=0)
    enable = np.ones(sim.joint_count, dtype=bool)
    _hold(sim, np.full(sim.joint_count, 0.010), enable, 0.5)
    before = sim.position_m
    bad = np.full(sim.joint_count, 0.040)
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r'position_m\[3\] is nan'):
        sim.set_targets(bad, enable)
    with pytest.raises(ValueError, match=r'position_m must have 26 entries'):
        sim.set_targets(np.zeros(5), enable)
    with pytest.raises(ValueError, match=r'enable must have 26 entries'):
        sim.set_targets(np.zeros(sim.joint_count), enable[:3])
    with pytest.raises(ValueError, match=r'dt_s'):
        sim.step(float('inf'))
    for _ in range(100):
        sim.step(CONTROL_DT_S)
    # The previous targets still hold: nothing moved towards the rejected 40 mm.
    np.testing.assert_allclose(sim.position_m, before, atol=0.0005)


def test_servo_force_is_limited_to_the_effort_limit(description) -> None:
    sim = DeviceSimulation(description, 'default', seed=0)
    # Row 5 meets the back at ~5 mm; 40 mm would need ~440 N of tissue compression.
    enable = _only(sim, ROW_5_LEFT)
    targets = np.zeros(sim.joint_count)
    targets[ROW_5_LEFT] = 0.040
    _hold(sim, targets, enable, 2.0)
    limit = sim.joints[ROW_5_LEFT].effort_limit_n
    assert sim.position_m[ROW_5_LEFT] < 0.035  # stopped by the force limit, not the target
    assert sim.load_n[ROW_5_LEFT] <= limit + 1.0
    assert sim.load_n[ROW_5_LEFT] > 0.9 * limit


def test_faults_freeze_stall_and_push(description) -> None:
    sim = DeviceSimulation(description, 'default', seed=0)
    finger = ROW_5_LEFT
    enable = _only(sim, finger)
    targets = np.zeros(sim.joint_count)
    targets[finger] = sim.true_contact_height_m()[finger] + 0.002
    _hold(sim, targets, enable, 1.0)
    resting = sim.load_n[finger]
    assert resting > 15.0
    # Push: the user presses down 50 N onto that finger for 0.3 s.
    sim.inject('push', finger, force_n=50.0, duration_s=0.3)
    _hold(sim, targets, enable, 0.25)
    # The push compresses the finger's servo and relaxes the tissue above it: the load cell
    # sees the servo's share of it, kp / (kp + k_tissue).
    kp = sim.servo.kp_n_per_m / 1000.0
    share = kp / (kp + sim.true_stiffness_n_per_mm()[finger])
    assert sim.load_n[finger] == pytest.approx(resting + 50.0 * share, abs=1.0)
    _hold(sim, targets, enable, 0.3)
    assert sim.load_n[finger] == pytest.approx(resting, abs=1.0)
    # Frozen sensor: the sample stops changing while the finger really moves.
    sim.inject('freeze_sensor', sim.joint_names[finger])
    frozen_position, frozen_load = sim.position_m[finger], sim.load_n[finger]
    targets[finger] = 0.0
    _hold(sim, targets, enable, 1.0)
    assert sim.position_m[finger] == frozen_position
    assert sim.load_n[finger] == frozen_load
    sim.clear()
    assert sim.position_m[finger] < 0.001
    # Stalled finger: ignores new targets and disable until cleared.
    sim.stall_finger(finger)
    targets[finger] = 0.010
    _hold(sim, targets, enable, 0.5)
    assert sim.position_m[finger] < 0.001
    sim.clear(finger)
    _hold(sim, targets, enable, 1.0)
    assert sim.position_m[finger] > 0.008
    with pytest.raises(ValueError, match='kind must be one of'):
        sim.inject('explode', finger)
    with pytest.raises(ValueError, match='force_n'):
        sim.push(finger, float('nan'), 1.0)
    with pytest.raises(ValueError, match='finger index'):
        sim.stall_finger(99)


def test_mobilisation_destiffens_the_segment_by_the_modelled_amount(description) -> None:
    user = SimulatedUser.load('stiff_t7')
    law = dataclasses.replace(user.destiffening, work_scale_j=0.5)
    user = dataclasses.replace(user, destiffening=law)
    sim = DeviceSimulation(description, user, seed=4)
    finger = ROW_5_LEFT
    initial = sim.true_stiffness_n_per_mm()
    before = measure_stiffness(sim, finger)
    # 20 cycles of 1 Hz mobilisation between 1 and 4 mm into the back.
    enable = _only(sim, finger)
    contact = sim.true_contact_height_m()[finger]
    targets = np.zeros(sim.joint_count)
    for step in range(round(20.0 / CONTROL_DT_S)):
        depth = 0.0025 - 0.0015 * np.cos(2 * np.pi * step * CONTROL_DT_S)
        targets[finger] = contact + depth
        _hold(sim, targets, enable, CONTROL_DT_S)
    work = sim.mobilisation_work_j()
    now = sim.true_stiffness_n_per_mm()
    expected = destiffened_stiffness(initial, work, law)
    np.testing.assert_allclose(now, expected, rtol=1e-12)
    # The segment softened noticeably but not below the floor; untouched fingers are unchanged.
    assert now[finger] < 0.9 * initial[finger]
    assert now[finger] >= law.floor_fraction * initial[finger]
    # Other tissues only quiver as the torso is nudged (~1e-7 J): practically unchanged.
    untouched = work < 1e-4
    assert untouched.sum() == sim.joint_count - 1
    np.testing.assert_allclose(now[untouched], initial[untouched], rtol=1e-5)
    after = measure_stiffness(sim, finger)
    print(
        f'\nT7 before {before:.2f} N/mm, after 20 cycles ({work[finger]:.2f} J) '
        f'{after:.2f} N/mm, modelled {sim.true_stiffness_n_per_mm()[finger]:.2f} N/mm'
    )
    assert after == pytest.approx(sim.true_stiffness_n_per_mm()[finger], rel=0.10)
    # Much more mobilisation: bounded by the floor.
    for step in range(round(20.0 / CONTROL_DT_S)):
        targets[finger] = contact + 0.004 - 0.003 * np.cos(2 * np.pi * step * CONTROL_DT_S)
        _hold(sim, targets, enable, CONTROL_DT_S)
    final = sim.true_stiffness_n_per_mm()[finger]
    assert law.floor_fraction * initial[finger] <= final < now[finger]


def test_default_user_does_not_destiffen(description) -> None:
    sim = DeviceSimulation(description, 'default', seed=0)
    enable = _only(sim, ROW_5_LEFT)
    targets = np.zeros(sim.joint_count)
    targets[ROW_5_LEFT] = sim.true_contact_height_m()[ROW_5_LEFT] + 0.004
    _hold(sim, targets, enable, 1.0)
    assert sim.mobilisation_work_j()[ROW_5_LEFT] > 0.0
    np.testing.assert_array_equal(sim.true_stiffness_n_per_mm(), sim.initial_stiffness_n_per_mm())
