"""Library programs, the spine model and the compiler: limits, rate limits, rows, reach."""

from __future__ import annotations

import itertools
import math
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from backhug_programs.compiler import (
    PRELOAD_FRACTION,
    UNKNOWN_WEIGHT_KG,
    compile_program,
    total_force_budget_n,
)
from backhug_programs.library import find_program, list_programs, programs_directory
from backhug_programs.schema import LEVELS, ProgramError, load_program
from backhug_programs.spine_model import SpineModel, default_description, levels_for_user

REQUIRED = {'full_back', 'lower_back', 'upper_back', 'gentle', 'wake_up', 'wind_down', 'demo'}
GRID_S = 0.01  # the sequencer's 100 Hz


def profile(height_m=1.75, c7=math.nan, max_force_n=0.0, weight_kg=250.0):
    """A user; 250 kg (budget 835 N) unless a test is about the total force budget."""
    return SimpleNamespace(
        height_m=height_m, c7_position_m=c7, max_force_n=max_force_n, weight_kg=weight_kg
    )


@pytest.fixture(scope='module')
def description():
    return default_description()


@pytest.fixture(scope='module')
def library():
    return {program.id: program for program in list_programs()}


def test_library_has_the_programs_with_rationale(library):
    assert set(library) >= REQUIRED
    for program in library.values():
        assert len(program.description) > 200, program.id
        assert 'design.md' in program.description, program.id
        for phase in program.phases:
            assert phase.pattern == 'rest' or 20.0 <= phase.force_n <= 150.0, (program.id, phase)
    assert 19 * 60 <= library['full_back'].duration_s <= 21 * 60
    assert library['wake_up'].duration_s == 8 * 60
    assert 100 <= library['demo'].duration_s <= 140
    assert len({p.pattern for p in library['demo'].phases}) >= 5
    gentle = library['gentle']
    assert max(p.force_n for p in gentle.phases) < min(
        max(p.force_n for p in library[i].phases) for i in REQUIRED - {'gentle'}
    )
    assert max(p.frequency_hz for p in gentle.phases) <= 0.5


def test_find_program_by_id_and_path(library, tmp_path):
    assert find_program('demo').id == 'demo'
    path = programs_directory() / 'lower_back.yaml'
    assert find_program(str(path)).id == 'lower_back'
    with pytest.raises(ProgramError, match='no library program'):
        find_program('no_such_program')


@pytest.mark.parametrize('height_m', [1.50, 1.62, 1.75, 1.88, 2.00])
def test_every_program_compiles_within_force_and_rate_limits(library, description, height_m):
    limit_n_s = 200.0
    for program in library.values():
        for intensity in (0.1, 0.55, 1.0):
            compiled = compile_program(
                program, profile(height_m), intensity, description, max_force_rate_n_s=limit_n_s
            )
            assert compiled.duration_s == pytest.approx(program.duration_s)
            times = np.arange(0.0, compiled.duration_s + 1.0, GRID_S)
            forces = compiled.trajectory(times)
            assert np.all(np.isfinite(forces))
            assert forces.min() >= 0.0
            peak = max(p.force_n for p in program.phases) * intensity
            assert forces.max() <= min(peak, 180.0) + 1e-9
            rate = np.abs(np.diff(forces, axis=0)).max() / GRID_S
            assert rate <= limit_n_s, (program.id, height_m, intensity, rate)
            # The analytic bound holds on the grid (the bound is what the compiler checks).
            bound = max(compiled.rate_bound_n_s(phase) for phase in compiled.phases)
            assert rate <= bound + 1e-6
            # Starts and ends at zero: nothing steps when the program begins or finishes.
            assert np.all(forces[0] == 0.0) and np.all(forces[-1] == 0.0)
            # Every pressing phase presses some finger.
            for phase in compiled.phases:
                if phase.pattern != 'rest':
                    mid = (phase.start_s + phase.end_s) / 2
                    assert compiled.setpoints_at(mid).max() > 0.0, (program.id, phase.name)


def test_setpoints_respect_the_personal_cap(library, description):
    compiled = compile_program(
        library['full_back'],
        profile(max_force_n=40.0),
        1.0,
        description,
        max_total_force_n=math.inf,  # 26 fingers x 40 N: this test is about the per-finger cap
    )
    forces = compiled.trajectory(np.arange(0.0, compiled.duration_s, 0.05))
    assert forces.max() == pytest.approx(40.0, abs=0.5)
    assert forces.max() <= 40.0


def test_rate_limit_refuses_a_fast_heavy_phase(description):
    text = textwrap.dedent(
        """\
        id: too_fast
        name: Too fast
        description: Heavy and fast.
        phases:
          - name: hammer
            region: T4-T9
            pattern: rhythmic_press
            force_n: 150
            frequency_hz: 3
            duration_s: 30
        """
    )
    program = load_program(text)
    with pytest.raises(ProgramError) as caught:
        compile_program(program, profile(), 1.0, description)
    issue = caught.value.issues[0]
    assert issue.line == 5 and 'N/s' in issue.message and 'hammer' in issue.message
    # At a low intensity the same program is within the limit.
    compiled = compile_program(program, profile(), 0.2, description)
    with pytest.raises(ProgramError):
        compiled.check_intensity(1.0)


def test_patterns_shape_the_forces(description):
    text = textwrap.dedent(
        """\
        id: shapes
        name: Shapes
        description: One phase per pattern.
        phases:
          - {name: press, region: T4-T9, pattern: rhythmic_press, force_n: 60, frequency_hz: 1,
             duration_s: 20, ramp_s: 2}
          - {name: alt, region: T4-T9, pattern: alternating, force_n: 60, frequency_hz: 1,
             duration_s: 20, ramp_s: 2}
          - {name: up, region: T4-T9, pattern: wave_up, force_n: 60, frequency_hz: 0.5,
             duration_s: 20, ramp_s: 2}
          - {name: hold, region: T4-T9, sides: left, pattern: sustained_hold, force_n: 60,
             duration_s: 20, ramp_s: 2}
          - {name: rest, pattern: rest, duration_s: 5}
        """
    )
    compiled = compile_program(load_program(text), profile(), 1.0, description)
    names = compiled.joint_names
    assert names == [j.name for j in description.joints]
    press, alt, up, hold, rest = compiled.phases
    rows = press.rows
    model = compiled.model
    near = {'T3', 'T4', 'T5', 'T6', 'T7', 'T8', 'T9', 'T10'}
    assert {model.level_of_row(r) for r in rows} <= near
    used = [i for i, j in enumerate(description.joints) if j.row in rows]
    unused = [i for i in range(len(names)) if i not in used]

    t = np.arange(press.start_s + 2, press.end_s - 2, 0.01)
    f = compiled.trajectory(t)
    assert np.all(f[:, unused] == 0.0)
    assert f[:, used].max() == pytest.approx(60.0, abs=0.1)
    assert f[:, used].min() == pytest.approx(60.0 * PRELOAD_FRACTION, abs=0.1)  # keeps contact
    assert np.allclose(f[:, used], f[:, used[:1]])  # all in step

    left = [i for i in used if description.joints[i].side == 'l']
    right = [i for i in used if description.joints[i].side == 'r']
    t = np.arange(alt.start_s + 2, alt.end_s - 2, 0.01)
    f = compiled.trajectory(t)
    correlation = np.corrcoef(f[:, left[0]], f[:, right[0]])[0, 1]
    assert correlation < -0.99  # left and right in antiphase

    # Wave up: each row's press peaks after the row below it (tail → head). The tail row's
    # second crest is at 1.5 cycles = 3 s; the window holds one crest of every row.
    t = np.arange(up.start_s + 2.99, up.start_s + 4.99, 0.005)
    f = compiled.trajectory(t)
    column = {description.joints[i].row: i for i in left}
    crest_time = [t[np.argmax(f[:, column[r]])] for r in rows]
    assert all(a > b for a, b in itertools.pairwise(crest_time)), crest_time

    f = compiled.setpoints_at((hold.start_s + hold.end_s) / 2)
    assert np.allclose(f[left], 60.0) and np.all(f[right] == 0.0)
    assert np.all(compiled.setpoints_at(rest.start_s + 1) == 0.0)
    assert compiled.phase_at(hold.start_s + 0.1).name == 'hold'
    assert compiled.phase_at(-1.0) is None and compiled.phase_at(compiled.duration_s + 1) is None


def test_intensity_and_profile_are_validated(library, description):
    program = library['demo']
    for bad in (-0.1, 1.01, math.nan, math.inf):
        with pytest.raises(ValueError, match='intensity'):
            compile_program(program, profile(), bad, description)
    for bad in (1.0, 2.5, math.nan):
        with pytest.raises(ValueError, match='height_m'):
            compile_program(program, profile(height_m=bad), 0.5, description)
    with pytest.raises(ValueError, match='max_force_n'):
        compile_program(program, profile(max_force_n=-5.0), 0.5, description)
    with pytest.raises(ValueError, match='c7_position_m'):
        compile_program(program, profile(c7=5.0), 0.5, description)
    # Height 0 = unknown: the default height.
    compiled = compile_program(program, profile(height_m=0.0), 0.5, description)
    assert compiled.model.height_m == 1.75


def test_spine_model_proportions(description):
    for height in (1.50, 1.75, 2.00):
        model = SpineModel.from_profile(height, description=description)
        positions = [model.position_of(level) for level in LEVELS]
        pitches = np.diff(positions)
        assert np.all(pitches > 0)  # head → tail
        thoracic = pitches[1:12] * 1.75 / height
        lumbar = pitches[13:17] * 1.75 / height
        # design.md §1: ~25 mm thoracic, ~35–40 mm lumbar for an adult.
        assert 0.020 <= thoracic.mean() <= 0.027
        assert 0.034 <= lumbar.mean() <= 0.041
        c7_to_s1 = model.positions_m['S1'] - model.positions_m['C7']
        assert 0.27 <= c7_to_s1 / height <= 0.31
    # Taller users: C7 further down the bed, longer spine.
    short = SpineModel.from_profile(1.5, description=description)
    tall = SpineModel.from_profile(2.0, description=description)
    assert tall.c7_position_m > short.c7_position_m
    assert tall.position_of('L5') - tall.position_of('T1') > (
        short.position_of('L5') - short.position_of('T1')
    )
    # A 1.75 m adult: T1 over row 1, the device covers about T1 to L4 (device.yaml).
    mid = SpineModel.from_profile(1.75, description=description)
    assert mid.level_of_row(1) == 'T1'
    assert mid.level_of_row(13) in ('L4', 'L5')


def test_out_of_reach_levels_are_reported_not_mapped(description):
    tall = SpineModel.from_profile(2.0, description=description)
    assert tall.out_of_reach[-1] == 'L5' and 'L3' in tall.out_of_reach
    lo, hi = tall.reach_m
    for level in tall.out_of_reach:
        assert not lo <= tall.position_of(level) <= hi
        assert tall.rows_for_levels(level, level) == []
    assert 'C7' in SpineModel.from_profile(1.5, description=description).out_of_reach
    # A measured C7 moves the whole spine.
    shifted = SpineModel.from_profile(1.75, 0.1, description)
    assert not shifted.c7_estimated and shifted.position_of('C7') == 0.1
    assert 'L2' in shifted.out_of_reach and 'L2' not in mid_reach(description)
    # A region entirely out of reach is an error naming the phase's region line.
    text = textwrap.dedent(
        """\
        id: low
        name: Low
        description: Lumbar only.
        phases:
          - name: deep lumbar
            region: L4-L5
            pattern: sustained_hold
            force_n: 40
            duration_s: 10
        """
    )
    with pytest.raises(ProgramError) as caught:
        compile_program(load_program(text), profile(2.0), 1.0, description)
    issue = caught.value.issues[0]
    assert issue.field == 'phases[0].region' and issue.line == 5
    assert 'L4' in issue.message
    # Partly reachable: compiles, and says which levels it cannot reach.
    compiled = compile_program(find_program('lower_back'), profile(2.0), 0.5, description)
    assert {'L3', 'L4', 'L5'} <= set(compiled.out_of_reach)


def mid_reach(description):
    return SpineModel.from_profile(1.75, description=description).out_of_reach


def test_levels_for_user_matches_the_scan_server_contract(description):
    levels = levels_for_user(profile(1.8), description)
    assert [name for name, _ in levels] == list(LEVELS)
    assert all(isinstance(x, float) for _, x in levels)


@pytest.mark.parametrize('weight_kg', [0.0, 50.0, 75.0, 120.0])
def test_summed_force_never_exceeds_the_budget_of_the_users_weight(library, description, weight_kg):
    """The fingers push against nothing but the user's weight: their sum must not lift them."""
    budget = total_force_budget_n(weight_kg)
    assert budget == pytest.approx(0.8 * 0.4257 * (weight_kg or UNKNOWN_WEIGHT_KG) * 9.80665)
    for program, intensity in itertools.product(library.values(), (0.3, 1.0)):
        user = profile(weight_kg=weight_kg)
        compiled = compile_program(program, user, intensity, description)
        free = compile_program(program, user, intensity, description, max_total_force_n=math.inf)
        times = np.arange(0.0, compiled.duration_s, GRID_S)
        forces, unscaled = compiled.trajectory(times), free.trajectory(times)
        totals = forces.sum(axis=1)
        assert totals.max() <= budget + 1e-6, (program.id, intensity, totals.max(), budget)
        assert np.all(np.abs(np.diff(forces, axis=0)) <= compiled.max_force_rate_n_s * GRID_S)
        assert compiled.peak_total_n() <= budget + 1e-6
        for phase in compiled.phases:
            # One factor per phase (shapes kept), <= 1, and only where the phase needs it.
            rows = (times >= phase.start_s) & (times < phase.end_s)
            scale = compiled.load_scale(phase)
            assert 0.0 < scale <= 1.0
            assert np.allclose(forces[rows], unscaled[rows] * scale, atol=1e-9)
            if unscaled[rows].sum(axis=1).max(initial=0.0) < budget * 0.99:
                assert scale == 1.0, (program.id, phase.name)


def test_a_lighter_user_gets_less_force_and_bad_weights_are_refused(library, description):
    program = library['full_back']
    peaks = [
        compile_program(program, profile(weight_kg=w), 1.0, description)
        .trajectory(np.arange(0.0, 120.0, 0.05))
        .max()
        for w in (50.0, 75.0, 120.0)
    ]
    assert peaks[0] < peaks[1] < peaks[2], peaks
    for bad in (math.nan, math.inf, -70.0, 10.0, 400.0):
        with pytest.raises(ValueError, match='weight_kg'):
            compile_program(program, profile(weight_kg=bad), 0.5, description)
