"""One running program: its clock, pause/resume/cancel, intensity ramps and a slew limiter.

The sequencer node calls ``step(dt_s)`` at its setpoint rate with the time its clock advanced
(simulated time under ``use_sim_time``) and publishes what it returns. No rclpy here.

- running: the program clock advances with ``dt_s``; the output follows the compiled program at
  the current intensity.
- paused: the program clock stops; the output blends, over ``transition_ramp_s``, from the
  program's setpoints at the moment of the pause to ``min(those, pause_force_n)`` per finger and
  holds there. ``resume`` blends back into the program where it stopped.
- stopping (cancel): blends to zero over ``transition_ramp_s``, then finishes as cancelled.
- abort (safety): zero at once — the safety chain is already retracting the fingers; no finger
  may push while the status is latched.
- intensity changes move the intensity at ``intensity_rate_per_s``, never in a step.

Whatever the blend does, the output goes through a slew limiter of ``max_force_rate_n_s`` per
finger, and is clipped to 0..cap per finger: no step in force ever leaves this class, except the
drop to zero of an abort.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from backhug_programs.compiler import CompiledProgram

#: A clock jump larger than this (s) advances the program by this much only.
MAX_STEP_S = 0.1
#: Output below this (N) per finger counts as zero when finishing.
ZERO_N = 1e-6


class RunState(enum.Enum):
    """Where a program run is."""

    RUNNING = 'running'
    PAUSED = 'paused'
    STOPPING = 'stopping'
    COMPLETED = 'completed'
    CANCELLED = 'cancelled'
    ABORTED = 'aborted'

    @property
    def finished(self) -> bool:
        return self in (RunState.COMPLETED, RunState.CANCELLED, RunState.ABORTED)


class ProgramRunner:
    """See the module docstring."""

    def __init__(
        self,
        compiled: CompiledProgram,
        *,
        max_force_rate_n_s: float,
        pause_force_n: float,
        transition_ramp_s: float,
        intensity_rate_per_s: float,
    ) -> None:
        checks = {
            'max_force_rate_n_s': max_force_rate_n_s > 0.0,
            'pause_force_n': pause_force_n >= 0.0,
            'transition_ramp_s': transition_ramp_s > 0.0,
            'intensity_rate_per_s': intensity_rate_per_s > 0.0,
        }
        for name, ok in checks.items():
            value = locals()[name]
            if not (ok and math.isfinite(value)):
                raise ValueError(f'{name} out of range: {value!r}')
        self.compiled = compiled
        self.max_force_rate_n_s = max_force_rate_n_s
        self.pause_force_n = pause_force_n
        self.transition_ramp_s = transition_ramp_s
        self.intensity_rate_per_s = intensity_rate_per_s
        self.state = RunState.RUNNING
        self.reason = ''
        self.program_t_s = 0.0
        self.run_t_s = 0.0  # clock time since the start, pauses included
        self.intensity = compiled.intensity
        self.intensity_target = compiled.intensity
        self._blend = 1.0  # 1 = the program, 0 = the hold target
        self._hold = np.zeros(len(compiled.joint_names))
        self._frozen = np.zeros(len(compiled.joint_names))
        self.output = np.zeros(len(compiled.joint_names))

    # -- commands -----------------------------------------------------------------------------
    def pause(self) -> str:
        """Hold the program clock and ramp down to the pause force; '' or why not."""
        if self.state is not RunState.RUNNING:
            return f'cannot pause: the program is {self.state.value}'
        self._frozen = self.compiled.setpoints_at(self.program_t_s, self.intensity)
        self._hold = np.minimum(self._frozen, self.pause_force_n)
        self.state = RunState.PAUSED
        return ''

    def resume(self) -> str:
        """Continue where the program paused, ramping back up; '' or why not."""
        if self.state is not RunState.PAUSED:
            return f'cannot resume: the program is {self.state.value}'
        self.state = RunState.RUNNING
        return ''

    def cancel(self) -> None:
        """Ramp down to zero, then finish as cancelled."""
        if self.state.finished:
            return
        if self.state is RunState.RUNNING:
            self._frozen = self.compiled.setpoints_at(self.program_t_s, self.intensity)
        self._hold = np.zeros_like(self.output)
        self.state = RunState.STOPPING

    def abort(self, reason: str) -> None:
        """Stop now: output zero at once (a safety fault)."""
        if self.state.finished:
            return
        self.reason = reason or 'aborted'
        self.output[:] = 0.0
        self.state = RunState.ABORTED

    def set_intensity(self, intensity: float) -> float:
        """Ramp to a new intensity; returns the ramp time (s). ValueError/ProgramError if not."""
        if self.state.finished or self.state is RunState.STOPPING:
            raise ValueError(f'the program is {self.state.value}')
        self.compiled.check_intensity(intensity)  # range and the force-rate bound
        self.intensity_target = float(intensity)
        return abs(self.intensity_target - self.intensity) / self.intensity_rate_per_s

    # -- progress -----------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return self.compiled.duration_s

    @property
    def progress(self) -> float:
        if self.duration_s <= 0.0:
            return 1.0
        return min(1.0, self.program_t_s / self.duration_s)

    # -- the step -------------------------------------------------------------------------------
    def step(self, dt_s: float) -> np.ndarray:
        """Advance by ``dt_s`` seconds of the node clock; the setpoints to publish (N)."""
        if self.state.finished:
            self.output[:] = 0.0
            return self.output.copy()
        if not math.isfinite(dt_s) or dt_s <= 0.0:
            return self.output.copy()
        dt = min(dt_s, MAX_STEP_S)
        self.run_t_s += dt
        # Intensity moves towards its target at a bounded rate.
        delta = self.intensity_target - self.intensity
        limit = self.intensity_rate_per_s * dt
        self.intensity += max(-limit, min(limit, delta))

        if self.state is RunState.RUNNING:
            self.program_t_s = min(self.duration_s, self.program_t_s + dt)
            program = self.compiled.setpoints_at(self.program_t_s, self.intensity)
            blend_target = 1.0
        else:  # paused or stopping: the program's last setpoints, blended to the hold target
            program = self._frozen
            blend_target = 0.0
        step = dt / self.transition_ramp_s
        self._blend += max(-step, min(step, blend_target - self._blend))
        target = self._blend * program + (1.0 - self._blend) * self._hold
        target = np.clip(np.nan_to_num(target, nan=0.0), 0.0, self.compiled.cap_n)
        max_change = self.max_force_rate_n_s * dt
        self.output = self.output + np.clip(target - self.output, -max_change, max_change)

        settled = self._blend == blend_target and float(np.max(self.output, initial=0.0)) <= ZERO_N
        if self.state is RunState.STOPPING and settled:
            self.state, self.reason = RunState.CANCELLED, 'cancelled'
        elif (
            self.state is RunState.RUNNING
            and self.program_t_s >= self.duration_s
            and float(np.max(np.abs(self.output - target), initial=0.0)) <= ZERO_N
        ):
            self.state = RunState.COMPLETED
        return self.output.copy()
