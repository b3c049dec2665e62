"""Where the user's vertebrae lie over the finger rows, from their height (or a measured C7).

Positions are distances along the bed from finger row 1 towards the feet, in metres — the frame of
``JointInfo.spine_offset_m`` and ``UserProfile.c7_position_m`` (docs/architecture.md). The model
is anthropometric and deliberately simple; a spine scan or a measured C7 refines it.

1. Spacing of the levels. Typical centre-to-centre distances of adjacent spinous processes for a
   reference adult of 1.75 m stature, ``_PITCH_MM`` below: thoracic pitch growing from ~20 to
   ~28 mm and lumbar ~36–40 mm (design.md §1: ~25 mm thoracic, ~35–40 mm lumbar), following the
   cranio-caudal growth of vertebral body plus disc height reported by Busscher et al.,
   "Comparative anatomical dimensions of the complete human and porcine spine", Eur Spine J 2010.
   Their sum, C7 to S1, is 0.507 m = 0.29 × stature. (design.md suggests "thoracic + lumbar ≈ 45 %
   of standing height" and asks for a check: from C7 to the sacrum that would be 0.79 m for a
   1.75 m adult, longer than the whole back; 0.29 agrees with cervicale height ≈ 0.864 × stature
   and the iliac crest / L4 level ≈ 0.59 × stature in ANSUR II (Gordon et al. 2014).)
   Every pitch scales with stature (isometric scaling: a first-order model, individual variation
   of trunk proportion is ±5 % or so — a measured C7 or a scan does better).
2. Where C7 lies when unmeasured. The vertex-to-cervicale distance is (1 − 0.864) × stature
   (ANSUR II: cervicale height / stature ≈ 0.864 for both sexes); the user's head rests against the
   head end of the bed and row 1 lies ``first_row_x_m`` from it (backhug_description
   config/device.yaml), so C7 lies at 0.136 × stature − first_row_x_m from row 1.

A level is within reach when it lies within half a row pitch of a finger row; levels beyond are
reported in ``out_of_reach``, never silently moved onto the nearest row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from backhug_programs.schema import LEVELS

REFERENCE_HEIGHT_M = 1.75
# ANSUR II (Gordon et al. 2014): cervicale height ≈ 0.864 × stature.
VERTEX_TO_C7_FRACTION = 1.0 - 0.864
MIN_HEIGHT_M = 1.2  # the range of UserProfile.height_m
MAX_HEIGHT_M = 2.2

# Spinous-process spacing for a 1.75 m adult, mm: C7→T1, T1→T2, …, L4→L5, L5→S1 (see above).
_PITCH_MM: tuple[float, ...] = (
    20.0,  # C7-T1
    21.0,
    22.0,
    22.0,
    23.0,
    23.0,
    24.0,
    24.0,
    25.0,
    26.0,
    27.0,
    28.0,  # T11-T12
    31.0,  # T12-L1
    36.0,
    38.0,
    39.0,
    40.0,  # L4-L5
    38.0,  # L5-S1
)
assert len(_PITCH_MM) == len(LEVELS)


@lru_cache(maxsize=1)
def default_description() -> Any:
    """The default device description (simulated hardware; finger geometry is the same for all)."""
    from backhug_description import load_description

    return load_description('sim')


@dataclass(frozen=True)
class SpineModel:
    """Vertebra positions of one user over the rows of one device."""

    height_m: float
    c7_position_m: float
    c7_estimated: bool
    positions_m: dict[str, float]  # every level C7..L5, plus S1 (end of L5's extent)
    row_positions_m: dict[int, float]  # finger row → distance from row 1
    row_pitch_m: float

    @classmethod
    def from_profile(
        cls,
        height_m: float,
        c7_position_m: float | None = None,
        description: Any = None,
    ) -> SpineModel:
        """Model the spine of a user of ``height_m`` (m); ``c7_position_m`` None/NaN = estimate."""
        if isinstance(height_m, bool) or not isinstance(height_m, int | float):
            raise ValueError(f'height_m must be a number, got {height_m!r}')
        if not (math.isfinite(height_m) and MIN_HEIGHT_M <= height_m <= MAX_HEIGHT_M):
            raise ValueError(
                f'height_m must be {MIN_HEIGHT_M}–{MAX_HEIGHT_M} m, got {height_m!r} m'
            )
        description = description or default_description()
        config = description.config
        rows = {joint.row: joint.spine_offset_m for joint in description.joints}
        estimated = c7_position_m is None or (
            isinstance(c7_position_m, int | float) and math.isnan(c7_position_m)
        )
        if estimated:
            c7 = VERTEX_TO_C7_FRACTION * height_m - config.first_row_x_m
        else:
            c7 = float(c7_position_m)
            # C7 must lie on the bed: between its head end and the last row.
            lo, hi = -config.first_row_x_m, max(rows.values())
            if not (math.isfinite(c7) and lo <= c7 <= hi):
                raise ValueError(
                    f'c7_position_m must be {lo:g}–{hi:g} m from row 1 (on the bed), got '
                    f'{c7_position_m!r}'
                )
        scale = height_m / REFERENCE_HEIGHT_M
        positions = {LEVELS[0]: c7}
        position = c7
        for level, pitch_mm in zip((*LEVELS[1:], 'S1'), _PITCH_MM, strict=True):
            position += pitch_mm * 1e-3 * scale
            positions[level] = position
        return cls(height_m, c7, estimated, positions, rows, config.row_pitch_m)

    # -- levels ---------------------------------------------------------------------------------
    @property
    def reach_m(self) -> tuple[float, float]:
        """Positions the fingers reach: from half a pitch before row 1 to half after the last."""
        half = self.row_pitch_m / 2.0
        return min(self.row_positions_m.values()) - half, max(self.row_positions_m.values()) + half

    def position_of(self, level: str) -> float:
        """Distance of a level's spinous process from row 1, m."""
        return self.positions_m[level]

    def levels(self) -> list[tuple[str, float]]:
        """Every level C7..L5 with its position, head to tail (reachable or not)."""
        return [(level, self.positions_m[level]) for level in LEVELS]

    def in_reach(self, level: str) -> bool:
        lo, hi = self.reach_m
        return lo <= self.positions_m[level] <= hi

    @property
    def out_of_reach(self) -> list[str]:
        """Levels no finger reaches for this user, head to tail."""
        return [level for level in LEVELS if not self.in_reach(level)]

    def extent_m(self, level: str) -> tuple[float, float]:
        """The stretch of back belonging to a level: midway to the neighbours on either side."""
        names = (*LEVELS, 'S1')
        i = names.index(level)
        here = self.positions_m[level]
        after = self.positions_m[names[i + 1]]
        before = self.positions_m[names[i - 1]] if i > 0 else here - (after - here)
        return (before + here) / 2.0, (here + after) / 2.0

    def rows_for_levels(self, first: str, last: str) -> list[int]:
        """Rows under the levels first..last (inclusive, head to tail), ascending."""
        lo = self.extent_m(first)[0]
        hi = self.extent_m(last)[1]
        return sorted(row for row, x in self.row_positions_m.items() if lo <= x < hi)

    def level_of_row(self, row: int) -> str:
        """The level over a finger row, or 'above C7' / 'below L5' (sacrum) off the spine."""
        x = self.row_positions_m[row]
        if x < self.extent_m(LEVELS[0])[0]:
            return 'above C7'
        if x >= self.extent_m(LEVELS[-1])[1]:
            return 'below L5'
        return min(LEVELS, key=lambda level: abs(self.positions_m[level] - x))


def model_for_profile(profile: Any, description: Any = None, default_height_m: float = 1.75):
    """SpineModel of a UserProfile-like object (height_m 0 = ``default_height_m``)."""
    height = float(profile.height_m) if profile.height_m else default_height_m
    c7 = getattr(profile, 'c7_position_m', None)
    return SpineModel.from_profile(height, c7, description)


def levels_for_user(
    profile: Any, description: Any = None, default_height_m: float = 1.75
) -> list[tuple[str, float]]:
    """(level, position from row 1 in m) for every level C7..L5: the ScanSpineServer callback.

    Raises ValueError for an invalid height or C7 (the scan then ends before anything moves).
    """
    return model_for_profile(profile, description, default_height_m).levels()
