"""Stiffness, contact and segment mapping from scan samples (pure logic)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from backhug_programs.spinemap.analysis import (
    FingerResult,
    ScanDataError,
    contact_height_m,
    cycle_slope_n_per_mm,
    estimate_stiffness,
    segment_map,
    stiffest_segments,
)


def ramp(k_n_per_mm: float, contact_m: float, noise_n: float = 0.0, seed: int = 0):
    """Load/position samples of a linear tissue ramped from 0 to 70 N."""
    rng = np.random.default_rng(seed)
    load = np.linspace(0.0, 70.0, 200)
    position = contact_m + load / (k_n_per_mm * 1000.0)
    return position, load + rng.normal(0.0, noise_n, load.size)


def test_slope_recovers_linear_stiffness():
    position, load = ramp(4.0, 0.012)
    assert cycle_slope_n_per_mm(position, load, 20.0, 60.0) == pytest.approx(4.0, rel=1e-6)


def test_slope_ignores_samples_outside_the_band():
    position, load = ramp(4.0, 0.012)
    # Samples below and above the band (toe region, overshoot) at a different slope must not
    # bias the estimate.
    outside = (load < 20.0) | (load > 60.0)
    position = np.where(outside, position * 3.0, position)
    assert cycle_slope_n_per_mm(position, load, 20.0, 60.0) == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize(
    ('position', 'load', 'message'),
    [
        (np.zeros(50), np.linspace(20, 60, 50), 'did not move'),
        (np.linspace(0, 0.01, 50), np.full(50, 5.0), 'only 0 samples'),
        (np.linspace(0, 0.01, 50), np.full(50, np.nan), 'NaN'),
        (np.linspace(0, 0.01, 50), np.linspace(60, 20, 50), 'load fell'),
        (np.linspace(0, 0.01, 49), np.linspace(20, 60, 50), 'differ in length'),
    ],
)
def test_slope_rejects_unusable_samples(position, load, message):
    with pytest.raises(ScanDataError, match=message):
        cycle_slope_n_per_mm(position, load, 20.0, 60.0)


def test_estimate_over_cycles_gives_mean_and_spread():
    cycles = [ramp(5.0, 0.01, noise_n=0.5, seed=s) for s in range(4)]
    estimate = estimate_stiffness(cycles, 20.0, 60.0)
    assert estimate.cycles == 4
    assert estimate.stiffness_n_per_mm == pytest.approx(5.0, rel=0.02)
    assert 0.0 < estimate.uncertainty_n_per_mm < 0.2


def test_estimate_skips_a_bad_cycle_and_fails_when_none_is_usable():
    good = ramp(3.0, 0.01)
    bad = (np.zeros(50), np.linspace(20, 60, 50))
    assert estimate_stiffness([good, bad], 20, 60).cycles == 1
    with pytest.raises(ScanDataError, match='cycle 1: the finger did not move'):
        estimate_stiffness([bad], 20, 60)


def test_contact_height_interpolates_the_threshold_crossing():
    position = np.linspace(0.0, 0.02, 21)
    load = np.clip((position - 0.0105) * 4000.0, 0.0, None)
    assert contact_height_m(position, load, 2.0) == pytest.approx(0.0105 + 2.0 / 4000.0, abs=1e-6)
    assert math.isnan(contact_height_m(position, np.zeros(21), 2.0))


def test_segment_map_averages_per_level_and_side_and_leaves_gaps_empty():
    fingers = [
        FingerResult('finger_l_01_joint', 'l', 1, 0.000, 0.01, 4.0, 0.1, 3),
        FingerResult('finger_r_01_joint', 'r', 1, 0.000, 0.01, 6.0, 0.2, 3),
        FingerResult('finger_l_02_joint', 'l', 2, 0.035, 0.01, 8.0, 0.1, 3),
        FingerResult('finger_r_02_joint', 'r', 2, 0.035, 0.01, math.nan, math.nan, 0),
    ]
    levels = [('T1', 0.002), ('T2', 0.030), ('T3', 0.200)]
    segments = segment_map(fingers, levels, max_distance_m=0.02)
    assert [s.level for s in segments] == ['T1', 'T2', 'T3']
    assert segments[0].stiffness_left_n_per_mm == 4.0
    assert segments[0].stiffness_right_n_per_mm == 6.0
    assert segments[1].stiffness_left_n_per_mm == 8.0
    assert math.isnan(segments[1].stiffness_right_n_per_mm)
    assert math.isnan(segments[2].mean_n_per_mm)
    assert stiffest_segments(segments) == ['T2', 'T1']
