"""The spine scan as a state machine over force setpoints.

The scan drives the fingers the way a program does — through force setpoints to the finger
controllers — so the controllers' limits and the safety monitor stay in the loop throughout. Rows
are scanned in turn, both sides at once:

1. contact: a small force setpoint makes the controller rise slowly until the tip meets the back;
   the position where the load crosses ``contact_threshold_n`` is the contact height;
2. stiffness: the force ramps from the band's lower end to its upper end and back, ``cycles``
   times; each rising ramp gives a load/displacement slope (see ``analysis``);
3. release: force 0 (the controller retracts the finger) before the next row.

The contact height reported is the unloaded surface of the back: the threshold crossing less the
compression the threshold load causes at the measured stiffness.

Feed it joint samples with ``update``; it returns the setpoints to publish. ``abort`` ends it early
with a partial, incomplete map. No rclpy here: the action server wraps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from backhug_programs.spinemap.analysis import (
    FingerResult,
    ScanDataError,
    contact_height_m,
    estimate_stiffness,
    segment_map,
)
from backhug_programs.spinemap.model import SpineMapResult


class ScanStage(Enum):
    """Where a row is in its scan."""

    CONTACT = 'contact'
    STIFFNESS = 'stiffness'
    RELEASE = 'release'
    DONE = 'done'


@dataclass
class ScanSettings:
    """How gently and how often to probe; defaults follow the issue's safe band (20 → 60 N)."""

    band_min_force_n: float = 20.0
    band_max_force_n: float = 60.0
    cycles: int = 3
    contact_force_n: float = 5.0  # approach setpoint: small, so first contact is gentle
    contact_threshold_n: float = 2.0  # load that counts as contact
    contact_timeout_s: float = 8.0  # no contact within this → the finger is reported, not guessed
    ramp_rate_n_per_s: float = 20.0  # slow enough for quasi-static loading
    preload_force_n: float = 10.0  # between cycles: stay in contact below the band
    release_s: float = 1.0
    rows_at_once: int = 1  # rows probed together (far apart on the bed)

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        checks = [
            ('band_min_force_n', 5.0 <= self.band_min_force_n < self.band_max_force_n),
            ('band_max_force_n', self.band_max_force_n <= 100.0),
            ('cycles', 1 <= self.cycles <= 10),
            ('contact_force_n', 0.0 < self.contact_force_n < self.band_min_force_n),
            ('contact_threshold_n', 0.0 < self.contact_threshold_n < self.contact_force_n),
            ('ramp_rate_n_per_s', 1.0 <= self.ramp_rate_n_per_s <= 100.0),
            (
                'preload_force_n',
                self.contact_force_n <= self.preload_force_n < self.band_min_force_n,
            ),
            ('rows_at_once', self.rows_at_once >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f'scan setting {name}={getattr(self, name)!r} is out of range')


@dataclass
class _FingerLog:
    position: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    cycles: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    contact_m: float = math.nan


@dataclass
class FingerGeometry:
    """Where a finger is: from the device description."""

    name: str
    side: str
    row: int
    spine_offset_m: float


class SpineScan:
    """Scan every row of the device; ``update`` per joint sample, ``result`` at the end."""

    def __init__(
        self,
        fingers: list[FingerGeometry],
        settings: ScanSettings | None = None,
        levels: list[tuple[str, float]] | None = None,
        user_id: str = '',
        stamp: str = '',
    ) -> None:
        self.settings = settings or ScanSettings()
        self.settings.validate()
        self.fingers = fingers
        self.levels = levels or []
        self.user_id = user_id
        self.stamp = stamp
        rows = sorted({f.row for f in fingers})
        # Probe rows that are far apart together: row i with row i + n/k, ...
        groups = max(1, math.ceil(len(rows) / self.settings.rows_at_once))
        self._row_groups = [rows[i::groups] for i in range(groups)]
        self._group_index = 0
        self._stage = ScanStage.CONTACT
        self._stage_start_s: float | None = None
        self._logs = {f.name: _FingerLog() for f in fingers}
        self._index = {f.name: i for i, f in enumerate(fingers)}
        self._setpoints = np.zeros(len(fingers))
        self._cycle = 0
        self._rising = True
        self._cycle_force_n = 0.0
        self._last_t: float | None = None
        self._aborted = ''
        self.max_load_n = 0.0

    # -- progress ----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once every row is scanned or the scan was aborted."""
        return self._stage is ScanStage.DONE

    @property
    def stage(self) -> ScanStage:
        return self._stage

    @property
    def progress(self) -> float:
        """0..1 over the row groups."""
        if self.done:
            return 1.0
        return self._group_index / len(self._row_groups)

    @property
    def active_fingers(self) -> list[str]:
        """Names of the fingers being probed now."""
        if self.done:
            return []
        rows = set(self._row_groups[self._group_index])
        return [f.name for f in self.fingers if f.row in rows]

    def abort(self, reason: str) -> None:
        """Stop now: every setpoint goes to 0 and the map is marked incomplete with ``reason``."""
        self._aborted = reason or 'aborted'
        self._stage = ScanStage.DONE
        self._setpoints[:] = 0.0

    # -- the state machine --------------------------------------------------------------------
    def update(self, t_s: float, position_m: np.ndarray, load_n: np.ndarray) -> np.ndarray:
        """Take one joint sample (finger order as given) and return the force setpoints (N)."""
        position_m = np.asarray(position_m, dtype=float)
        load_n = np.asarray(load_n, dtype=float)
        if position_m.shape != (len(self.fingers),) or load_n.shape != position_m.shape:
            raise ValueError(
                f'expected {len(self.fingers)} positions and loads, got '
                f'{position_m.shape} and {load_n.shape}'
            )
        if self.done:
            return np.zeros(len(self.fingers))
        if not (np.all(np.isfinite(position_m)) and np.all(np.isfinite(load_n))):
            self.abort('joint state contains NaN or inf')
            return self._setpoints.copy()
        if self._stage_start_s is None:
            self._stage_start_s = t_s
        dt = 0.0 if self._last_t is None else max(0.0, t_s - self._last_t)
        self._last_t = t_s
        active = [self._index[name] for name in self.active_fingers]
        self.max_load_n = max(self.max_load_n, float(np.max(load_n[active])) if active else 0.0)
        elapsed = t_s - self._stage_start_s
        s = self.settings

        if self._stage is ScanStage.CONTACT:
            for i in active:
                log = self._logs[self.fingers[i].name]
                log.position.append(position_m[i])
                log.load.append(load_n[i])
            self._setpoints[:] = 0.0
            self._setpoints[active] = s.contact_force_n
            touching = all(load_n[i] >= s.contact_threshold_n for i in active)
            if touching or elapsed >= s.contact_timeout_s:
                for i in active:
                    log = self._logs[self.fingers[i].name]
                    log.contact_m = contact_height_m(
                        np.array(log.position), np.array(log.load), s.contact_threshold_n
                    )
                    log.position.clear()
                    log.load.clear()
                self._enter(ScanStage.STIFFNESS, t_s)
                self._cycle = 0
                self._rising = True
                self._cycle_force_n = s.preload_force_n
        elif self._stage is ScanStage.STIFFNESS:
            self._ramp(dt, active, position_m, load_n)
            if self._cycle >= s.cycles:
                self._enter(ScanStage.RELEASE, t_s)
        elif self._stage is ScanStage.RELEASE:
            self._setpoints[:] = 0.0
            if elapsed >= s.release_s:
                self._group_index += 1
                if self._group_index >= len(self._row_groups):
                    self._stage = ScanStage.DONE
                else:
                    self._enter(ScanStage.CONTACT, t_s)
        return self._setpoints.copy()

    def _enter(self, stage: ScanStage, t_s: float) -> None:
        self._stage = stage
        self._stage_start_s = t_s

    def _ramp(
        self, dt: float, active: list[int], position_m: np.ndarray, load_n: np.ndarray
    ) -> None:
        s = self.settings
        step = s.ramp_rate_n_per_s * dt
        if self._rising:
            self._cycle_force_n = min(s.band_max_force_n, self._cycle_force_n + step)
            for i in active:
                log = self._logs[self.fingers[i].name]
                log.position.append(position_m[i])
                log.load.append(load_n[i])
            if self._cycle_force_n >= s.band_max_force_n:
                for i in active:
                    log = self._logs[self.fingers[i].name]
                    log.cycles.append((np.array(log.position), np.array(log.load)))
                    log.position.clear()
                    log.load.clear()
                self._rising = False
        else:
            self._cycle_force_n = max(s.preload_force_n, self._cycle_force_n - step)
            if self._cycle_force_n <= s.preload_force_n:
                self._cycle += 1
                self._rising = True
        self._setpoints[:] = 0.0
        self._setpoints[active] = self._cycle_force_n

    # -- the result ----------------------------------------------------------------------------
    def result(self) -> SpineMapResult:
        """The map so far; incomplete (with the reason) if aborted or not finished."""
        s = self.settings
        fingers = []
        for finger in self.fingers:
            log = self._logs[finger.name]
            item = FingerResult(finger.name, finger.side, finger.row, finger.spine_offset_m)
            item.contact_height_m = log.contact_m
            if log.cycles:
                try:
                    estimate = estimate_stiffness(
                        log.cycles, s.band_min_force_n, s.band_max_force_n
                    )
                    item.stiffness_n_per_mm = estimate.stiffness_n_per_mm
                    item.uncertainty_n_per_mm = estimate.uncertainty_n_per_mm
                    item.cycles = estimate.cycles
                    # The threshold crossing lies threshold/k into the tissue: report where the
                    # unloaded surface is, which is what the back's profile means.
                    item.contact_height_m -= s.contact_threshold_n / (
                        estimate.stiffness_n_per_mm * 1000.0
                    )
                except ScanDataError as error:
                    item.error = str(error)
            elif not math.isfinite(log.contact_m) and finger.name in self._scanned():
                item.error = 'no contact with the back within the stroke'
            fingers.append(item)
        pitch = _row_pitch(self.fingers)
        complete = self.done and not self._aborted
        reason = self._aborted or ('' if self.done else 'scan not finished')
        failed = [item.name for item in fingers if item.error]
        if complete and failed:
            # A map with holes is not complete, whatever made them (no contact within the
            # stroke, a device that could not move): never a "complete" map of NaNs.
            complete = False
            shown = ', '.join(failed[:6]) + (', ...' if len(failed) > 6 else '')
            reason = f'no measurement on {len(failed)} of {len(fingers)} fingers ({shown})'
        return SpineMapResult(
            user_id=self.user_id,
            stamp=self.stamp,
            complete=complete,
            reason=reason,
            band_min_force_n=s.band_min_force_n,
            band_max_force_n=s.band_max_force_n,
            fingers=fingers,
            segments=segment_map(fingers, self.levels, max_distance_m=pitch),
        )

    def _scanned(self) -> set[str]:
        rows = {r for group in self._row_groups[: self._group_index + 1] for r in group}
        return {f.name for f in self.fingers if f.row in rows}


def _row_pitch(fingers: list[FingerGeometry]) -> float:
    offsets = sorted({round(f.spine_offset_m, 6) for f in fingers})
    if len(offsets) < 2:
        return 0.05
    return float(np.min(np.diff(offsets)))
