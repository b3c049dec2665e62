"""Issue 8 acceptance on the MuJoCo device: the spine scan through the whole system over DDS.

hw_interface (MuJoCo backend), safety_monitor, finger_controllers and program_sequencer run as
processes from config/system.yaml; this test is the operator. The simulated user is stiff_t7
(a stiff row-5 segment, de-stiffening on) with a shorter de-stiffening work scale (3 J instead of
30 J, written to a test YAML) so a 25-second treatment changes the back measurably while a scan
changes it little. Ground truth: ``DeviceSimulation`` of the same user (contact heights and
initial stiffness) and, as the back changes, the simulation itself: hw_interface's /diagnostics
carry the simulated user's current stiffness and mobilisation work per finger (mujoco backend
only), stamped in simulated time.

1. A full scan (2 cycles, band 20-60 N): every finger's contact height within 2 mm of the
   simulated back, each measured segment's stiffness within 10 % of the simulated one, the stiffest
   simulated segment ranked stiffest; and (its own test) no load above the band's top + 10 %
   while it ran.
2. A treatment (rhythmic presses over the stiff segment), then an after-scan of rows 1-7 (the scan
   is cancelled once row 7 is done; the cancelled result carries the rows scanned): the measured
   change of each treated finger matches the simulated change within the stated uncertainty.
3. A load spike injected mid-scan aborts it: fingers retracted, partial map marked incomplete.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import yaml
from sim_system import RELAXED_LIVENESS, SimSystem

from conftest import wait_for

SPEED = 3.0  # simulated s per wall s
BAND_MAX_N = 60.0  # ScanSettings default band 20 -> 60 N
CYCLES = 2  # the fewest that still give an uncertainty
WORK_SCALE_J = 3.0
TREATMENT = """
id: system_test_mobilise
name: System test mobilisation
description: Rhythmic presses over the stiff segment, to de-stiffen it.
phases:
  - name: mobilise
    region: T6-T7
    pattern: rhythmic_press
    force_n: 100
    frequency_hz: 0.75
    duration_s: 25
    ramp_s: 2
"""


@pytest.fixture(scope='module')
def user_file(tmp_path_factory):
    from backhug_hw_interface.sim.user import resolve_user_path

    data = yaml.safe_load(resolve_user_path('stiff_t7').read_text())
    data['name'] = 'stiff_t7_fast_destiffening'
    data['destiffening'] = {'enabled': True, 'floor_fraction': 0.7, 'work_scale_j': WORK_SCALE_J}
    path = tmp_path_factory.mktemp('user') / 'stiff_t7_fast_destiffening.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope='module')
def system(tmp_path_factory, user_file):
    system = SimSystem(
        tmp_path_factory.mktemp('spinemap_system'),
        sim_user=str(user_file),
        sim_speed=SPEED,
        overrides=RELAXED_LIVENESS,
    )
    system.started = time.monotonic()
    try:
        system.wait_ready()
        yield system
    finally:
        codes = system.stop()
        print(f'\nnode exit codes: {codes}')


@pytest.fixture(scope='module')
def truth(system, user_file):
    """Ground truth of the simulated user at rest (before any mobilisation)."""
    from backhug_hw_interface.sim import DeviceSimulation, SimulatedUser

    sim = DeviceSimulation(system.description, SimulatedUser.load(user_file), seed=0)
    return {
        'user': sim.user,
        'contact_m': sim.true_contact_height_m(),
        'k0': sim.initial_stiffness_n_per_mm(),
    }


@pytest.fixture(scope='module')
def shared():
    return {}


def profile():
    from backhug_interfaces.msg import UserProfile

    return UserProfile(user_id='stiff_t7', height_m=1.75, weight_kg=75.0)


def levels(system):
    from backhug_programs.spine_model import levels_for_user

    return levels_for_user(profile(), system.description, 1.75)


def scan_goal(system):
    return system.ScanSpine.Goal(user=profile(), measure_stiffness=True, cycles=CYCLES)


def to_result(system, msg):
    from backhug_bringup.run import scan_result_from_message

    return scan_result_from_message(msg, system.description)


def simulated_during(system, truth, since_wall: float) -> tuple[np.ndarray, np.ndarray]:
    """Per finger: the simulated stiffness while it was measured (mean over its samples in the
    band since ``since_wall``; NaN if none), and the mobilisation work so far (J).

    The simulation's own ground truth, read from hw_interface's /diagnostics (~1 Hz wall, stamped
    in simulated time) and interpolated at the simulated time of each joint-state sample.
    """
    assert wait_for(lambda: len(system.sim_truth) >= 2, 10.0), 'no ground truth in /diagnostics'
    time.sleep(1.5)  # one more sample after the scan's end
    with system.lock:
        everything = [s for s in system.joint_states if s[0] >= since_wall]
        series = list(system.sim_truth)
    sim_times = np.array([t for t, _k, _w in series])
    stiffness = np.array([k for _t, k, _w in series])
    stamps = np.array([s[1] for s in everything])
    loads = np.array([s[3] for s in everything])
    expected = np.full(len(truth['k0']), math.nan)
    for i in range(len(expected)):
        inside = (loads[:, i] >= 20.0) & (loads[:, i] <= BAND_MAX_N)
        if np.any(inside):
            expected[i] = float(np.mean(np.interp(stamps[inside], sim_times, stiffness[:, i])))
    return expected, series[-1][2]


def segment_truth(system, stiffness: np.ndarray):
    """The simulated stiffness per level, mapped exactly as the scan maps its fingers."""
    from backhug_programs.spinemap.analysis import FingerResult, segment_map
    from backhug_programs.spinemap.scan import FingerGeometry, _row_pitch

    fingers = [
        FingerResult(j.name, j.side, j.row, j.spine_offset_m, 0.0, float(k), 0.0, 1)
        for j, k in zip(system.description.joints, stiffness, strict=True)
    ]
    geometry = [
        FingerGeometry(j.name, j.side, j.row, j.spine_offset_m) for j in system.description.joints
    ]
    return segment_map(fingers, levels(system), _row_pitch(geometry))


def run_scan(system, cancel_after_rows: int | None = None, fault=None):
    feedback: list = []
    start = time.monotonic()
    stamp0 = system.latest()[1]
    handle = system.send(system.scan_client, scan_goal(system), feedback)
    rows = 13
    if cancel_after_rows is not None or fault is not None:
        target = cancel_after_rows if cancel_after_rows is not None else fault[0]
        result_future = handle.get_result_async()
        reached = wait_for(
            lambda: (
                result_future.done()
                or (feedback and feedback[-1][1].progress >= target / rows - 1e-6)
            ),
            400.0,
            0.05,
        )
        ended = result_future.done() and result_future.result().result.reason
        assert reached and not ended, (
            f'scan never reached row {target + 1}: {ended}\n{system.log_tail()}'
        )
        if fault is not None:
            wait_for(lambda: feedback[-1][1].stage == 'stiffness', 60.0, 0.02)
            time.sleep(1.0)
            fault[1](feedback[-1][1].finger)
        else:
            handle.cancel_goal_async()
    result = system.result(handle, 600.0)
    wall = time.monotonic() - start
    sim = system.latest()[1] - stamp0
    return result, feedback, start, wall, sim


def test_full_scan_matches_the_simulated_back(system, truth, shared):
    result, feedback, start, wall, sim = run_scan(system)
    end = time.monotonic()
    assert result.outcome == system.ScanSpine.Result.COMPLETED, (result.reason, system.log_tail())
    scan = to_result(system, result.map)
    shared['before'] = scan
    shared['before_window'] = (start, end)
    assert scan.complete and len(scan.fingers) == 26
    contact = np.array([f.contact_height_m for f in scan.fingers])
    stiffness = np.array([f.stiffness_n_per_mm for f in scan.fingers])
    spread = np.array([f.uncertainty_n_per_mm for f in scan.fingers])
    contact_error_mm = (contact - truth['contact_m']) * 1000.0

    expected, work = simulated_during(system, truth, start)
    shared['during_before'] = expected
    k_error = (stiffness - expected) / expected * 100.0
    states = system.states_since(start)
    loads = np.array([s[3] for s in states])

    measured_segments = {s.level: s for s in scan.segments}
    true_segments = segment_truth(system, expected)
    rows = []
    for true in true_segments:
        got = measured_segments[true.level]
        for side, t, m in (
            ('l', true.stiffness_left_n_per_mm, got.stiffness_left_n_per_mm),
            ('r', true.stiffness_right_n_per_mm, got.stiffness_right_n_per_mm),
        ):
            if math.isfinite(t):
                rows.append((true.level, side, t, m, (m - t) / t * 100.0))
    peak_load = float(loads.max())
    peak_at = np.unravel_index(np.argmax(loads), loads.shape)
    peak_wall = states[peak_at[0]][0]
    with system.lock:
        near = [f[peak_at[1]] for t, f in system.setpoints if abs(t - peak_wall) < 0.5]
    trace = loads[max(0, peak_at[0] - 30) : peak_at[0] + 10, peak_at[1]]
    window = states[max(0, peak_at[0] - 30) : peak_at[0] + 10]
    with system.lock:
        commands = [(t, c[peak_at[1]]) for t, c in system.commands if abs(t - peak_wall) < 0.4]
    over = np.flatnonzero(loads.max(axis=0) > 1.1 * BAND_MAX_N)
    print(
        f'  fingers over {1.1 * BAND_MAX_N:.0f} N: '
        + ', '.join(
            f'{system.names[i]} {loads[:, i].max():.1f} N '
            f'({int(np.sum(loads[:, i] > 1.1 * BAND_MAX_N))} samples)'
            for i in over
        )
    )
    print('  around the peak (sim s, position mm, load N):')
    for s in window:
        print(f'    {s[1]:.3f} {s[2][peak_at[1]] * 1e3:7.3f} {s[3][peak_at[1]]:6.1f}')
    print(
        '  commanded targets (mm) within 0.4 s wall: '
        + ' '.join(f'{c * 1e3:.2f}' for _t, c in commands)
    )
    true_rank = sorted(
        (s for s in true_segments if math.isfinite(s.mean_n_per_mm)),
        key=lambda s: s.mean_n_per_mm,
        reverse=True,
    )
    print(
        f'\nfull scan: {sim:.1f} s simulated in {wall:.1f} s wall (x{sim / wall:.2f}); '
        f'{len(feedback)} feedback messages'
    )
    for i, f in enumerate(scan.fingers):
        print(
            f'  {f.name}: contact {contact[i] * 1e3:6.2f} mm (sim '
            f'{truth["contact_m"][i] * 1e3:6.2f}, error {contact_error_mm[i]:+.2f}), '
            f'k {stiffness[i]:6.2f} +- {spread[i]:.2f} N/mm '
            f'(sim {expected[i]:6.2f}, k0 {truth["k0"][i]:6.2f}, error {k_error[i]:+.1f} %), '
            f'scan work {work[i]:.3f} J'
        )
    for level, side, t, m, e in rows:
        print(f'  segment {level} {side}: {m:6.2f} N/mm, simulated {t:6.2f} ({e:+.1f} %)')
    print(
        f'  stiffest measured {scan.stiffest(3)}, simulated {[s.level for s in true_rank[:3]]};'
        f' peak load {peak_load:.1f} N on {system.names[peak_at[1]]} (band top {BAND_MAX_N} N),'
        f' setpoints within 0.5 s of it {min(near, default=0):.1f}..{max(near, default=0):.1f} N,'
        f' loads before it {np.round(trace, 1).tolist()}'
    )
    shared['peak_load'] = (peak_load, system.names[peak_at[1]])
    assert np.all(np.abs(contact_error_mm) <= 2.0), contact_error_mm
    assert rows and all(abs(e) <= 10.0 for *_x, e in rows), rows
    assert scan.stiffest(1) == [true_rank[0].level]
    assert system.wait_retracted(15.0)


def test_scan_loads_stay_within_the_band(shared):
    if 'peak_load' not in shared:
        pytest.skip('needs the full scan of the first test')
    peak, name = shared['peak_load']
    print(f'\nscan peak load {peak:.1f} N on {name}; limit {1.1 * BAND_MAX_N:.0f} N')
    assert peak <= 1.1 * BAND_MAX_N


def test_after_treatment_the_scan_shows_the_simulated_reduction(system, truth, shared):
    from backhug_interfaces.msg import UserProfile

    if 'before' not in shared:
        pytest.skip('needs the full scan of the first test')
    system.wait_ready(30.0)
    goal = system.RunProgram.Goal(
        program_yaml=TREATMENT,
        intensity=1.0,
        user=UserProfile(user_id='t', height_m=1.75, weight_kg=75.0),
    )
    start = time.monotonic()
    handle = system.send(system.run_client, goal)
    treatment = system.result(handle, 120.0)
    assert treatment.outcome == system.RunProgram.Result.COMPLETED, treatment.reason
    with system.lock:
        pressed = np.max([f for t, f in system.setpoints if t >= start], axis=0)
    treated = set(np.flatnonzero(pressed > 50.0))
    peak = max(s[3].max() for s in system.states_since(start))
    assert system.wait_retracted(15.0)

    result, _feedback, scan_start, wall, sim = run_scan(system, cancel_after_rows=7)
    assert result.outcome == system.ScanSpine.Result.CANCELLED, result.reason
    after = to_result(system, result.map)
    assert not after.complete and after.reason == 'cancelled'
    before = shared['before']
    during_after, work = simulated_during(system, truth, scan_start)
    during_before = shared['during_before']
    print(
        f'\ntreatment: {treatment.duration_s:.1f} s on '
        f'{sorted(system.names[i] for i in treated)}, peak load {peak:.0f} N; after-scan of rows'
        f' 1-7: {sim:.1f} s simulated in {wall:.1f} s wall'
    )
    rows = []
    for i, (b, a) in enumerate(zip(before.fingers, after.fingers, strict=True)):
        if a.row > 7:
            continue
        assert a.valid and b.valid, (a, b)
        simulated = during_after[i] - during_before[i]
        measured = a.stiffness_n_per_mm - b.stiffness_n_per_mm
        stated = math.hypot(a.uncertainty_n_per_mm, b.uncertainty_n_per_mm)
        rows.append((i, measured, simulated, stated))
        print(
            f'  {a.name}{" (treated)" if i in treated else ""}: before '
            f'{b.stiffness_n_per_mm:.2f} +- {b.uncertainty_n_per_mm:.2f}, after '
            f'{a.stiffness_n_per_mm:.2f} +- {a.uncertainty_n_per_mm:.2f} N/mm: change '
            f'{measured:+.2f} ({100 * measured / b.stiffness_n_per_mm:+.1f} %), simulated '
            f'{simulated:+.2f} ({100 * simulated / during_before[i]:+.1f} %), total work '
            f'{work[i]:.2f} J; |difference| {abs(measured - simulated):.2f}, stated '
            f'uncertainty {stated:.2f} N/mm'
        )
    assert len(rows) == 14 and treated
    for i, measured, simulated, stated in rows:
        if i in treated:
            # The treatment took a clear share off (the law's floor is 30 %) ...
            assert simulated / during_before[i] < -0.08
            assert measured < 0.0
        # ... and the scan saw what the simulation did, within its stated uncertainty (2 sigma).
        assert abs(measured - simulated) <= 2.0 * stated, (system.names[i], measured, simulated)


def test_a_fault_mid_scan_aborts_it_with_a_partial_map_and_retracted_fingers(system):
    system.wait_ready(40.0)
    assert system.wait_retracted(15.0)
    injected = {}

    def spike(active: str) -> None:
        name = active.split(',', maxsplit=1)[0].strip()
        injected.update(name=name, at=time.monotonic())
        system.fault(f'push {name} 400 1.0')

    result, _feedback, _start, _wall, sim = run_scan(system, fault=(2, spike))
    aborted = time.monotonic()
    name = injected['name']
    assert result.outcome == system.ScanSpine.Result.ABORTED, (result.outcome, result.reason)
    scan = to_result(system, result.map)
    assert not scan.complete and scan.reason == result.reason
    assert 'safety' in scan.reason and name in scan.reason, scan.reason
    assert system.wait_retracted(20.0), f'not retracted: {system.positions()}'
    retracted = time.monotonic()
    valid_rows = sorted({f.row for f in scan.fingers if f.valid})
    unmeasured = [f for f in scan.fingers if f.row > 3]
    print(
        f'\nfault mid-scan: push 400 N on {name} while it was probed; scan aborted '
        f'{aborted - injected["at"]:.2f} s after ("{scan.reason}"), every finger < 1 mm after '
        f'{retracted - injected["at"]:.2f} s; partial map: rows {valid_rows} measured, '
        f'{len(unmeasured)} fingers beyond row 3 without values; {sim:.1f} s simulated'
    )
    assert valid_rows == [1, 2]
    assert all(not f.valid for f in unmeasured)
    assert system.status.latched
    time.sleep(1.0)  # the push lasts 1 s simulated
    system.wait_ready(30.0)  # the reset is accepted once the cause has gone


pytestmark = [
    pytest.mark.timeout(900),
    # Whole-back scans through the full system: ~7 min on 2 cores. They run in `make test`;
    # BACKHUG_SKIP_LONG_TESTS=1 leaves them out of a quick local run.
    pytest.mark.skipif(
        bool(os.environ.get('BACKHUG_SKIP_LONG_TESTS')),
        reason='BACKHUG_SKIP_LONG_TESTS is set (whole-back scans take ~7 min on 2 cores)',
    ),
]
