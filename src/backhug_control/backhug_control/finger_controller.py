"""Per-finger admittance force control: force error in, position target for the board's servo out.

The board runs a stiff position servo per finger; the controllers turn a contact-force setpoint
into a moving position target (admittance control: the target's velocity is proportional to the
force error). Pure Python and numpy, no rclpy, so it is unit-tested without a ROS graph and runs
all fingers in one vectorised update at 200-500 Hz.

Per finger and per cycle (``FingerControllerBank.update``):

* setpoint <= ``off_threshold_n``, finger disabled, or NaN/inf in its inputs -> **retract**: the
  target moves to the lower limit at no more than ``retract_speed_m_s`` (a disabled finger also
  reports ``enable=False``; a NaN finger is flagged in ``invalid``);
* setpoint above it and no contact -> **approach**: the target rises at ``approach_speed_m_s``
  until the load passes ``contact_threshold_n`` (contact is kept until the load falls below
  ``release_threshold_n``: hysteresis against noise);
* in contact -> **track**: target velocity = ``admittance_gain`` x force error + integral term +
  feed-forward of the setpoint's rate of change through ``feedforward_stiffness_n_per_m``,
  limited to ``max_velocity_m_s``; the setpoint the law sees is soft-started (from the load
  measured at contact, then its rises slew-limited to ``max_force_rate_n_s``; decreases are
  followed at once) and capped at ``max_force_n``.

Anti-windup: the target never leads the measured position by more than ``max_lead_m`` (servo
deflection at full load plus margin) and stays inside the position limits; the integral term is
frozen while the output is saturated and clamped to ``max_integral_m_s``. Above ``max_force_n``
the target may only move down.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence

import numpy as np


class Mode(enum.IntEnum):
    """What a finger's controller is doing this cycle."""

    DISABLED = 0  # enable=False, target at the lower limit
    RETRACT = 1  # target moving to the lower limit at the retract speed
    APPROACH = 2  # free space: target rising at the approach speed
    TRACK = 3  # in contact: admittance force tracking


@dataclasses.dataclass
class FingerGains:
    """Gains and limits of one finger's controller; units in the names, ranges in ``RANGES``."""

    enabled: bool = True
    # Admittance gain, (m/s)/N. The loop's bandwidth is k_tissue_eff * gain: with the servo
    # (50 N/mm) in series with 9-14 N/mm tissue (k_eff ~7.6-10.9 N/mm) 0.004 gives 30-44 rad/s,
    # tuned on DeviceSimulation (test_finger_controller.py) with one cycle of transport delay.
    admittance_gain_m_s_per_n: float = 0.004
    # Integral of the force error into the target velocity, (m/s)/(N·s); small, for ramps.
    integral_gain_m_s_per_n_s: float = 0.01
    # Clamp of the integral term, m/s (anti-windup).
    max_integral_m_s: float = 0.005
    # Feed-forward of dF_setpoint/dt through a nominal contact stiffness, N/m (servo and tissue in
    # series: 1/(1/50 + 1/11) N/mm ≈ 9 N/mm for the mid-range back of the default simulated user).
    feedforward_stiffness_n_per_m: float = 9000.0
    # Force ceiling of this finger, N: the setpoint is capped here and above it the target only
    # moves down. 150 N = the top of the treatment range (design.md §1: 20-150 N per contact).
    max_force_n: float = 150.0
    # Slew limit of the setpoint the law sees, N/s (soft start; a 1 Hz 20-80 N wave needs 190 N/s).
    max_force_rate_n_s: float = 600.0
    # Target velocity limit while tracking, m/s. The board's servo limit is 0.05 m/s (description
    # config), but stopping from it rings the tissue (13 % overshoot on a 10->60 N step in
    # DeviceSimulation); 0.035 keeps the overshoot near 1 % and settles in ~0.19 s.
    max_velocity_m_s: float = 0.035
    # Free-space approach speed, m/s: slow enough that contact at it costs a few N of overshoot.
    approach_speed_m_s: float = 0.03
    # Retract speed, m/s (soft retract; the board retracts a disabled finger at its own limit).
    retract_speed_m_s: float = 0.04
    # Contact detection with hysteresis, N (load-cell noise is ~0.05 N).
    contact_threshold_n: float = 3.0
    release_threshold_n: float = 1.5
    # A setpoint at or below this means "no contact wanted": retract, N. Not below the release
    # level: a setpoint between them would cycle between losing and regaining contact.
    off_threshold_n: float = 2.0
    # Most the target may lead the measured position, m: 180 N deflects the 50 N/mm servo by
    # 3.6 mm, plus margin. Bounds windup when a finger is blocked.
    max_lead_m: float = 0.006
    # Position limits of the target, m (clamped further to the joint's limits).
    min_position_m: float = 0.0
    max_position_m: float = 0.040
    # Low-pass cut-off on the load signal, Hz (0 = off).
    load_filter_hz: float = 60.0
    # Delay compensation (a Smith-predictor-like term), N/m; 0 = off. The measured load lags the
    # target by the transport delay (state and command over DDS, 1-3 cycles) and the servo's
    # lag. The target's lead over where the finger is and how far the load deflects the servo,
    # ``target - position - load / servo_stiffness``, is motion already commanded but not yet
    # seen in the load; times the contact stiffness it is the load still to come, and the law
    # tracks ``load + that``. Without it the loop rings at 100 Hz with 2+ cycles of delay (a 40 N
    # press peaked at 56 N). Nominal servo-and-tissue series stiffness, like the feed-forward.
    predictor_stiffness_n_per_m: float = 15000.0
    # Stiffness of the board's position servo, N/m (sim/model.py ServoParameters: 50 N/mm).
    servo_stiffness_n_per_m: float = 50000.0


#: Allowed range of every numeric gain (inclusive): the node declares these as parameter ranges.
RANGES: dict[str, tuple[float, float]] = {
    'admittance_gain_m_s_per_n': (0.0, 0.05),
    'integral_gain_m_s_per_n_s': (0.0, 1.0),
    'max_integral_m_s': (0.0, 0.05),
    'feedforward_stiffness_n_per_m': (0.0, 100000.0),
    'max_force_n': (0.0, 180.0),
    'max_force_rate_n_s': (1.0, 5000.0),
    'max_velocity_m_s': (0.0, 0.05),
    'approach_speed_m_s': (0.0, 0.05),
    'retract_speed_m_s': (0.001, 0.05),
    'contact_threshold_n': (0.1, 50.0),
    'release_threshold_n': (0.0, 50.0),
    'off_threshold_n': (0.0, 20.0),
    'max_lead_m': (0.0005, 0.02),
    'min_position_m': (0.0, 0.040),
    'max_position_m': (0.0, 0.040),
    'load_filter_hz': (0.0, 1000.0),
    'predictor_stiffness_n_per_m': (0.0, 100000.0),
    'servo_stiffness_n_per_m': (1000.0, 1000000.0),
}

GAIN_NAMES: tuple[str, ...] = tuple(RANGES)

#: A moving finger whose target is this close to the top of its stroke is at the stroke end, m.
STROKE_END_MARGIN_M = 0.0005


def validate_gains(gains: FingerGains, label: str = 'finger') -> None:
    """Raise ``ValueError`` naming the field if a gain is NaN, out of range or inconsistent."""
    for name, (low, high) in RANGES.items():
        value = getattr(gains, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{label}.{name} must be a number, got {value!r}')
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f'{label}.{name} must be in [{low}, {high}], got {value!r}')
    if not isinstance(gains.enabled, (bool, np.bool_)):
        raise ValueError(f'{label}.enabled must be a bool, got {gains.enabled!r}')
    if gains.release_threshold_n >= gains.contact_threshold_n:
        raise ValueError(
            f'{label}.release_threshold_n ({gains.release_threshold_n}) must be below '
            f'contact_threshold_n ({gains.contact_threshold_n})'
        )
    if gains.off_threshold_n < gains.release_threshold_n:
        raise ValueError(
            f'{label}.off_threshold_n ({gains.off_threshold_n}) must not be below '
            f'release_threshold_n ({gains.release_threshold_n}): setpoints between them would '
            'cycle between contact and approach'
        )
    if gains.min_position_m > gains.max_position_m:
        raise ValueError(
            f'{label}.min_position_m ({gains.min_position_m}) must not exceed max_position_m '
            f'({gains.max_position_m})'
        )


class FingerControllerBank:
    """The controllers of every finger, updated together (numpy, one call per control cycle)."""

    def __init__(
        self,
        names: Sequence[str],
        gains: FingerGains | Sequence[FingerGains] | Mapping[str, FingerGains] | None = None,
        *,
        lower_m: Sequence[float] | None = None,
        upper_m: Sequence[float] | None = None,
        effort_limit_n: Sequence[float] | None = None,
        velocity_limit_m_s: Sequence[float] | None = None,
    ) -> None:
        self.names = list(names)
        count = len(self.names)
        if count == 0:
            raise ValueError('names must list at least one finger')
        if len(set(self.names)) != count:
            raise ValueError('names must be unique')
        self.count = count
        self._lower = _limits('lower_m', lower_m, count, 0.0)
        self._upper = _limits('upper_m', upper_m, count, 0.040)
        self._effort = _limits('effort_limit_n', effort_limit_n, count, 180.0)
        self._vlimit = _limits('velocity_limit_m_s', velocity_limit_m_s, count, 0.05)
        if np.any(self._lower > self._upper):
            raise ValueError('lower_m must not exceed upper_m for any finger')
        if gains is None:
            per_finger = [FingerGains() for _ in range(count)]
        elif isinstance(gains, FingerGains):
            per_finger = [dataclasses.replace(gains) for _ in range(count)]
        elif isinstance(gains, Mapping):
            unknown = set(gains) - set(self.names)
            if unknown:
                raise ValueError(f'gains for unknown fingers: {sorted(unknown)}')
            per_finger = [dataclasses.replace(gains.get(n, FingerGains())) for n in self.names]
        else:
            per_finger = [dataclasses.replace(g) for g in gains]
            if len(per_finger) != count:
                raise ValueError(f'gains must have {count} entries, got {len(per_finger)}')
        self._gains: list[FingerGains] = []
        self._p: dict[str, np.ndarray] = {}
        for index, finger_gains in enumerate(per_finger):
            validate_gains(finger_gains, self.names[index])
        self._gains = per_finger
        self._rebuild()
        # State.
        self.target_m = self._lower.copy()
        self.enable = np.zeros(count, dtype=bool)
        self.mode = np.full(count, int(Mode.RETRACT), dtype=np.int8)
        self.contact = np.zeros(count, dtype=bool)
        self.invalid = np.zeros(count, dtype=bool)
        self.saturated = np.zeros(count, dtype=bool)
        self.stroke_end = np.zeros(count, dtype=bool)
        self.error_n = np.zeros(count)
        self.effective_setpoint_n = np.zeros(count)
        self.filtered_load_n = np.zeros(count)
        self._integral = np.zeros(count)
        self._last_setpoint = np.zeros(count)
        self._primed = False

    # -- configuration -------------------------------------------------------------------------

    def gains(self, finger: int | str) -> FingerGains:
        """A copy of one finger's gains."""
        return dataclasses.replace(self._gains[self._index(finger)])

    def set_gains(self, finger: int | str, gains: FingerGains) -> None:
        """Replace one finger's gains (validated first; raises ValueError, nothing changes)."""
        index = self._index(finger)
        validate_gains(gains, self.names[index])
        self._gains[index] = dataclasses.replace(gains)
        self._rebuild()

    def set_enabled(self, finger: int | str, enabled: bool) -> None:
        """Enable or disable one finger alone."""
        index = self._index(finger)
        self._gains[index] = dataclasses.replace(self._gains[index], enabled=bool(enabled))
        self._rebuild()

    def _index(self, finger: int | str) -> int:
        if isinstance(finger, str):
            if finger not in self.names:
                raise ValueError(f'unknown finger {finger!r}')
            return self.names.index(finger)
        if isinstance(finger, bool) or not 0 <= int(finger) < self.count:
            raise ValueError(f'finger index must be in [0, {self.count}), got {finger!r}')
        return int(finger)

    def _rebuild(self) -> None:
        for name in GAIN_NAMES:
            self._p[name] = np.array([getattr(g, name) for g in self._gains], dtype=float)
        self._p['enabled'] = np.array([g.enabled for g in self._gains], dtype=bool)
        self._p['max_force_n'] = np.minimum(self._p['max_force_n'], self._effort)
        self._p['max_velocity_m_s'] = np.minimum(self._p['max_velocity_m_s'], self._vlimit)
        self._p['approach_speed_m_s'] = np.minimum(self._p['approach_speed_m_s'], self._vlimit)
        self._p['retract_speed_m_s'] = np.minimum(self._p['retract_speed_m_s'], self._vlimit)
        self._low = np.maximum(self._lower, self._p['min_position_m'])
        self._high = np.minimum(self._upper, self._p['max_position_m'])
        self._high = np.maximum(self._high, self._low)

    # -- control -------------------------------------------------------------------------------

    def reset(self, position_m: Sequence[float] | None = None) -> None:
        """Forget the loop state; targets start from ``position_m`` (or the lower limits)."""
        start = self._lower.copy() if position_m is None else np.asarray(position_m, float)
        start = np.where(np.isfinite(start), start, self._lower)
        self.target_m = np.clip(start, self._lower, self._upper)
        self.contact[:] = False
        self._integral[:] = 0.0
        self._primed = False

    def retract_all(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """One cycle of retracting every finger (no state input needed: safety, stale data)."""
        # No fresh state: retract from the last targets (not flagged invalid: the input is
        # missing as a whole, which the caller reports).
        zeros = np.zeros(self.count)
        return self.update(dt_s, self.target_m.copy(), zeros, zeros, zeros)

    def update(
        self,
        dt_s: float,
        position_m: Sequence[float],
        velocity_m_s: Sequence[float],
        load_n: Sequence[float],
        setpoint_n: Sequence[float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """One control cycle for every finger; returns (target position m, enable) copies.

        A finger whose position, load or setpoint is NaN/inf retracts and is flagged in
        ``invalid`` this cycle (position NaN: the retract starts from its last target).
        """
        if not isinstance(dt_s, (int, float)) or not math.isfinite(dt_s) or dt_s <= 0.0:
            raise ValueError(f'dt_s must be a finite number > 0, got {dt_s!r}')
        dt = min(float(dt_s), 0.1)  # a stalled loop must not turn into one huge step
        n = self.count
        pos = _vector('position_m', position_m, n)
        vel = _vector('velocity_m_s', velocity_m_s, n)
        load = _vector('load_n', load_n, n)
        setpoint = _vector('setpoint_n', setpoint_n, n)
        p = self._p
        invalid = ~(np.isfinite(pos) & np.isfinite(load) & np.isfinite(setpoint))
        invalid |= ~np.isfinite(vel)
        self.invalid = invalid
        pos = np.where(invalid, self.target_m, pos)
        load = np.where(invalid, 0.0, load)
        setpoint = np.where(invalid, 0.0, setpoint)

        # Load filter (first order; alpha = 1 when off).
        cutoff = p['load_filter_hz']
        alpha = np.where(cutoff > 0, 1.0 - np.exp(-2.0 * np.pi * cutoff * dt), 1.0)
        if not self._primed:
            self.filtered_load_n = load.copy()
            self._last_setpoint = np.zeros(n)
            self._primed = True
        self.filtered_load_n = np.where(
            invalid, 0.0, self.filtered_load_n + alpha * (load - self.filtered_load_n)
        )
        force = self.filtered_load_n

        # Contact with hysteresis.
        contact = np.where(
            self.contact, force > p['release_threshold_n'], force >= p['contact_threshold_n']
        )
        enabled = p['enabled']
        wanted = setpoint > p['off_threshold_n']
        retract = ~enabled | invalid | ~wanted
        track = ~retract & contact
        approach = ~retract & ~contact

        # Setpoint the law sees: capped, soft-started from the load at contact, slew-limited.
        requested = np.clip(setpoint, 0.0, p['max_force_n'])
        entering = track & (self.mode != Mode.TRACK)
        previous = np.where(entering, force, self.effective_setpoint_n)
        # Slew-limited upwards only: less force (the safe direction) is followed at once.
        step = p['max_force_rate_n_s'] * dt
        effective = np.minimum(requested, previous + step)
        effective = np.where(track, effective, np.where(approach, force, 0.0))
        setpoint_rate = np.where(entering, 0.0, (effective - self.effective_setpoint_n) / dt)
        self.effective_setpoint_n = effective

        # Load still to come from motion already commanded (see FingerGains: delay compensation).
        in_flight = self.target_m - pos - force / p['servo_stiffness_n_per_m']
        predicted = force + np.where(track, p['predictor_stiffness_n_per_m'] * in_flight, 0.0)
        error = effective - predicted
        self.error_n = np.where(track, requested - force, 0.0)
        feedforward = np.where(
            p['feedforward_stiffness_n_per_m'] > 0,
            setpoint_rate / np.maximum(p['feedforward_stiffness_n_per_m'], 1e-9),
            0.0,
        )
        feedforward = np.where(track, feedforward, 0.0)
        velocity = p['admittance_gain_m_s_per_n'] * error + self._integral + feedforward
        vmax = p['max_velocity_m_s']
        over_force = force > p['max_force_n']
        velocity = np.where(over_force, np.minimum(velocity, 0.0), velocity)
        velocity_clipped = np.clip(velocity, -vmax, vmax)

        # Targets per mode.
        tracked = self.target_m + velocity_clipped * dt
        approached = self.target_m + p['approach_speed_m_s'] * dt
        start = np.minimum(self.target_m, np.where(invalid, self.target_m, pos))
        retracted = np.maximum(start - p['retract_speed_m_s'] * dt, self._low)
        retracted = np.minimum(retracted, self.target_m)  # never up while retracting
        target = np.where(track, tracked, np.where(approach, approached, retracted))

        # Anti-windup: lead over the measured position and the position limits.
        lead_high = pos + p['max_lead_m']
        lead_low = pos - p['max_lead_m']
        moving = track | approach
        bounded = np.clip(target, np.maximum(lead_low, self._low), lead_high)
        bounded = np.clip(bounded, self._low, self._high)
        target = np.where(moving, bounded, np.clip(target, self._low, self._high))
        saturated = track & ((velocity_clipped != velocity) | (bounded != tracked))
        self.saturated = saturated
        # Integral: frozen while saturated or out of contact, clamped.
        ki = p['integral_gain_m_s_per_n_s']
        integral_max = p['max_integral_m_s']
        grow = track & ~saturated
        self._integral = np.where(
            grow,
            np.clip(self._integral + ki * error * dt, -integral_max, integral_max),
            np.where(track, self._integral, 0.0),
        )
        self.contact = contact & ~retract
        # At the top of the stroke and still short of the force wanted: nothing (left) to push
        # against there: the user is lifted off the bed or not on the device.
        self.stroke_end = moving & (target >= self._high - STROKE_END_MARGIN_M)
        self.stroke_end &= np.where(track, force < effective - p['contact_threshold_n'], True)
        self.target_m = np.where(enabled, target, self._low)
        self.enable = enabled.copy()
        self.mode = np.select(
            [~enabled, retract, approach], [Mode.DISABLED, Mode.RETRACT, Mode.APPROACH], Mode.TRACK
        ).astype(np.int8)
        return self.target_m.copy(), self.enable.copy()


class FingerController:
    """One finger's controller (scalar interface over a one-finger ``FingerControllerBank``)."""

    def __init__(
        self,
        name: str = 'finger',
        gains: FingerGains | None = None,
        *,
        lower_m: float = 0.0,
        upper_m: float = 0.040,
        effort_limit_n: float = 180.0,
        velocity_limit_m_s: float = 0.05,
    ) -> None:
        self.name = name
        self._bank = FingerControllerBank(
            [name],
            gains or FingerGains(),
            lower_m=[lower_m],
            upper_m=[upper_m],
            effort_limit_n=[effort_limit_n],
            velocity_limit_m_s=[velocity_limit_m_s],
        )

    @classmethod
    def from_joint(cls, joint, gains: FingerGains | None = None) -> FingerController:
        """A controller with the limits of a backhug_description ``JointInfo``."""
        return cls(
            joint.name,
            gains,
            lower_m=joint.lower_m,
            upper_m=joint.upper_m,
            effort_limit_n=joint.effort_limit_n,
            velocity_limit_m_s=joint.velocity_limit_m_s,
        )

    @property
    def gains(self) -> FingerGains:
        return self._bank.gains(0)

    @gains.setter
    def gains(self, gains: FingerGains) -> None:
        self._bank.set_gains(0, gains)

    def set_enabled(self, enabled: bool) -> None:
        """Enable or disable this finger."""
        self._bank.set_enabled(0, enabled)

    def reset(self, position_m: float | None = None) -> None:
        """Forget the loop state (targets start from ``position_m``)."""
        self._bank.reset(None if position_m is None else [position_m])

    def update(
        self, dt_s: float, position_m: float, velocity_m_s: float, load_n: float, setpoint_n: float
    ) -> tuple[float, bool]:
        """One control cycle: returns (target position m, enable)."""
        target, enable = self._bank.update(
            dt_s, [position_m], [velocity_m_s], [load_n], [setpoint_n]
        )
        return float(target[0]), bool(enable[0])

    mode = property(lambda self: Mode(int(self._bank.mode[0])), doc='Current Mode.')
    contact = property(lambda self: bool(self._bank.contact[0]), doc='True while touching.')
    invalid = property(lambda self: bool(self._bank.invalid[0]), doc='NaN/inf input last cycle.')
    saturated = property(lambda self: bool(self._bank.saturated[0]), doc='Output limited.')
    stroke_end = property(
        lambda self: bool(self._bank.stroke_end[0]), doc='At the top, short of the force.'
    )
    error_n = property(lambda self: float(self._bank.error_n[0]), doc='Setpoint - load, N.')
    target_m = property(lambda self: float(self._bank.target_m[0]), doc='Last target, m.')


def _vector(name: str, value: Sequence[float], count: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{name} must be {count} numbers: {exc}') from exc
    if array.shape != (count,):
        raise ValueError(f'{name} must have {count} entries, got shape {array.shape}')
    return array


def _limits(name: str, value: Sequence[float] | None, count: int, default: float) -> np.ndarray:
    if value is None:
        return np.full(count, default)
    array = _vector(name, value, count)
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{name} must be finite for every finger')
    return array
