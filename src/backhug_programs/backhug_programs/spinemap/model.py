"""The spine map as data: one scan's per-finger and per-segment results, and JSON round trips."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from backhug_programs.spinemap.analysis import FingerResult, SegmentValue, stiffest_segments

SCHEMA_VERSION = 1


def _clean(value: Any) -> Any:
    """NaN/inf → None so the JSON is standard (json.dumps would write bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass
class SpineMapResult:
    """One scan of one user's back."""

    user_id: str
    stamp: str  # ISO 8601, UTC
    complete: bool
    reason: str
    band_min_force_n: float
    band_max_force_n: float
    fingers: list[FingerResult] = field(default_factory=list)
    segments: list[SegmentValue] = field(default_factory=list)

    def stiffest(self, count: int = 3) -> list[str]:
        """The stiffest measured levels, stiffest first."""
        return stiffest_segments(self.segments, count)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN written as null)."""
        data = asdict(self)
        data['schema_version'] = SCHEMA_VERSION
        data['stiffest'] = self.stiffest()
        for finger, raw in zip(self.fingers, data['fingers'], strict=True):
            raw['valid'] = finger.valid
        return _clean(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpineMapResult:
        """Rebuild from ``to_dict`` output; raises ValueError naming a missing or bad key."""
        try:
            fingers = [
                FingerResult(
                    name=f['name'],
                    side=f['side'],
                    row=int(f['row']),
                    spine_offset_m=_nan(f['spine_offset_m']),
                    contact_height_m=_nan(f['contact_height_m']),
                    stiffness_n_per_mm=_nan(f['stiffness_n_per_mm']),
                    uncertainty_n_per_mm=_nan(f['uncertainty_n_per_mm']),
                    cycles=int(f['cycles']),
                    error=f.get('error', ''),
                )
                for f in data['fingers']
            ]
            segments = [
                SegmentValue(
                    level=s['level'],
                    position_m=_nan(s['position_m']),
                    stiffness_left_n_per_mm=_nan(s['stiffness_left_n_per_mm']),
                    stiffness_right_n_per_mm=_nan(s['stiffness_right_n_per_mm']),
                    uncertainty_left_n_per_mm=_nan(s['uncertainty_left_n_per_mm']),
                    uncertainty_right_n_per_mm=_nan(s['uncertainty_right_n_per_mm']),
                )
                for s in data['segments']
            ]
            return cls(
                user_id=data['user_id'],
                stamp=data['stamp'],
                complete=bool(data['complete']),
                reason=data.get('reason', ''),
                band_min_force_n=float(data['band_min_force_n']),
                band_max_force_n=float(data['band_max_force_n']),
                fingers=fingers,
                segments=segments,
            )
        except KeyError as error:
            raise ValueError(f'spine map is missing the key {error}') from error
        except (TypeError, ValueError) as error:
            raise ValueError(f'spine map has a bad value: {error}') from error


def segment_changes(before: SpineMapResult, after: SpineMapResult) -> list[dict[str, Any]]:
    """Per level and side: stiffness before, after, and the change in N/mm and percent."""
    after_by_level = {s.level: s for s in after.segments}
    changes = []
    for segment in before.segments:
        later = after_by_level.get(segment.level)
        if later is None:
            continue
        for side, attr in (('l', 'stiffness_left_n_per_mm'), ('r', 'stiffness_right_n_per_mm')):
            b, a = getattr(segment, attr), getattr(later, attr)
            if not (math.isfinite(b) and math.isfinite(a)):
                continue
            changes.append(
                {
                    'level': segment.level,
                    'side': side,
                    'before_n_per_mm': b,
                    'after_n_per_mm': a,
                    'change_n_per_mm': a - b,
                    'change_percent': 100.0 * (a - b) / b,
                }
            )
    return changes
