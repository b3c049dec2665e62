"""ProgramRunner without ROS: every transition is ramped and rate-limited, abort is immediate."""

from __future__ import annotations

import math
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from backhug_programs.compiler import compile_program
from backhug_programs.library import find_program
from backhug_programs.runner import ProgramRunner, RunState
from backhug_programs.schema import ProgramError, parse_program

DT = 0.01
RATE = 200.0
# 250 kg: a total force budget (835 N) the test programs stay within, so forces are as written.
USER = SimpleNamespace(height_m=1.75, c7_position_m=math.nan, max_force_n=0.0, weight_kg=250.0)
HOLD = textwrap.dedent(
    """\
    id: hold
    name: Hold
    description: One sustained hold.
    phases:
      - {name: hold, region: T4-T9, pattern: sustained_hold, force_n: 60, duration_s: 10,
         ramp_s: 1}
    """
)


def runner_for(text_or_id: str, intensity: float = 1.0, **overrides) -> ProgramRunner:
    program = parse_program(text_or_id) if '\n' in text_or_id else find_program(text_or_id)
    settings = {
        'max_force_rate_n_s': RATE,
        'pause_force_n': 5.0,
        'transition_ramp_s': 1.0,
        'intensity_rate_per_s': 0.2,
    }
    settings.update(overrides)
    return ProgramRunner(compile_program(program, USER, intensity), **settings)


def run(runner: ProgramRunner, seconds: float, log: list) -> None:
    for _ in range(round(seconds / DT)):
        log.append(runner.step(DT))


def max_rate(log: list) -> float:
    return float(np.abs(np.diff(np.array(log), axis=0)).max() / DT)


def test_runs_the_program_and_completes():
    runner = runner_for('demo', 0.7)
    log: list = []
    run(runner, 121.0, log)
    assert runner.state is RunState.COMPLETED and runner.progress == 1.0
    assert max_rate(log) <= RATE + 1e-9
    assert np.all(log[-1] == 0.0)
    # The output is the compiled program (the slew limiter never bites on a valid program).
    expected = runner.compiled.trajectory(np.arange(1, 6001) * DT)
    assert np.allclose(np.array(log[:6000]), expected, atol=1e-6)


def test_pause_holds_and_resume_continues_where_it_stopped():
    runner = runner_for(HOLD)
    log: list = []
    run(runner, 3.0, log)
    assert log[-1].max() == pytest.approx(60.0)
    assert runner.pause() == '' and runner.pause() != ''
    t_paused = runner.program_t_s
    run(runner, 3.0, log)
    assert runner.program_t_s == t_paused  # the program clock stops
    assert log[-1].max() == pytest.approx(5.0)  # light contact ...
    assert np.all((log[-1] == 0.0) | np.isclose(log[-1], 5.0))  # ... only where it pressed
    steps = np.array([f.max() for f in log[300:]])
    assert np.count_nonzero((steps > 6.0) & (steps < 59.0)) >= 80  # ~1 s ramp, not a drop
    assert runner.resume() == '' and runner.resume() != ''
    run(runner, 2.0, log)
    assert log[-1].max() == pytest.approx(60.0)
    run(runner, 8.0, log)
    assert runner.state is RunState.COMPLETED
    assert runner.run_t_s == pytest.approx(runner.program_t_s + 3.0, abs=0.02)
    assert max_rate(log) <= RATE + 1e-9


def test_intensity_ramps_and_is_checked():
    runner = runner_for(HOLD)
    log: list = []
    run(runner, 2.0, log)
    assert runner.set_intensity(0.5) == pytest.approx(2.5)  # 0.5 at 0.2 per s
    run(runner, 1.0, log)
    assert 40.0 < log[-1].max() < 50.0  # still on its way: 60 N → 30 N over 2.5 s
    run(runner, 2.0, log)
    assert log[-1].max() == pytest.approx(30.0)
    for bad in (1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match='intensity'):
            runner.set_intensity(bad)
    assert max_rate(log) <= RATE + 1e-9


def test_set_intensity_refuses_a_rate_the_program_cannot_keep():
    text = HOLD.replace('sustained_hold', 'rhythmic_press').replace(
        'force_n: 60,', 'force_n: 150, frequency_hz: 1.5,'
    )
    runner = runner_for(text, 0.3)
    with pytest.raises(ProgramError, match='N/s'):
        runner.set_intensity(1.0)
    assert runner.intensity_target == 0.3


def test_cancel_ramps_to_zero_and_abort_drops_at_once():
    runner = runner_for(HOLD)
    log: list = []
    run(runner, 3.0, log)
    runner.cancel()
    run(runner, 0.5, log)
    assert runner.state is RunState.STOPPING and 20.0 < log[-1].max() < 40.0
    run(runner, 1.0, log)
    assert runner.state is RunState.CANCELLED and np.all(log[-1] == 0.0)
    assert max_rate(log) <= RATE + 1e-9
    with pytest.raises(ValueError):
        runner.set_intensity(0.5)

    runner = runner_for(HOLD)
    run(runner, 3.0, [])
    runner.abort('safety FAULT: overload')
    assert runner.state is RunState.ABORTED and runner.reason == 'safety FAULT: overload'
    assert np.all(runner.step(DT) == 0.0)


def test_clock_oddities_never_jump_the_forces():
    runner = runner_for(HOLD)
    log: list = []
    run(runner, 0.5, log)
    before = runner.program_t_s
    for dt in (-1.0, 0.0, math.nan, math.inf):
        out = runner.step(dt)
        assert np.array_equal(out, log[-1]) and runner.program_t_s == before
    out = runner.step(5.0)  # a 5 s jump (sim time reset, stall): at most MAX_STEP_S of program
    assert runner.program_t_s == pytest.approx(before + 0.1)
    assert np.abs(out - log[-1]).max() <= RATE * 0.1 + 1e-9
    with pytest.raises(ValueError, match='max_force_rate_n_s'):
        runner_for(HOLD, max_force_rate_n_s=math.nan)
