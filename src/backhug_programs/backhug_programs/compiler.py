"""Program + user + intensity → per-finger force setpoints as a function of time.

Every setpoint is a product of smooth, bounded shapes, so its rate of change has a known bound
that the compiler checks against ``max_force_rate_n_s`` before anything moves:

    F_i(t) = P · env(u) · s_i(u),   u = time into the phase, P = min(force_n · intensity, cap_i)

- ``env`` ramps in over ``ramp_s`` at the start of each phase and out over ``ramp_s`` at its end
  with a raised cosine (0 → 1, |env'| ≤ π / (2 ramp_s)); every phase therefore starts and ends at
  zero force, and nothing steps at a phase boundary.
- ``s`` is the pattern, between ``PRELOAD_FRACTION`` and 1 for the oscillating ones (|s'| ≤
  (1 − PRELOAD_FRACTION) · π · f), 1 for a sustained hold, 0 for rest.
- so |dF/dt| ≤ P · (π / (2 ramp_s) + (1 − PRELOAD_FRACTION) · π · f) for each phase.

``cap_i`` is the finger's effort limit (device description) and the user's personal
``max_force_n`` when set; the peak is scaled down to it (never clipped, which would put corners
into the waveform).

**Total force budget.** The fingers push up against nothing but the user's weight: once their
summed force passes the weight of the trunk lying on them, they lift the user off the bed and
chase them to the end of their stroke (seen on the MuJoCo device: eight fingers at 40 N lifted
the 320 N trunk of a 75 kg user and sat at 39.9 mm). Each phase is therefore scaled by one
factor so that its summed force never exceeds ``LIFT_FRACTION`` of the trunk weight
(``total_force_budget_n``); the factor is constant over the phase, which starts and ends at zero,
so shapes, continuity and the rate bound (scaled by the same factor ≤ 1) all hold. An unknown
weight is budgeted as a light adult (``UNKNOWN_WEIGHT_KG``). No rclpy here: program_sequencer
evaluates ``setpoints_at`` at its rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backhug_programs.schema import Issue, Phase, Program, ProgramError
from backhug_programs.spine_model import SpineModel, default_description

#: Oscillating patterns press between half and full peak force: the finger keeps contact with the
#: skin between presses, as a grade III–IV posterior–anterior mobilisation works into the tissue's
#: resistance without letting go (design choice; the peak forces follow design.md §1).
PRELOAD_FRACTION = 0.5
#: Default limit of |dF/dt| per finger, N/s: design choice. A 90 N peak at 1 Hz (mid-range of
#: design.md §1) needs ≈ 141 N/s plus its ramp; the limit keeps a commanded force from rising
#: faster than the controllers and the safety monitor's rise-rate check are meant to see.
DEFAULT_MAX_FORCE_RATE_N_S = 200.0
#: Share of body mass in the trunk (thorax + abdomen + pelvis): de Leva P. (1996), "Adjustments to
#: Zatsiorsky-Seluyanov's segment inertia parameters", J Biomech 29(9):1223-30, Table 4 (males
#: 43.46 %, females 42.57 %; the larger is the simulated users' trunk_mass_fraction).
TRUNK_MASS_FRACTION = 0.4257
#: Most of the trunk's weight the fingers may carry together (design choice): the rest stays on
#: the bed surface so the user is pressed, never lifted.
LIFT_FRACTION = 0.8
#: Budget weight for a user whose weight is unknown, kg: a light adult (about the 5th
#: percentile of adult women), so nobody unknown is lifted.
UNKNOWN_WEIGHT_KG = 50.0
#: Accepted range of UserProfile.weight_kg (0 = unknown).
WEIGHT_RANGE_KG = (30.0, 250.0)
STANDARD_GRAVITY_M_S2 = 9.80665


def total_force_budget_n(weight_kg: float) -> float:
    """Most summed finger force for a user of ``weight_kg`` (0 = unknown), N."""
    weight = float(weight_kg)
    if weight == 0.0:
        weight = UNKNOWN_WEIGHT_KG
    low, high = WEIGHT_RANGE_KG
    if not (math.isfinite(weight) and low <= weight <= high):
        raise ValueError(
            f'weight_kg must be within {low:g}..{high:g} kg (0 = unknown), got {weight_kg!r}'
        )
    return LIFT_FRACTION * TRUNK_MASS_FRACTION * weight * STANDARD_GRAVITY_M_S2


@dataclass(frozen=True)
class CompiledPhase:
    """A phase placed on the program's time line and on the user's finger rows."""

    index: int
    name: str
    pattern: str
    start_s: float
    end_s: float
    phase: Phase
    rows: tuple[int, ...]  # finger rows under the region, head to tail
    fingers: np.ndarray = field(repr=False)  # indices (canonical order) of the fingers used
    wave_lag: np.ndarray = field(repr=False)  # per used finger, 0..1 of a cycle (waves)
    left: np.ndarray = field(repr=False)  # per used finger: True on the user's left
    out_of_reach: tuple[str, ...] = ()  # levels of the region no finger reaches for this user

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _envelope(u: np.ndarray, duration_s: float, ramp_s: float) -> np.ndarray:
    """Raised-cosine ramp in and out; 1 in between."""
    if ramp_s <= 0.0:
        return np.ones_like(u)
    edge = np.minimum(u, duration_s - u)
    rising = 0.5 * (1.0 - np.cos(math.pi * np.clip(edge, 0.0, ramp_s) / ramp_s))
    return np.where(edge >= ramp_s, 1.0, rising)


def _oscillation(phase_cycles: np.ndarray) -> np.ndarray:
    """PRELOAD..1 with a raised cosine; 0 cycles → the preload."""
    swing = 0.5 * (1.0 - np.cos(2.0 * math.pi * phase_cycles))
    return PRELOAD_FRACTION + (1.0 - PRELOAD_FRACTION) * swing


class CompiledProgram:
    """Force setpoints of one program for one user at one intensity (N per finger over time)."""

    def __init__(
        self,
        *,
        program: Program,
        model: SpineModel,
        intensity: float,
        joint_names: list[str],
        joint_rows: np.ndarray,
        joint_sides: list[str],
        cap_n: np.ndarray,
        phases: list[CompiledPhase],
        max_force_rate_n_s: float,
        max_total_force_n: float = math.inf,
    ) -> None:
        self.program = program
        self.model = model
        self.intensity = intensity
        self.joint_names = list(joint_names)
        self.joint_rows = joint_rows
        self.joint_sides = joint_sides
        self.cap_n = cap_n
        self.phases = phases
        self.max_force_rate_n_s = max_force_rate_n_s
        self.max_total_force_n = max_total_force_n
        self.duration_s = float(phases[-1].end_s) if phases else 0.0

    # -- queries --------------------------------------------------------------------------------
    @property
    def out_of_reach(self) -> list[str]:
        """Levels of the program's regions that no finger reaches for this user, head to tail."""
        seen: dict[str, None] = {}
        for phase in self.phases:
            for level in phase.out_of_reach:
                seen.setdefault(level, None)
        return list(seen)

    def peak_n(self, phase: CompiledPhase, intensity: float | None = None) -> np.ndarray:
        """Peak force of each finger of a phase at an intensity (default: the compiled one)."""
        intensity = self.intensity if intensity is None else intensity
        return self._capped_peak_n(phase, intensity) * self.load_scale(phase, intensity)

    def _capped_peak_n(self, phase: CompiledPhase, intensity: float) -> np.ndarray:
        return np.minimum(phase.phase.force_n * intensity, self.cap_n[phase.fingers])

    def load_scale(self, phase: CompiledPhase, intensity: float | None = None) -> float:
        """Factor (<= 1) that keeps the phase's summed force within ``max_total_force_n``."""
        intensity = self.intensity if intensity is None else intensity
        if phase.pattern == 'rest' or phase.fingers.size == 0:
            return 1.0
        total = float(np.max(self._shape_over_cycle(phase) @ self._capped_peak_n(phase, intensity)))
        return 1.0 if total <= self.max_total_force_n else self.max_total_force_n / total

    def _shape_over_cycle(self, phase: CompiledPhase, samples: int = 360) -> np.ndarray:
        """The pattern's shape of every used finger over one cycle: (samples, fingers)."""
        if phase.pattern == 'sustained_hold':
            return np.ones((1, phase.fingers.size))
        cycles = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
        return self._shape(phase, cycles)

    @staticmethod
    def _shape(phase: CompiledPhase, cycles: np.ndarray) -> np.ndarray:
        """Pattern factor per (time, used finger); ``cycles`` is (times, 1)."""
        count = phase.fingers.size
        if phase.pattern == 'sustained_hold':
            return np.ones((cycles.shape[0], count))
        if phase.pattern == 'rhythmic_press':
            return np.repeat(_oscillation(cycles), count, axis=1)
        if phase.pattern == 'alternating':
            # The right column runs half a cycle behind the left.
            return _oscillation(cycles - np.where(phase.left, 0.0, 0.5)[None, :])
        # wave_up / wave_down: each row lags its predecessor along the wave
        return _oscillation(cycles - phase.wave_lag[None, :])

    def peak_total_n(self, intensity: float | None = None) -> float:
        """Most summed force of all fingers at any time of the program, N."""
        intensity = self.intensity if intensity is None else intensity
        return max(
            (
                float(np.max(self._shape_over_cycle(phase) @ self.peak_n(phase, intensity)))
                for phase in self.phases
                if phase.pattern != 'rest' and phase.fingers.size
            ),
            default=0.0,
        )

    def rate_bound_n_s(self, phase: CompiledPhase, intensity: float | None = None) -> float:
        """Upper bound of |dF/dt| over the phase, N/s (see the module docstring).

        Of the phase before the total force budget's factor (<= 1, which only lowers it): a
        program's validity does not depend on who lies on the device.
        """
        intensity = self.intensity if intensity is None else intensity
        peak = float(np.max(self._capped_peak_n(phase, intensity), initial=0.0))
        if peak == 0.0 or phase.pattern == 'rest':
            return 0.0
        ramp = phase.phase.ramp_s
        envelope_rate = math.inf if ramp <= 0.0 else math.pi / (2.0 * ramp)
        shape_rate = 0.0
        if phase.pattern != 'sustained_hold':
            shape_rate = (1.0 - PRELOAD_FRACTION) * math.pi * phase.phase.frequency_hz
        return peak * (envelope_rate + shape_rate)

    def check_intensity(self, intensity: float) -> None:
        """Raise ProgramError if some phase would change force faster than the rate limit."""
        _check_intensity_value(intensity)
        issues = []
        for phase in self.phases:
            bound = self.rate_bound_n_s(phase, intensity)
            if bound > self.max_force_rate_n_s:
                p = phase.phase
                peak = float(np.max(self._capped_peak_n(phase, intensity)))
                issues.append(
                    Issue(
                        self.program.source,
                        p.line,
                        f'phases[{phase.index}]',
                        f'{phase.name!r} changes force up to {bound:.0f} N/s at intensity '
                        f'{intensity:g} (peak {peak:.0f} N, '
                        f'{p.frequency_hz:g} Hz, ramp {p.ramp_s:g} s); the limit is '
                        f'{self.max_force_rate_n_s:g} N/s: lower force_n or frequency_hz, or '
                        f'lengthen ramp_s',
                    )
                )
        if issues:
            raise ProgramError(issues)

    def phase_at(self, t_s: float) -> CompiledPhase | None:
        """The phase running at program time ``t_s``; None before 0 and after the end."""
        if not 0.0 <= t_s < self.duration_s:
            return self.phases[-1] if self.phases and t_s == self.duration_s else None
        starts = [phase.start_s for phase in self.phases]
        return self.phases[int(np.searchsorted(starts, t_s, side='right')) - 1]

    def setpoints_at(self, t_s: float, intensity: float | None = None) -> np.ndarray:
        """Force setpoint of every finger (N, canonical joint order) at program time ``t_s``."""
        return self.trajectory(np.array([float(t_s)]), intensity)[0]

    def trajectory(self, times_s: np.ndarray, intensity: float | None = None) -> np.ndarray:
        """Setpoints at many times at once: shape (len(times_s), fingers)."""
        times = np.asarray(times_s, dtype=float)
        out = np.zeros((times.size, len(self.joint_names)))
        for phase in self.phases:
            if phase.pattern == 'rest' or phase.fingers.size == 0:
                continue
            in_phase = (times >= phase.start_s) & (times < phase.end_s)
            if not np.any(in_phase):
                continue
            u = times[in_phase] - phase.start_s
            p = phase.phase
            env = _envelope(u, phase.duration_s, p.ramp_s)[:, None]
            shape = self._shape(phase, (p.frequency_hz * u)[:, None])
            rows = np.flatnonzero(in_phase)
            out[np.ix_(rows, phase.fingers)] = env * shape * self.peak_n(phase, intensity)[None, :]
        return out


def _check_intensity_value(intensity: Any) -> float:
    if isinstance(intensity, bool) or not isinstance(intensity, int | float):
        raise ValueError(f'intensity must be a number 0..1, got {intensity!r}')
    if not (math.isfinite(intensity) and 0.0 <= intensity <= 1.0):
        raise ValueError(f'intensity must be 0..1, got {intensity!r}')
    return float(intensity)


def compile_program(
    program: Program,
    profile: Any,
    intensity: float,
    description: Any = None,
    *,
    max_force_rate_n_s: float = DEFAULT_MAX_FORCE_RATE_N_S,
    default_height_m: float = 1.75,
    max_total_force_n: float | None = None,
) -> CompiledProgram:
    """Place ``program`` on the fingers under ``profile``'s spine at ``intensity`` (0..1).

    ``profile`` is a UserProfile (message or any object with ``height_m``, ``c7_position_m``
    NaN = unknown, ``max_force_n`` 0 = device default and ``weight_kg`` 0 or absent = unknown);
    height 0 = ``default_height_m``. Each phase's summed force is kept within
    ``total_force_budget_n(weight_kg)`` (module docstring).
    Raises ValueError for a bad intensity or profile, ProgramError (with the phase's line) for
    a region no finger reaches or a phase that would change force faster than the rate limit.
    """
    intensity = _check_intensity_value(intensity)
    if not (math.isfinite(max_force_rate_n_s) and max_force_rate_n_s > 0.0):
        raise ValueError(f'max_force_rate_n_s must be > 0, got {max_force_rate_n_s!r}')
    description = description or default_description()
    height = getattr(profile, 'height_m', 0.0)
    if height == 0.0:
        height = default_height_m
    c7 = getattr(profile, 'c7_position_m', None)
    model = SpineModel.from_profile(height, c7, description)
    personal = getattr(profile, 'max_force_n', 0.0) or 0.0
    if not (math.isfinite(personal) and personal >= 0.0):
        raise ValueError(f'max_force_n must be >= 0 (0 = device default), got {personal!r}')
    budget = total_force_budget_n(getattr(profile, 'weight_kg', 0.0) or 0.0)
    if max_total_force_n is not None:
        if not (max_total_force_n > 0.0):  # NaN fails too
            raise ValueError(f'max_total_force_n must be > 0, got {max_total_force_n!r}')
        budget = float(max_total_force_n)

    joints = description.joints
    names = [joint.name for joint in joints]
    rows = np.array([joint.row for joint in joints])
    sides = [joint.side for joint in joints]
    cap = np.array([joint.effort_limit_n for joint in joints], dtype=float)
    if personal > 0.0:
        cap = np.minimum(cap, personal)

    phases: list[CompiledPhase] = []
    issues: list[Issue] = []
    start = 0.0
    for index, phase in enumerate(program.phases):
        end = start + phase.duration_s
        used_rows: list[int] = []
        unreached: tuple[str, ...] = ()
        if phase.pattern != 'rest':
            used_rows = model.rows_for_levels(phase.first_level, phase.last_level)
            unreached = tuple(level for level in phase.levels if not model.in_reach(level))
            if not used_rows:
                issues.append(
                    Issue(
                        program.source,
                        phase.line,
                        f'phases[{index}].region',
                        f'no finger row lies under {phase.region} ({phase.first_level}–'
                        f'{phase.last_level}) for a user of {height:g} m; out of reach: '
                        f'{", ".join(model.out_of_reach)}',
                    )
                )
        wanted_sides = {'both': ('l', 'r'), 'left': ('l',), 'right': ('r',)}[phase.sides]
        fingers = np.array(
            [i for i, j in enumerate(joints) if j.row in used_rows and j.side in wanted_sides],
            dtype=int,
        )
        lag = np.zeros(fingers.size)
        if phase.pattern in ('wave_up', 'wave_down') and used_rows:
            order = {row: k for k, row in enumerate(used_rows)}  # head → tail
            n = len(used_rows)
            for k, i in enumerate(fingers):
                from_head = order[int(rows[i])]
                # wave_up travels towards the head: the tail row leads (lag 0).
                step = (n - 1 - from_head) if phase.pattern == 'wave_up' else from_head
                lag[k] = step / n
        left = np.array([sides[i] == 'l' for i in fingers], dtype=bool)
        phases.append(
            CompiledPhase(
                index=index,
                name=phase.name,
                pattern=phase.pattern,
                start_s=start,
                end_s=end,
                phase=phase,
                rows=tuple(used_rows),
                fingers=fingers,
                wave_lag=lag,
                left=left,
                out_of_reach=unreached,
            )
        )
        start = end
    if issues:
        raise ProgramError(issues)
    compiled = CompiledProgram(
        program=program,
        model=model,
        intensity=intensity,
        joint_names=names,
        joint_rows=rows,
        joint_sides=sides,
        cap_n=cap,
        phases=phases,
        max_force_rate_n_s=max_force_rate_n_s,
        max_total_force_n=budget,
    )
    compiled.check_intensity(intensity)
    return compiled
