"""The safety monitor's rule engine: state samples in, a latched verdict out (no rclpy).

``SafetyRules.evaluate(inputs, now_s)`` takes what arrived since the last evaluation (joint-state
samples, the latest hardware status, the last heartbeat of each node) and a monotonic wall-clock
time ``now_s``. Liveness is always judged on that clock, never on ROS (sim) time: a dead simulator
stops /clock, and a monitor on sim time would then never see anything go stale.

States (backhug_interfaces/SafetyStatus): OK, WARNING (motion allowed), FAULT, ESTOP (no motion).

* Start-up: until /joint_states and a heartbeat of every watched node have each been seen once,
  the state is FAULT with ``latched=False`` and reasons ``waiting for ...``: no motion, and no
  reset needed. Conditions seen meanwhile are reported but not latched.
* Afterwards any FAULT-level condition latches FAULT (an e-stop latches ESTOP), with the reasons
  of the moment it latched. The latch holds after the condition clears; ``reset(now_s)`` clears
  it only when no FAULT-level condition is present at that moment. Board fault bits latch on
  their rising edge; the reset acknowledges bits still latched inside the board (the board holds
  its fingers retracted until /hw_interface/reset sends RESET, which needs an OK status first),
  so they show as a WARNING until they clear. The e-stop input and a down link block the reset.

Each rule is a field of ``SafetyParameters`` with its default's source in a comment.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

# SafetyStatus constants (same values as backhug_interfaces/msg/SafetyStatus.msg).
OK, WARNING, FAULT, ESTOP = 0, 1, 2, 3
STATE_NAMES = {OK: 'OK', WARNING: 'WARNING', FAULT: 'FAULT', ESTOP: 'ESTOP'}
FLAG_LOAD_WARNING = 1
FLAG_OVERLOAD = 2
FLAG_RISE_RATE = 4
FLAG_POSITION = 8
FLAG_STALE = 16
FLAG_BOARD_FAULT = 32
FLAG_INVALID = 64
# HardwareStatus constants.
LINK_DISCONNECTED, LINK_CONNECTING, LINK_OK, LINK_DEGRADED = 0, 1, 2, 3
FAULT_ESTOP = 8
HEARTBEAT_STATE_OK, HEARTBEAT_STATE_DEGRADED, HEARTBEAT_STATE_STOPPING = 0, 1, 2


@dataclasses.dataclass
class SafetyParameters:
    """Thresholds of every rule (units in the names; ``RANGES`` gives the allowed values)."""

    # Hard per-finger load ceiling, N: design.md §1 "hard ceiling per finger default 180 N", equal
    # to the joints' effort_limit_n (backhug_description config) and below the ~200 N quasi-static
    # back/shoulder limits of ISO/TS 15066 and Behrens et al., Front. Robot. AI 2022.
    load_limit_n: float = 180.0
    # Per-finger warning level, N: the top of the treatment range, design.md §1 (20-150 N; Petty,
    # Manual Therapy 1995, lumbar PA mean peak ≈ 92 N).
    load_warning_n: float = 150.0
    # Sum over all fingers, N. The fingers carry at most the trunk resting on them (43.5 % of body
    # mass, de Leva 1996: ~320 N for 75 kg, ~520 N for 120 kg) unless something presses the user
    # down onto them; twice a heavy user's trunk is a fault, 1.5x a warning.
    total_load_limit_n: float = 1000.0
    total_load_warning_n: float = 750.0
    # Load rise rate per finger, N/s, over ``rise_rate_window_s``: the fastest intended loading is
    # the top of the design range (design.md §1: 3 Hz, up to 150 N, i.e. a 65 N amplitude around
    # 85 N: peak 2π·3·65 ≈ 1230 N/s); a spike (user pushed onto a finger, a jammed servo
    # releasing) rises faster.
    rise_rate_limit_n_s: float = 2000.0
    rise_rate_window_s: float = 0.05
    # Rise-rate rule only above this load, N (noise and first touch at low load are harmless).
    rise_rate_min_load_n: float = 40.0
    # Tolerance around the joint limits (0-40 mm, backhug_description config), m.
    position_tolerance_m: float = 0.002
    # /joint_states older than this (arrival, or a header stamp that stopped advancing) is
    # stale, s of wall time. hw_interface refuses motion after 0.25 s without /safety/status; we
    # react a little earlier (20 missed cycles at 200 Hz, 40 at 100 Hz).
    joint_states_timeout_s: float = 0.2
    # A finger whose position and load are bit-identical this long is frozen (a working load cell
    # always shows noise; default simulated user: 0.05 N), s. 0 disables the rule.
    frozen_sample_timeout_s: float = 1.0
    # Missing heartbeat (published at 20 Hz, architecture.md) for this long = node dead, s.
    heartbeat_timeout_s: float = 0.3
    # /hardware/status (10 Hz) not heard this long, after it was seen once, s. 0 disables.
    hardware_status_timeout_s: float = 1.0
    # Nodes whose heartbeat is required (architecture.md graph).
    watched_nodes: tuple[str, ...] = ('finger_controllers', 'program_sequencer', 'hw_interface')


RANGES: dict[str, tuple[float, float]] = {
    'load_limit_n': (1.0, 180.0),
    'load_warning_n': (1.0, 180.0),
    'total_load_limit_n': (1.0, 5000.0),
    'total_load_warning_n': (1.0, 5000.0),
    'rise_rate_limit_n_s': (10.0, 100000.0),
    'rise_rate_window_s': (0.001, 1.0),
    'rise_rate_min_load_n': (0.0, 180.0),
    'position_tolerance_m': (0.0, 0.01),
    'joint_states_timeout_s': (0.01, 5.0),
    'frozen_sample_timeout_s': (0.0, 60.0),
    'heartbeat_timeout_s': (0.05, 5.0),
    'hardware_status_timeout_s': (0.0, 10.0),
}


def validate_parameters(params: SafetyParameters) -> None:
    """Raise ``ValueError`` naming the parameter if one is NaN, out of range or inconsistent."""
    for name, (low, high) in RANGES.items():
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{name} must be a number, got {value!r}')
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f'{name} must be in [{low}, {high}], got {value!r}')
    if params.load_warning_n > params.load_limit_n:
        raise ValueError(
            f'load_warning_n ({params.load_warning_n}) must not exceed load_limit_n '
            f'({params.load_limit_n})'
        )
    if params.total_load_warning_n > params.total_load_limit_n:
        raise ValueError(
            f'total_load_warning_n ({params.total_load_warning_n}) must not exceed '
            f'total_load_limit_n ({params.total_load_limit_n})'
        )
    if any(not isinstance(n, str) or not n for n in params.watched_nodes):
        raise ValueError(f'watched_nodes must be non-empty names, got {params.watched_nodes!r}')


@dataclasses.dataclass
class JointSample:
    """One /joint_states message as the rules see it."""

    received_s: float  # monotonic wall time of arrival
    stamp_s: float  # header stamp (ROS time, s)
    names: Sequence[str]
    position_m: Sequence[float]
    velocity_m_s: Sequence[float]
    effort_n: Sequence[float]


@dataclasses.dataclass
class HardwareSample:
    """The latest /hardware/status."""

    received_s: float
    link: int = LINK_OK
    estop: bool = False
    board_faults: int = 0
    fault_messages: Sequence[str] = ()
    finger_names: Sequence[str] = ()
    finger_faults: Sequence[int] = ()
    safe_stopped: bool = False  # hw_interface holds the device in a (latched) safe stop


@dataclasses.dataclass
class HeartbeatSample:
    """The last heartbeat heard from one node."""

    received_s: float
    state: int = HEARTBEAT_STATE_OK
    detail: str = ''


@dataclasses.dataclass
class SafetyInputs:
    """What arrived since the last evaluation."""

    joint_states: Sequence[JointSample] = ()
    hardware: HardwareSample | None = None
    heartbeats: Mapping[str, HeartbeatSample] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Verdict:
    """The outcome of one evaluation."""

    state: int
    latched: bool
    reasons: list[str]
    finger_flags: np.ndarray  # uint16 FLAG_* per finger: now, plus the latch's cause while latched
    latched_at_s: float | None  # monotonic time the current latch began
    waiting: bool  # still in start-up (not everything seen yet)
    conditions: list[str]  # FAULT-level conditions present right now
    warnings: list[str]
    max_load_n: float
    total_load_n: float

    @property
    def motion_allowed(self) -> bool:
        return self.state in (OK, WARNING)


class SafetyRules:
    """Rule engine with latch and reset (one instance per safety monitor)."""

    def __init__(
        self,
        params: SafetyParameters,
        finger_names: Sequence[str],
        *,
        lower_m: Sequence[float] | None = None,
        upper_m: Sequence[float] | None = None,
    ) -> None:
        validate_parameters(params)
        self.params = params
        self.finger_names = list(finger_names)
        if not self.finger_names:
            raise ValueError('finger_names must list at least one finger')
        n = len(self.finger_names)
        self._index = {name: i for i, name in enumerate(self.finger_names)}
        self._lower = np.zeros(n) if lower_m is None else np.asarray(lower_m, float)
        self._upper = np.full(n, 0.040) if upper_m is None else np.asarray(upper_m, float)
        if self._lower.shape != (n,) or self._upper.shape != (n,):
            raise ValueError(f'lower_m and upper_m must have {n} entries')
        self._joint_seen = False
        self._joint_received_s = -math.inf
        self._stamp_changed_s = -math.inf
        self._last_stamp = None
        self._position = np.zeros(n)
        self._effort = np.zeros(n)
        self._peak_effort = np.zeros(n)
        self._invalid = np.zeros(n, dtype=bool)
        self._missing = np.zeros(n, dtype=bool)
        self._rise_rate = np.zeros(n)
        self._rate_history: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._unchanged_since = np.full(n, math.inf)
        self._last_values: np.ndarray | None = None
        self._hardware: HardwareSample | None = None
        self._heartbeats: dict[str, HeartbeatSample] = {}
        self._latched_state = OK
        self._latched = False
        self._latched_at_s: float | None = None
        self._latch_reasons: list[str] = []
        self._latch_flags = np.zeros(n, dtype=np.uint16)
        self._ack_board_bits = 0
        self._ack_finger_bits = np.zeros(n, dtype=np.int64)
        self._ack_safe_stop = False
        self._last_verdict: Verdict | None = None

    # -- public --------------------------------------------------------------------------------

    @property
    def latched(self) -> bool:
        return self._latched

    def emergency_stop(self, reason: str, now_s: float) -> None:
        """Software emergency stop: latches ESTOP now (also during start-up)."""
        self._latch(ESTOP, [f'emergency stop: {reason or "software emergency stop"}'], now_s)

    def reset(self, now_s: float) -> tuple[bool, str]:
        """Clear the latch if no FAULT-level condition is present now; (success, message)."""
        if not self._latched:
            if self._waiting():
                return False, 'nothing latched; still ' + '; '.join(self._waiting())
            return True, 'nothing latched'
        conditions, _, _, _ = self._conditions(now_s, acknowledge_board=True)
        if conditions:
            return False, 'reset refused, condition(s) still present: ' + '; '.join(conditions)
        message = 'latch cleared'
        hardware = self._hardware
        if hardware is not None:
            self._ack_safe_stop = hardware.safe_stopped  # cleared by /hw_interface/reset next
            self._ack_board_bits = hardware.board_faults
            for name, bits in zip(hardware.finger_names, hardware.finger_faults, strict=False):
                i = self._index.get(name)
                if i is not None:
                    self._ack_finger_bits[i] = int(bits) & ~FAULT_ESTOP
            if self._ack_board_bits or self._ack_finger_bits.any():
                message += (
                    f'; board faults 0x{self._ack_board_bits:x} acknowledged (still latched in '
                    'the board until /hw_interface/reset)'
                )
        self._latched = False
        self._latched_state = OK
        self._latched_at_s = None
        self._latch_reasons = []
        self._latch_flags = np.zeros(len(self.finger_names), dtype=np.uint16)
        return True, message

    def evaluate(self, inputs: SafetyInputs, now_s: float) -> Verdict:
        """Ingest ``inputs`` and judge every rule at monotonic time ``now_s``."""
        for sample in inputs.joint_states:
            self._ingest_joint_state(sample)
        if inputs.hardware is not None:
            self._hardware = inputs.hardware
        for name, beat in inputs.heartbeats.items():
            self._heartbeats[name] = beat
        conditions, warnings, flags, estop = self._conditions(now_s)
        self._peak_effort = self._effort.copy()  # peaks are per evaluation period
        waiting = self._waiting()
        if not waiting and (conditions or estop):
            self._latch(ESTOP if estop else FAULT, conditions, now_s, flags)
        if self._latched:  # the fingers that caused the latch stay flagged until the reset
            flags = flags | self._latch_flags
        if self._latched:
            state = self._latched_state
            reasons = list(self._latch_reasons)
            reasons += [c for c in conditions if c not in reasons]
        elif waiting:
            state = ESTOP if estop else FAULT
            reasons = waiting + conditions
        elif warnings:
            state, reasons = WARNING, list(warnings)
        else:
            state, reasons = OK, []
        if state in (FAULT, ESTOP):
            reasons += [w for w in warnings if w not in reasons]
        verdict = Verdict(
            state=state,
            latched=self._latched,
            reasons=reasons,
            finger_flags=flags,
            latched_at_s=self._latched_at_s,
            waiting=bool(waiting),
            conditions=conditions,
            warnings=warnings,
            max_load_n=float(np.max(self._effort)) if self._joint_seen else 0.0,
            total_load_n=float(np.sum(np.maximum(self._effort, 0.0))),
        )
        self._last_verdict = verdict
        return verdict

    # -- internals -----------------------------------------------------------------------------

    def _latch(
        self, state: int, reasons: list[str], now_s: float, flags: np.ndarray | None = None
    ) -> None:
        if flags is not None and (not self._latched or self._latched_state < state):
            self._latch_flags = self._latch_flags | flags
        if self._latched and self._latched_state >= state:
            return
        if not self._latched:
            self._latched_at_s = now_s
            self._latch_reasons = list(reasons)
        else:  # FAULT escalating to ESTOP: the e-stop reason first
            self._latch_reasons = list(reasons) + [
                r for r in self._latch_reasons if r not in reasons
            ]
        self._latched = True
        self._latched_state = state

    def _waiting(self) -> list[str]:
        waiting = []
        if not self._joint_seen:
            waiting.append('waiting for /joint_states')
        missing = [n for n in self.params.watched_nodes if n not in self._heartbeats]
        if missing:
            waiting.append('waiting for heartbeat of ' + ', '.join(missing))
        return waiting

    def _ingest_joint_state(self, sample: JointSample) -> None:
        n = len(self.finger_names)
        position = np.full(n, np.nan)
        effort = np.full(n, np.nan)
        names = list(sample.names)
        counts_ok = len(sample.position_m) == len(names) and len(sample.effort_n) == len(names)
        if counts_ok:
            for j, name in enumerate(names):
                i = self._index.get(name)
                if i is not None:
                    position[i] = float(sample.position_m[j])
                    effort[i] = float(sample.effort_n[j])
        self._missing = ~np.isin(np.array(self.finger_names), names) | (not counts_ok)
        invalid = ~np.isfinite(position) | ~np.isfinite(effort)
        if len(sample.velocity_m_s) == len(names) and counts_ok:
            for j, name in enumerate(names):
                i = self._index.get(name)
                if i is not None and not math.isfinite(float(sample.velocity_m_s[j])):
                    invalid[i] = True
        self._invalid = invalid
        self._joint_seen = True
        self._joint_received_s = sample.received_s
        stamped = math.isfinite(sample.stamp_s) and sample.stamp_s > 0.0
        # An unstamped publisher (stamp 0) is judged on arrival only.
        if not stamped or self._last_stamp is None or sample.stamp_s != self._last_stamp:
            self._stamp_changed_s = sample.received_s
            self._last_stamp = sample.stamp_s
        # Frozen values per finger.
        values = np.stack([position, effort])
        if self._last_values is None:
            self._unchanged_since = np.full(n, sample.received_s)
        else:
            same = np.all(values == self._last_values, axis=0)
            self._unchanged_since = np.where(same, self._unchanged_since, sample.received_s)
        self._last_values = values
        self._position = np.where(np.isfinite(position), position, self._position)
        self._effort = np.where(np.isfinite(effort), effort, self._effort)
        self._peak_effort = np.maximum(self._peak_effort, np.where(invalid, -np.inf, effort))
        # Rise rate over the window, on the samples' own time (sim time rates are physical).
        t = sample.stamp_s if stamped else sample.received_s
        window = self.params.rise_rate_window_s
        history = self._rate_history
        if history and t < history[-1][0]:
            history.clear()  # time jumped back (sim restarted)
        history.append((t, self._effort.copy()))
        while len(history) > 2 and t - history[1][0] >= window:
            history.popleft()
        t0, effort0 = history[0]
        if t - t0 >= 0.5 * window and t > t0:
            rate = (self._effort - effort0) / (t - t0)
            self._rise_rate = np.where(self._effort >= self.params.rise_rate_min_load_n, rate, 0.0)
        else:
            self._rise_rate = np.zeros(n)

    def _conditions(
        self, now_s: float, acknowledge_board: bool = False
    ) -> tuple[list[str], list[str], np.ndarray, bool]:
        p = self.params
        n = len(self.finger_names)
        flags = np.zeros(n, dtype=np.uint16)
        faults: list[str] = []
        warnings: list[str] = []
        estop = False

        def name_list(mask: np.ndarray, values: np.ndarray | None = None, unit: str = '') -> str:
            items = []
            for i in np.flatnonzero(mask)[:4]:
                text = self.finger_names[i]
                if values is not None:
                    text += f' {values[i]:.1f} {unit}'
                items.append(text)
            more = int(np.count_nonzero(mask)) - len(items)
            return ', '.join(items) + (f' and {more} more' if more > 0 else '')

        # E-stop input of the board while pressed (a software e-stop latches in emergency_stop(),
        # an event, not a condition that could persist and block the reset). The board's own
        # FAULT_ESTOP bit stays latched in the board until RESET: it latches ESTOP on its rising
        # edge below, like the other board bits, and a reset after the release acknowledges it.
        hardware = self._hardware
        if hardware is not None and hardware.estop:
            estop = True
            faults.append('emergency stop pressed (board)')

        if self._joint_seen:
            age = now_s - self._joint_received_s
            stamp_age = now_s - self._stamp_changed_s
            if age > p.joint_states_timeout_s:
                flags |= FLAG_STALE
                faults.append(
                    f'/joint_states stale: last message {age:.2f} s ago '
                    f'(limit {p.joint_states_timeout_s:.2f} s)'
                )
            elif stamp_age > p.joint_states_timeout_s:
                flags |= FLAG_STALE
                faults.append(
                    f'/joint_states frozen: header stamp unchanged for {stamp_age:.2f} s '
                    f'(limit {p.joint_states_timeout_s:.2f} s)'
                )
            bad = self._invalid | self._missing
            if bad.any():
                flags[bad] |= FLAG_INVALID
                faults.append(f'invalid or missing joint state (NaN/inf/absent): {name_list(bad)}')
            if p.frozen_sample_timeout_s > 0:
                frozen = (now_s - self._unchanged_since) > p.frozen_sample_timeout_s
                frozen &= ~bad
                if frozen.any():
                    flags[frozen] |= FLAG_STALE
                    faults.append(
                        f'sensor frozen (identical samples > {p.frozen_sample_timeout_s:.1f} s): '
                        f'{name_list(frozen)}'
                    )
            peak = np.maximum(self._peak_effort, self._effort)
            over = peak > p.load_limit_n
            if over.any():
                flags[over] |= FLAG_OVERLOAD
                faults.append(
                    f'finger load above {p.load_limit_n:.0f} N: {name_list(over, peak, "N")}'
                )
            warn = (peak > p.load_warning_n) & ~over
            if warn.any():
                flags[warn] |= FLAG_LOAD_WARNING
                warnings.append(
                    f'finger load above {p.load_warning_n:.0f} N: {name_list(warn, peak, "N")}'
                )
            total = float(np.sum(np.maximum(self._effort, 0.0)))
            if total > p.total_load_limit_n:
                faults.append(
                    f'total load {total:.0f} N above the limit {p.total_load_limit_n:.0f} N'
                )
            elif total > p.total_load_warning_n:
                warnings.append(
                    f'total load {total:.0f} N above the warning level '
                    f'{p.total_load_warning_n:.0f} N'
                )
            rising = self._rise_rate > p.rise_rate_limit_n_s
            if rising.any():
                flags[rising] |= FLAG_RISE_RATE
                faults.append(
                    f'load rising faster than {p.rise_rate_limit_n_s:.0f} N/s: '
                    f'{name_list(rising, self._rise_rate, "N/s")}'
                )
            outside = (self._position < self._lower - p.position_tolerance_m) | (
                self._position > self._upper + p.position_tolerance_m
            )
            if outside.any():
                flags[outside] |= FLAG_POSITION
                faults.append(
                    f'position outside the joint limits: '
                    f'{name_list(outside, self._position * 1000.0, "mm")}'
                )

        if hardware is not None:
            hw_age = now_s - hardware.received_s
            if 0 < p.hardware_status_timeout_s < hw_age:
                faults.append(f'/hardware/status not heard for {hw_age:.2f} s')
            if hardware.link in (LINK_DISCONNECTED, LINK_CONNECTING):
                faults.append('hardware link down')
            # Board faults latch on their rising edge. A reset acknowledges the bits still
            # latched in the board (it keeps its fingers retracted until /hw_interface/reset
            # sends RESET, which needs an OK status first); a bit that clears and comes back
            # latches again. The e-stop input and a down link are never acknowledged.
            other = hardware.board_faults
            finger_bits = np.zeros(n, dtype=np.int64)
            for name, bits in zip(hardware.finger_names, hardware.finger_faults, strict=False):
                i = self._index.get(name)
                if i is not None:
                    finger_bits[i] = int(bits) & ~FAULT_ESTOP
            self._ack_board_bits &= other
            self._ack_finger_bits &= finger_bits
            if acknowledge_board:
                ack_board, ack_fingers = other, finger_bits
            else:
                ack_board, ack_fingers = self._ack_board_bits, self._ack_finger_bits
            new = other & ~ack_board
            new_fingers = (finger_bits & ~ack_fingers) != 0
            flags[finger_bits != 0] |= FLAG_BOARD_FAULT
            messages = [m[:160] for m in list(hardware.fault_messages)[:3]]
            if new & FAULT_ESTOP and not hardware.estop:
                estop = True
                faults.append('emergency stop latched by the board')
            if new & ~FAULT_ESTOP:
                detail = '; '.join(messages) or f'bits 0x{other:x}'
                faults.append(f'board fault: {detail}')
            elif new_fingers.any():
                faults.append(f'board reports finger faults: {name_list(new_fingers)}')
            # A safe stop hw_interface latched on its own (its guards: the safety status went
            # silent, the link dropped) is a fault of the whole system: without this rule the
            # status stayed OK while nothing could move, and a program "completed" pressing
            # nothing. Acknowledged by a reset like the board's bits (the reset then asks
            # /hw_interface/reset, which clears it).
            self._ack_safe_stop &= hardware.safe_stopped
            acknowledged = hardware.safe_stopped if acknowledge_board else self._ack_safe_stop
            if hardware.safe_stopped and not acknowledged:
                why = [m for m in hardware.fault_messages if m.startswith('safe stop')]
                faults.append(
                    'hw_interface holds the device in safe stop'
                    + (f' ({why[0][:160]})' if why else '')
                )
            if not new and not new_fingers.any() and (other or finger_bits.any()):
                warnings.append(
                    f'board faults 0x{other:x} still latched in the board (acknowledged by the '
                    'reset; /hw_interface/reset clears them)'
                )

        for name in p.watched_nodes:
            beat = self._heartbeats.get(name)
            if beat is None:
                continue  # start-up: reported as waiting
            silent = now_s - beat.received_s
            if silent > p.heartbeat_timeout_s:
                faults.append(f'heartbeat of {name} missing for {silent:.2f} s')
            elif beat.state == HEARTBEAT_STATE_STOPPING:
                faults.append(f'{name} is stopping')
            elif beat.state == HEARTBEAT_STATE_DEGRADED:
                warnings.append(f'{name} degraded: {beat.detail}'.rstrip(': '))
        # The e-stop first, then the rest in the order above.
        return faults, warnings, flags, estop
