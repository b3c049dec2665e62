"""From recorded finger samples to contact heights, stiffness and a per-segment map.

A finger's stiffness is the slope of load against displacement while its load ramps through the
scan band (e.g. 20 → 60 N): a physiotherapist's posterior–anterior (PA) stiffness, in N/mm, as
measured by instrumented PA devices (Latimer et al., Spine 1996; Snodgrass et al., J Manipulative
Physiol Ther 2006 review the method and its repeatability). Each loading cycle gives one slope;
the mean over cycles is the estimate and their standard deviation its uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


class ScanDataError(ValueError):
    """Samples that cannot give a measurement (too few, flat, NaN); the message says which."""


@dataclass
class StiffnessEstimate:
    """Stiffness of the tissue under one finger."""

    stiffness_n_per_mm: float
    uncertainty_n_per_mm: float
    cycles: int
    per_cycle_n_per_mm: list[float] = field(default_factory=list)


def cycle_slope_n_per_mm(
    position_m: np.ndarray, load_n: np.ndarray, band_min_n: float, band_max_n: float
) -> float:
    """Least-squares slope of load over position (N/mm) for the samples inside the load band.

    Only samples whose load lies in [band_min_n, band_max_n] count: below the band the contact is
    still forming (non-linear toe region), above it the ramp is over.
    """
    position_m = np.asarray(position_m, dtype=float)
    load_n = np.asarray(load_n, dtype=float)
    if position_m.shape != load_n.shape:
        raise ScanDataError(
            f'position and load differ in length: {position_m.size} vs {load_n.size}'
        )
    if not (np.all(np.isfinite(position_m)) and np.all(np.isfinite(load_n))):
        raise ScanDataError('samples contain NaN or inf')
    inside = (load_n >= band_min_n) & (load_n <= band_max_n)
    if np.count_nonzero(inside) < 5:
        raise ScanDataError(
            f'only {np.count_nonzero(inside)} samples between {band_min_n} and {band_max_n} N'
        )
    x_mm = position_m[inside] * 1000.0
    y_n = load_n[inside]
    if np.ptp(x_mm) < 1e-3:
        raise ScanDataError('the finger did not move while the load ramped (stalled or blocked)')
    slope, _intercept = np.polyfit(x_mm, y_n, 1)
    if slope <= 0.0:
        raise ScanDataError(f'load fell as the finger rose (slope {slope:.3f} N/mm)')
    return float(slope)


def estimate_stiffness(
    cycles: list[tuple[np.ndarray, np.ndarray]], band_min_n: float, band_max_n: float
) -> StiffnessEstimate:
    """Mean stiffness and its standard deviation over loading cycles of (position_m, load_n)."""
    slopes = []
    problems = []
    for index, (position_m, load_n) in enumerate(cycles):
        try:
            slopes.append(cycle_slope_n_per_mm(position_m, load_n, band_min_n, band_max_n))
        except ScanDataError as error:
            problems.append(f'cycle {index + 1}: {error}')
    if not slopes:
        raise ScanDataError('no usable loading cycle (' + '; '.join(problems) + ')')
    values = np.array(slopes)
    uncertainty = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return StiffnessEstimate(float(values.mean()), uncertainty, int(values.size), slopes)


def contact_height_m(position_m: np.ndarray, load_n: np.ndarray, threshold_n: float) -> float:
    """Finger position where the load first reached ``threshold_n``, interpolated; NaN if never."""
    position_m = np.asarray(position_m, dtype=float)
    load_n = np.asarray(load_n, dtype=float)
    above = np.flatnonzero(load_n >= threshold_n)
    if above.size == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(position_m[0])
    f0, f1 = load_n[i - 1], load_n[i]
    p0, p1 = position_m[i - 1], position_m[i]
    fraction = (threshold_n - f0) / (f1 - f0) if f1 != f0 else 1.0
    return float(p0 + fraction * (p1 - p0))


@dataclass
class SegmentValue:
    """Stiffness of one spinal level on both sides (NaN where no finger lies under it)."""

    level: str
    position_m: float
    stiffness_left_n_per_mm: float = math.nan
    stiffness_right_n_per_mm: float = math.nan
    uncertainty_left_n_per_mm: float = math.nan
    uncertainty_right_n_per_mm: float = math.nan

    @property
    def mean_n_per_mm(self) -> float:
        """Mean of the sides that were measured (NaN if neither)."""
        values = [
            v
            for v in (self.stiffness_left_n_per_mm, self.stiffness_right_n_per_mm)
            if math.isfinite(v)
        ]
        return float(np.mean(values)) if values else math.nan


@dataclass
class FingerResult:
    """What the scan found under one finger."""

    name: str
    side: str
    row: int
    spine_offset_m: float
    contact_height_m: float = math.nan
    stiffness_n_per_mm: float = math.nan
    uncertainty_n_per_mm: float = math.nan
    cycles: int = 0
    error: str = ''

    @property
    def valid(self) -> bool:
        """True when both the contact height and the stiffness were measured."""
        return math.isfinite(self.contact_height_m) and math.isfinite(self.stiffness_n_per_mm)


def segment_map(
    fingers: list[FingerResult], levels: list[tuple[str, float]], max_distance_m: float
) -> list[SegmentValue]:
    """Assign each finger to the nearest spinal level and average per level and side.

    ``levels`` are (name, position along the bed from row 1, m) from the spine model. A finger
    farther than ``max_distance_m`` from every level belongs to none; a level with no finger
    keeps NaN rather than borrowing a neighbour's value.
    """
    segments = [SegmentValue(name, position) for name, position in levels]
    if not segments:
        return []
    positions = np.array([position for _name, position in levels])
    grouped: dict[tuple[int, str], list[FingerResult]] = {}
    for finger in fingers:
        if not math.isfinite(finger.stiffness_n_per_mm):
            continue
        distance = np.abs(positions - finger.spine_offset_m)
        nearest = int(np.argmin(distance))
        if distance[nearest] <= max_distance_m:
            grouped.setdefault((nearest, finger.side), []).append(finger)
    for (index, side), members in grouped.items():
        stiffness = float(np.mean([f.stiffness_n_per_mm for f in members]))
        spreads = [f.uncertainty_n_per_mm for f in members if math.isfinite(f.uncertainty_n_per_mm)]
        spread = float(np.sqrt(np.mean(np.square(spreads)))) if spreads else math.nan
        if side == 'l':
            segments[index].stiffness_left_n_per_mm = stiffness
            segments[index].uncertainty_left_n_per_mm = spread
        else:
            segments[index].stiffness_right_n_per_mm = stiffness
            segments[index].uncertainty_right_n_per_mm = spread
    return segments


def stiffest_segments(segments: list[SegmentValue], count: int = 3) -> list[str]:
    """Names of the ``count`` stiffest measured levels, stiffest first."""
    measured = [s for s in segments if math.isfinite(s.mean_n_per_mm)]
    measured.sort(key=lambda s: s.mean_n_per_mm, reverse=True)
    return [s.level for s in measured[:count]]
