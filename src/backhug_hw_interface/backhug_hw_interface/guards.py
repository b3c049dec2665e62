"""hw_interface's own guards between the controllers' commands and the device (no rclpy).

The last line of defence on the host: whatever the controllers send and whatever the safety
monitor says, the targets written to the device come out of ``CommandGuard.update``:

- a command with NaN/inf, unknown or missing joints, or arrays of different lengths is rejected
  whole (the previous valid command stays in force) and counted;
- targets outside the joint limits are clamped to them and counted;
- a command older than ``command_timeout_s`` is held, and once it is ``hold_timeout_s`` older
  still, every finger retracts;
- no motion unless the safety status is OK or WARNING and was heard within
  ``safety_timeout_s`` (no safety monitor, no motion);
- a safety status that was heard and then went silent latches a safe stop;
- ``safe_stop`` (the safety monitor's call, or a lost link) retracts and holds until ``reset``,
  which is refused while the safety status is not OK/WARNING or the link is down;
- a finger that does not follow its target — more than ``stall_error_m`` above the target
  written to the device, or below it by more than that plus what its load explains (a pressing
  finger sits load / ``servo_stiffness_n_per_m`` below its target), while moving less than
  ``STALL_MOTION_M`` for ``stall_time_s`` of device time — latches a safe stop naming it
  (``check_following``): a jammed motor or a frozen position sensor, which no rule on the load
  alone sees on a finger pressing steadily.

Retracting moves each target down from where the finger really is (never from a target the
tissue stopped it short of) at ``retract_speed_m_s``, so a retract never jerks the user.
Liveness uses the caller's monotonic clock, never simulated time (a dead simulator stops it).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: SafetyStatus states that allow motion (backhug_interfaces/SafetyStatus OK and WARNING).
MOTION_ALLOWED_STATES = (0, 1)
#: A finger that moved this far since its error exceeded ``stall_error_m`` is still following
#: (slowly): its stall clock restarts. At the 20 mm/s device speed it is 0.05 s of travel.
STALL_MOTION_M = 0.001


class GuardMode(enum.Enum):
    """What the guard is doing with the targets this cycle."""

    ACTIVE = 'active'  # following the controllers' command
    HOLD = 'hold'  # command late: holding the last valid targets
    RETRACT = 'retract'  # retracting every finger (reason says why)


@dataclass
class GuardParams:
    """The guards' thresholds; ``validate`` names a bad one."""

    command_timeout_s: float = 0.2
    hold_timeout_s: float = 0.3
    safety_timeout_s: float = 0.5
    retract_speed_m_s: float = 0.02
    require_safety: bool = True
    stall_error_m: float = 0.0002
    stall_time_s: float = 0.5
    servo_stiffness_n_per_m: float = 50000.0

    def validate(self) -> GuardParams:
        for name, low, high in (
            ('command_timeout_s', 0.005, 5.0),
            ('hold_timeout_s', 0.0, 10.0),
            ('safety_timeout_s', 0.01, 5.0),
            ('retract_speed_m_s', 0.001, 0.2),
            ('stall_error_m', 0.0001, 0.05),
            ('stall_time_s', 0.05, 10.0),
            ('servo_stiffness_n_per_m', 1000.0, 1e7),
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f'{name} must be a finite number, got {value!r}')
            if not low <= value <= high:
                raise ValueError(f'{name} must be in [{low}, {high}], got {value}')
        return self


@dataclass
class GuardOutput:
    """Targets to write this cycle and why."""

    position_m: np.ndarray
    enable: np.ndarray
    mode: GuardMode
    reason: str


class CommandGuard:
    """Turns the latest command, the safety status and the device state into safe targets."""

    def __init__(
        self,
        joint_names: Sequence[str],
        lower_m: Sequence[float],
        upper_m: Sequence[float],
        params: GuardParams | None = None,
    ) -> None:
        self.joint_names = list(joint_names)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self.lower_m = np.asarray(lower_m, dtype=float)
        self.upper_m = np.asarray(upper_m, dtype=float)
        count = len(self.joint_names)
        if self.lower_m.shape != (count,) or self.upper_m.shape != (count,):
            raise ValueError('lower_m and upper_m need one limit per joint')
        if not np.all(self.lower_m < self.upper_m):
            raise ValueError('every joint needs lower_m < upper_m')
        self.params = (params or GuardParams()).validate()
        self._command = np.zeros(count)
        self._command_enable = np.zeros(count, dtype=bool)
        self._command_time_s: float | None = None
        self._safety_state: int | None = None
        self._safety_time_s: float | None = None
        self._output = np.zeros(count)
        self._retracting = np.zeros(count, dtype=bool)
        self.safe_stop_reason = ''
        # Not up until the backend says so; only a link that was up and went down latches.
        self.link_ok = False
        self._link_seen = False
        self._stall_anchor_m = np.full(count, np.nan)
        self._stall_for_s = np.zeros(count)
        self.rejected_commands = 0
        self.clamped_commands = 0
        self.last_rejection = ''
        self.last_clamp = ''

    # -- inputs --------------------------------------------------------------------------------

    def accept_command(
        self,
        names: Sequence[str],
        position_m: Sequence[float],
        enable: Sequence[bool],
        now_s: float,
    ) -> str:
        """Take a command; returns '' or why it was rejected (nothing moves on a rejection)."""
        error = self._check_command(names, position_m, enable)
        if error:
            self.rejected_commands += 1
            self.last_rejection = error
            return error
        order = np.fromiter((self._index[n] for n in names), dtype=int, count=len(names))
        target = np.empty(len(self.joint_names))
        target[order] = np.asarray(position_m, dtype=float)
        flags = np.empty(len(self.joint_names), dtype=bool)
        flags[order] = np.asarray(enable, dtype=bool)
        clamped = np.clip(target, self.lower_m, self.upper_m)
        outside = np.flatnonzero(clamped != target)
        if outside.size:
            self.clamped_commands += 1
            i = int(outside[0])
            self.last_clamp = (
                f'{self.joint_names[i]} target {target[i]:.4f} m outside '
                f'[{self.lower_m[i]:.4f}, {self.upper_m[i]:.4f}] m: clamped'
                + (f' (and {outside.size - 1} more)' if outside.size > 1 else '')
            )
        self._command = clamped
        self._command_enable = flags
        self._command_time_s = now_s
        return ''

    def _check_command(self, names, position_m, enable) -> str:
        count = len(self.joint_names)
        if not (len(names) == len(position_m) == len(enable)):
            return (
                f'command arrays differ in length: name {len(names)}, position_m '
                f'{len(position_m)}, enable {len(enable)}'
            )
        if len(names) != count:
            return f'command has {len(names)} joints, the device has {count}'
        unknown = [n for n in names if n not in self._index]
        if unknown:
            return f'command names unknown joints {unknown[:3]}'
        if len(set(names)) != count:
            return 'command names a joint twice'
        values = np.asarray(position_m, dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            return f'command position_m for {names[bad[0]]} is {values[bad[0]]}: must be finite'
        return ''

    def accept_safety(self, state: int, now_s: float) -> None:
        """The latest SafetyStatus.state heard from the safety monitor."""
        self._safety_state = int(state)
        self._safety_time_s = now_s

    def safe_stop(self, reason: str) -> None:
        """Retract everything and hold it retracted until ``reset``."""
        if not self.safe_stop_reason:
            self.safe_stop_reason = reason or 'safe stop requested'

    def set_link(self, ok: bool, reason: str = 'link to the device lost') -> None:
        """The backend's link state; losing it is a safe stop that needs a reset.

        A link that has never been up (the board or the controller manager not there yet at
        start-up) is waited for, not latched: nothing moves until it comes up and a fresh
        command arrives.
        """
        if self._link_seen and self.link_ok and not ok:
            self.safe_stop(reason)
        self._link_seen |= bool(ok)
        self.link_ok = bool(ok)

    def safety_blocker(self, now_s: float) -> str:
        """Why the safety status forbids motion now, or ''."""
        if not self.params.require_safety:
            return ''
        if self._safety_state is None or self._safety_time_s is None:
            return 'no safety status heard yet (no safety monitor, no motion)'
        age = now_s - self._safety_time_s
        if age > self.params.safety_timeout_s:
            return f'safety status not heard for {age:.2f} s (safety monitor gone?)'
        if self._safety_state not in MOTION_ALLOWED_STATES:
            return f'safety status is {_STATE_NAMES.get(self._safety_state, self._safety_state)}'
        return ''

    def reset(self, now_s: float) -> tuple[bool, str]:
        """Clear a safe stop; refused while safety forbids motion or the link is down."""
        if not self.link_ok:
            return False, 'reset refused: the link to the device is down'
        blocker = self.safety_blocker(now_s)
        if blocker:
            return False, f'reset refused: {blocker}'
        previous = self.safe_stop_reason
        self.safe_stop_reason = ''
        # A command from before the stop must not resume motion: wait for a fresh one.
        self._command_time_s = None
        return True, f'safe stop cleared (was: {previous})' if previous else 'nothing to reset'

    def check_following(
        self,
        dt_s: float,
        target_m: np.ndarray,
        measured_m: np.ndarray,
        load_n: np.ndarray | None = None,
    ) -> str:
        """Latch a safe stop when a finger does not follow the target written to the device.

        ``dt_s`` is device time since the last check (simulated time on a simulator, so a
        starved host does not look like a stalled finger); ``load_n`` the measured loads (+ =
        pushing on the user), which explain a pressing finger sitting below its target. Returns
        the reason when it latched now, else ''. Skipped while the link is down (the positions
        are stale) or already stopped; a NaN position is the safety monitor's to judge.
        """
        if not self.link_ok or self.safe_stop_reason:
            self._stall_for_s[:] = 0.0
            self._stall_anchor_m[:] = np.nan
            return ''
        target = np.asarray(target_m, dtype=float)
        measured = np.asarray(measured_m, dtype=float)
        if target.shape != self._stall_for_s.shape or measured.shape != target.shape:
            return ''
        load = np.zeros_like(target) if load_n is None else np.asarray(load_n, dtype=float)
        sag = np.where(np.isfinite(load), np.maximum(load, 0.0), 0.0)
        sag = sag / self.params.servo_stiffness_n_per_m
        above = measured - target
        error = np.abs(above)
        margin = self.params.stall_error_m
        off = np.isfinite(above) & ((above > margin) | (-above > margin + sag))
        moved = ~(np.abs(measured - self._stall_anchor_m) <= STALL_MOTION_M)  # NaN anchor: moved
        restart = off & moved
        self._stall_anchor_m = np.where(restart | ~off, measured, self._stall_anchor_m)
        self._stall_for_s = np.where(off & ~restart, self._stall_for_s + max(dt_s, 0.0), 0.0)
        stuck = np.flatnonzero(self._stall_for_s > self.params.stall_time_s)
        if stuck.size == 0:
            return ''
        worst = int(stuck[np.argmax(error[stuck])])
        names = ', '.join(self.joint_names[i] for i in stuck)
        self.safe_stop(
            f'finger not following its target: {names} ({self.joint_names[worst]} at '
            f'{measured[worst] * 1000:.1f} mm, {error[worst] * 1000:.1f} mm from its '
            f'{target[worst] * 1000:.1f} mm target for {self.params.stall_time_s:.2f} s; '
            'motor stalled or position sensor frozen)'
        )
        return self.safe_stop_reason

    # -- output --------------------------------------------------------------------------------

    def update(self, now_s: float, dt_s: float, measured_m: np.ndarray) -> GuardOutput:
        """The targets to write this cycle, given the measured positions."""
        reason = self._retract_reason(now_s)
        measured = np.where(np.isfinite(measured_m), measured_m, self._output)
        if reason:
            return self._retract(dt_s, measured, np.ones(len(self.joint_names), bool), reason)
        age = now_s - self._command_time_s  # type: ignore[operator]
        if age > self.params.command_timeout_s:
            self._output = self._output.copy()
            self._retracting[:] = False
            return GuardOutput(
                self._output,
                np.ones(len(self.joint_names), dtype=bool),
                GuardMode.HOLD,
                f'command {age:.2f} s old: holding',
            )
        # Disabled fingers retract on their own; the others follow the command.
        disabled = ~self._command_enable
        if disabled.any():
            retracted = self._retract(dt_s, measured, disabled, '').position_m
            target = np.where(disabled, retracted, self._command)
        else:
            target = self._command
        self._retracting &= disabled
        self._output = target.copy()
        return GuardOutput(
            self._output, np.ones(len(self.joint_names), dtype=bool), GuardMode.ACTIVE, ''
        )

    def _retract_reason(self, now_s: float) -> str:
        if self.safe_stop_reason:
            return f'safe stop: {self.safe_stop_reason}'
        blocker = self.safety_blocker(now_s)
        if blocker:
            if self._safety_time_s is not None and 'not heard' in blocker:
                # A safety monitor that was there and went silent is a fault, not a pause:
                # latch, so a restarted monitor cannot resume motion without a reset.
                self.safe_stop(blocker)
            return blocker
        if not self.link_ok:
            return 'waiting for the link to the device'
        if self._command_time_s is None:
            return 'no command yet'
        age = now_s - self._command_time_s
        if age > self.params.command_timeout_s + self.params.hold_timeout_s:
            return f'no command for {age:.2f} s (controllers gone?)'
        return ''

    def _retract(
        self, dt_s: float, measured: np.ndarray, which: np.ndarray, reason: str
    ) -> GuardOutput:
        # A finger starting to retract starts from where it really is (a target the tissue
        # stopped it short of would only delay the retract); then the target keeps falling.
        starting = which & ~self._retracting
        start = np.where(
            starting, np.minimum(self._output, np.maximum(measured, self.lower_m)), self._output
        )
        self._retracting |= which
        lowered = np.maximum(self.lower_m, start - self.params.retract_speed_m_s * max(dt_s, 0.0))
        self._output = np.where(which, lowered, self._output)
        return GuardOutput(
            self._output.copy(),
            np.ones(len(self.joint_names), dtype=bool),
            GuardMode.RETRACT,
            reason,
        )


_STATE_NAMES = {0: 'OK', 1: 'WARNING', 2: 'FAULT', 3: 'ESTOP'}
