"""Device geometry and limits: load config/device.yaml, apply overrides, validate.

The YAML has three sections (layout, finger, bed); every value is addressed by a flat key that is
unique across sections (``rows``, ``row_pitch_m``, ``length_m``...), which is also the name of the
matching keyword override of :func:`load_config` and, for the layout keys, of the xacro argument.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from backhug_description.errors import DescriptionError
from backhug_description.paths import share_directory

# Hard ceiling of the finger effort limit: design.md §1 (default hard ceiling per finger 180 N,
# below the ~200 N quasi-static contact limits of ISO/TS 15066 / Behrens et al. 2022).
EFFORT_CEILING_N = 180.0

# Sides in the canonical order (docs/architecture.md): the user's left column, then the right.
SIDES = ('l', 'r')

_SECTIONS: dict[str, tuple[str, ...]] = {
    'layout': ('columns', 'rows', 'row_pitch_m', 'lateral_offset_m', 'first_row_x_m'),
    'finger': (
        'stroke_m',
        'mechanical_stroke_m',
        'effort_limit_n',
        'velocity_limit_m_s',
        'tip_radius_m',
        'shaft_radius_m',
        'shaft_length_m',
        'shaft_mass_kg',
        'tip_mass_kg',
        'tip_recess_m',
    ),
    'bed': (
        'length_m',
        'width_m',
        'frame_height_m',
        'pad_thickness_m',
        'frame_mass_kg',
        'pad_mass_kg',
    ),
}
_INTEGER_KEYS = frozenset({'columns', 'rows'})
# Keys that may be zero; every other number must be strictly positive.
_NON_NEGATIVE_KEYS = frozenset({'tip_recess_m'})


def default_config_path() -> Path:
    """Path of the default device config, config/device.yaml of this package."""
    return share_directory() / 'config' / 'device.yaml'


@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    """Validated device geometry and limits (SI units; see config/device.yaml for sources)."""

    columns: int
    rows: int
    row_pitch_m: float
    lateral_offset_m: float
    first_row_x_m: float
    stroke_m: float
    mechanical_stroke_m: float
    effort_limit_n: float
    velocity_limit_m_s: float
    tip_radius_m: float
    shaft_radius_m: float
    shaft_length_m: float
    shaft_mass_kg: float
    tip_mass_kg: float
    tip_recess_m: float
    length_m: float
    width_m: float
    frame_height_m: float
    pad_thickness_m: float
    frame_mass_kg: float
    pad_mass_kg: float
    source: str = ''

    @property
    def finger_count(self) -> int:
        """Number of fingers (columns x rows)."""
        return self.columns * self.rows

    @property
    def pad_top_z_m(self) -> float:
        """Height of the pad's upper surface (where the user's back rests) above base_link."""
        return self.frame_height_m + self.pad_thickness_m

    @property
    def finger_joint_z_m(self) -> float:
        """Height of each finger joint's origin above base_link (tip top at pad top - recess)."""
        return self.pad_top_z_m - self.tip_recess_m - self.shaft_length_m - self.tip_radius_m

    def row_name(self, row: int) -> str:
        """Row label: two digits, three if there are more than 99 rows (docs/architecture.md)."""
        return f'{row:0{max(2, len(str(self.rows)))}d}'

    def joint_name(self, side: str, row: int) -> str:
        """Name of the prismatic joint of one finger, e.g. finger_l_01_joint."""
        return f'finger_{side}_{self.row_name(row)}_joint'

    def joint_names(self) -> list[str]:
        """All finger joint names in the canonical order: left rows head→tail, then right."""
        return [self.joint_name(side, row) for side in SIDES for row in range(1, self.rows + 1)]

    def as_sections(self) -> dict[str, dict[str, Any]]:
        """The config as the nested mapping of device.yaml."""
        return {
            section: {key: getattr(self, key) for key in keys}
            for section, keys in _SECTIONS.items()
        }


def _flat_keys() -> tuple[str, ...]:
    return tuple(key for keys in _SECTIONS.values() for key in keys)


def _number(key: str, value: Any, where: str) -> float | int:
    """Check one value's type and sign; return it as int or float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DescriptionError(f'{where}: {key} must be a number, got {value!r}')
    if not math.isfinite(value):
        raise DescriptionError(f'{where}: {key} must be finite, got {value!r}')
    if key in _INTEGER_KEYS:
        if value != int(value):
            raise DescriptionError(f'{where}: {key} must be an integer, got {value!r}')
        value = int(value)
    else:
        value = float(value)
    if key in _NON_NEGATIVE_KEYS:
        if value < 0:
            raise DescriptionError(f'{where}: {key} must be >= 0, got {value!r}')
    elif value <= 0:
        raise DescriptionError(f'{where}: {key} must be > 0, got {value!r}')
    return value


def _check_consistency(values: dict[str, Any], where: str) -> None:
    """Cross-field rules: the device must be buildable and safe."""
    v = values
    if v['columns'] != 2:
        raise DescriptionError(
            f'{where}: columns must be 2 (one column each side of the spine, sides l and r), '
            f'got {v["columns"]!r}'
        )
    if v['stroke_m'] > v['mechanical_stroke_m']:
        raise DescriptionError(
            f'{where}: stroke_m={v["stroke_m"]!r} exceeds the mechanical limit '
            f'mechanical_stroke_m={v["mechanical_stroke_m"]!r}'
        )
    if v['effort_limit_n'] > EFFORT_CEILING_N:
        raise DescriptionError(
            f'{where}: effort_limit_n={v["effort_limit_n"]!r} exceeds the hard ceiling of '
            f'{EFFORT_CEILING_N} N per finger'
        )
    if v['shaft_radius_m'] > v['tip_radius_m']:
        raise DescriptionError(
            f'{where}: shaft_radius_m={v["shaft_radius_m"]!r} is larger than the rounded tip, '
            f'tip_radius_m={v["tip_radius_m"]!r}'
        )
    if v['lateral_offset_m'] <= v['tip_radius_m']:
        raise DescriptionError(
            f'{where}: lateral_offset_m={v["lateral_offset_m"]!r} must exceed tip_radius_m='
            f'{v["tip_radius_m"]!r}, or the two columns collide'
        )
    if v['row_pitch_m'] <= 2 * v['tip_radius_m']:
        raise DescriptionError(
            f'{where}: row_pitch_m={v["row_pitch_m"]!r} must exceed the tip diameter '
            f'{2 * v["tip_radius_m"]!r}, or neighbouring rows collide'
        )
    last_row_x = v['first_row_x_m'] + (v['rows'] - 1) * v['row_pitch_m'] + v['tip_radius_m']
    if v['first_row_x_m'] < v['tip_radius_m'] or last_row_x > v['length_m']:
        raise DescriptionError(
            f'{where}: rows={v["rows"]!r} x row_pitch_m={v["row_pitch_m"]!r} from first_row_x_m='
            f'{v["first_row_x_m"]!r} does not fit on the bed (length_m={v["length_m"]!r})'
        )
    if v['lateral_offset_m'] + v['tip_radius_m'] > v['width_m'] / 2:
        raise DescriptionError(
            f'{where}: lateral_offset_m={v["lateral_offset_m"]!r} puts the columns outside the '
            f'bed (width_m={v["width_m"]!r})'
        )
    joint_z = (
        v['frame_height_m']
        + v['pad_thickness_m']
        - v['tip_recess_m']
        - v['shaft_length_m']
        - v['tip_radius_m']
    )
    if joint_z < 0:
        raise DescriptionError(
            f'{where}: shaft_length_m={v["shaft_length_m"]!r} is too long for the bed height '
            f'(frame_height_m + pad_thickness_m = {v["frame_height_m"] + v["pad_thickness_m"]!r})'
        )
    if v['tip_recess_m'] >= v['stroke_m']:
        raise DescriptionError(
            f'{where}: tip_recess_m={v["tip_recess_m"]!r} must be smaller than stroke_m='
            f'{v["stroke_m"]!r}, or the finger never reaches the user'
        )


def config_from_mapping(data: Any, where: str = '<mapping>', **overrides: Any) -> DeviceConfig:
    """Build and validate a DeviceConfig from the nested device.yaml mapping plus overrides."""
    if not isinstance(data, dict):
        raise DescriptionError(f'{where}: expected a mapping with sections {list(_SECTIONS)}')
    unknown_sections = sorted(set(data) - set(_SECTIONS))
    if unknown_sections:
        raise DescriptionError(f'{where}: unknown section(s) {unknown_sections}')
    values: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        body = data.get(section)
        if not isinstance(body, dict):
            raise DescriptionError(f'{where}: section {section!r} missing or not a mapping')
        unknown = sorted(set(body) - set(keys))
        if unknown:
            raise DescriptionError(f'{where}: unknown key(s) {unknown} in section {section!r}')
        for key in keys:
            if key not in body:
                raise DescriptionError(f'{where}: key {section}.{key} is missing')
            values[key] = body[key]
    bad = sorted(set(overrides) - set(_flat_keys()))
    if bad:
        raise DescriptionError(f'unknown override(s) {bad}; known keys: {list(_flat_keys())}')
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    checked = {key: _number(key, value, where) for key, value in values.items()}
    _check_consistency(checked, where)
    return DeviceConfig(**checked, source=where)


def load_config(path: str | Path | None = None, **overrides: Any) -> DeviceConfig:
    """Load and validate a device config (default: config/device.yaml), applying overrides.

    Overrides use the flat keys, e.g. ``load_config(rows=8, row_pitch_m=0.04)``; None is ignored.
    Raises DescriptionError naming the key and the value of anything invalid.
    """
    config_path = Path(path) if path is not None else default_config_path()
    try:
        text = config_path.read_text(encoding='utf-8')
    except OSError as exc:
        raise DescriptionError(f'cannot read device config {config_path}: {exc}') from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DescriptionError(f'{config_path}: invalid YAML: {exc}') from exc
    return config_from_mapping(data, str(config_path), **overrides)
