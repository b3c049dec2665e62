"""The simulated user: body mass, back profile and per-finger tissue properties (pure, no MuJoCo).

A ``SimulatedUser`` is read from a YAML file (``config/sim_users/<name>.yaml`` or any path) and
validated field by field: a bad value raises ``SimulatedUserError`` naming the file and the field.
Everything here is a function of a position along the spine (metres from finger row 1, the
``spine_offset_m`` of ``backhug_description.JointInfo``), so one user fits any finger layout.

The de-stiffening law (``destiffened_stiffness``) also lives here so tests and the scan helper can
compute the modelled value without a simulation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

STANDARD_GRAVITY_M_S2 = 9.80665
PACKAGE = 'backhug_hw_interface'


class SimulatedUserError(ValueError):
    """A simulated-user file or value is invalid (the message names the file and the field)."""


@dataclasses.dataclass(frozen=True)
class StiffSegment:
    """A segment of the back stiffer (factor > 1) or softer (factor < 1) than the profile."""

    name: str
    offset_m: float
    half_width_m: float
    factor: float
    sides: tuple[str, ...] = ('l', 'r')


@dataclasses.dataclass(frozen=True)
class Destiffening:
    """Stiffness falls with the mobilisation work a finger puts into its tissue, to a floor.

    k(W) = k0 * (floor + (1 - floor) * exp(-W / work_scale_j)), W = accumulated increases of the
    tissue's elastic energy (J), i.e. the work of every loading stroke.
    """

    enabled: bool = False
    floor_fraction: float = 0.7
    work_scale_j: float = 30.0


@dataclasses.dataclass(frozen=True)
class SimulatedUser:
    """A user lying on the device; see config/sim_users/default.yaml for every field's meaning."""

    name: str
    body_mass_kg: float
    height_m: float
    trunk_mass_fraction: float
    trunk_com_offset_m: float
    trunk_length_m: float
    curve_offsets_m: tuple[float, ...]
    curve_heights_m: tuple[float, ...]
    stiffness_offsets_m: tuple[float, ...]
    stiffness_n_per_mm: tuple[float, ...]
    damping_n_s_per_mm: float
    tissue_mass_kg: float
    stiff_segments: tuple[StiffSegment, ...] = ()
    destiffening: Destiffening = Destiffening()
    load_noise_n: float = 0.0
    seed: int = 0
    source: str = '<mapping>'

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, name_or_path: str | Path) -> SimulatedUser:
        """Load a user by name (config/sim_users/<name>.yaml) or from a YAML file path."""
        path = resolve_user_path(name_or_path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SimulatedUserError(f'{path}: cannot read simulated user: {exc}') from exc
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: Any, where: str = '<mapping>') -> SimulatedUser:
        """Build and validate a user from the parsed YAML mapping."""
        reader = _Reader(data, where)
        body = reader.section('body')
        curve = reader.section('spine_curve')
        tissue = reader.section('tissue')
        profile = reader.section('stiffness_profile', tissue, 'tissue.')
        destiff = reader.section('destiffening', required=False)
        curve_offsets = reader.floats('spine_curve.offsets_m', curve.get('offsets_m'))
        curve_heights_mm = reader.floats('spine_curve.heights_mm', curve.get('heights_mm'))
        stiff_offsets = reader.floats(
            'tissue.stiffness_profile.offsets_m', profile.get('offsets_m')
        )
        stiffness = reader.floats('tissue.stiffness_profile.n_per_mm', profile.get('n_per_mm'))
        reader.same_length('spine_curve', curve_offsets, curve_heights_mm)
        reader.same_length('tissue.stiffness_profile', stiff_offsets, stiffness)
        reader.increasing('spine_curve.offsets_m', curve_offsets)
        reader.increasing('tissue.stiffness_profile.offsets_m', stiff_offsets)
        if min(curve_heights_mm) != 0.0 or any(h < 0 for h in curve_heights_mm):
            raise SimulatedUserError(
                f'{where}: spine_curve.heights_mm must be >= 0 with a minimum of exactly 0 (where '
                f'the back rests on the pad), got {curve_heights_mm}'
            )
        for index, value in enumerate(stiffness):
            reader.check_range(f'tissue.stiffness_profile.n_per_mm[{index}]', value, 0.5, 200.0)
        segments = []
        for index, raw in enumerate(tissue.get('stiff_segments') or []):
            field = f'tissue.stiff_segments[{index}]'
            if not isinstance(raw, dict):
                raise SimulatedUserError(f'{where}: {field} must be a mapping, got {raw!r}')
            sides = tuple(raw.get('sides', ['l', 'r']))
            if not sides or any(side not in ('l', 'r') for side in sides):
                raise SimulatedUserError(f'{where}: {field}.sides must list l and/or r: {sides}')
            segments.append(
                StiffSegment(
                    name=str(raw.get('name', f'segment {index}')),
                    offset_m=reader.number(f'{field}.offset_m', raw.get('offset_m')),
                    half_width_m=reader.number(
                        f'{field}.half_width_m', raw.get('half_width_m'), 0.0, 0.5
                    ),
                    factor=reader.number(f'{field}.factor', raw.get('factor'), 0.1, 10.0),
                    sides=sides,
                )
            )
        destiffening = Destiffening(
            enabled=bool(destiff.get('enabled', False)),
            floor_fraction=reader.number(
                'destiffening.floor_fraction', destiff.get('floor_fraction', 0.7), 0.05, 1.0
            ),
            work_scale_j=reader.number(
                'destiffening.work_scale_j', destiff.get('work_scale_j', 30.0), 1e-6, 1e9
            ),
        )
        seed = data.get('seed', 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise SimulatedUserError(f'{where}: seed must be an integer >= 0, got {seed!r}')
        return cls(
            name=str(data.get('name', Path(where).stem)),
            body_mass_kg=reader.number('body.mass_kg', body.get('mass_kg'), 30.0, 200.0),
            height_m=reader.number('body.height_m', body.get('height_m'), 1.2, 2.2),
            trunk_mass_fraction=reader.number(
                'body.trunk_mass_fraction', body.get('trunk_mass_fraction'), 0.3, 0.6
            ),
            trunk_com_offset_m=reader.number(
                'body.trunk_com_offset_m', body.get('trunk_com_offset_m'), 0.0, 1.0
            ),
            trunk_length_m=reader.number(
                'body.trunk_length_m', body.get('trunk_length_m'), 0.3, 1.0
            ),
            curve_offsets_m=tuple(curve_offsets),
            curve_heights_m=tuple(h / 1000.0 for h in curve_heights_mm),
            stiffness_offsets_m=tuple(stiff_offsets),
            stiffness_n_per_mm=tuple(stiffness),
            damping_n_s_per_mm=reader.number(
                'tissue.damping_n_s_per_mm', tissue.get('damping_n_s_per_mm'), 0.0, 10.0
            ),
            tissue_mass_kg=reader.number(
                'tissue.local_mass_kg', tissue.get('local_mass_kg'), 0.01, 2.0
            ),
            stiff_segments=tuple(segments),
            destiffening=destiffening,
            load_noise_n=reader.number(
                'tissue.load_noise_n', tissue.get('load_noise_n', 0.0), 0.0, 10.0
            ),
            seed=seed,
            source=where,
        )

    # -- derived values ----------------------------------------------------------------------

    @property
    def trunk_mass_kg(self) -> float:
        """Mass the bed carries under the back (trunk segment), kg."""
        return self.body_mass_kg * self.trunk_mass_fraction

    @property
    def trunk_weight_n(self) -> float:
        """Weight of the trunk, N."""
        return self.trunk_mass_kg * STANDARD_GRAVITY_M_S2

    def back_height_m(self, offset_m: np.ndarray | float) -> np.ndarray:
        """Height of the relaxed back surface above the pad top at spine offsets (piecewise linear).

        Outside the listed offsets the end values hold.
        """
        return np.interp(offset_m, self.curve_offsets_m, self.curve_heights_m)

    def stiffness_at(self, offset_m: np.ndarray | float, side: np.ndarray | str) -> np.ndarray:
        """Initial tissue stiffness (N/mm) under a finger at a spine offset on one side."""
        offsets = np.atleast_1d(np.asarray(offset_m, dtype=float))
        sides = np.broadcast_to(np.asarray(side), offsets.shape)
        stiffness = np.interp(offsets, self.stiffness_offsets_m, self.stiffness_n_per_mm)
        for segment in self.stiff_segments:
            inside = np.abs(offsets - segment.offset_m) <= segment.half_width_m + 1e-9
            inside &= np.isin(sides, segment.sides)
            stiffness = np.where(inside, stiffness * segment.factor, stiffness)
        return stiffness


def destiffened_stiffness(
    initial_n_per_mm: np.ndarray | float, work_j: np.ndarray | float, law: Destiffening
) -> np.ndarray:
    """Stiffness after ``work_j`` of mobilisation under the de-stiffening law (unchanged if off)."""
    initial = np.asarray(initial_n_per_mm, dtype=float)
    if not law.enabled:
        return initial.copy()
    decay = np.exp(-np.maximum(np.asarray(work_j, dtype=float), 0.0) / law.work_scale_j)
    return initial * (law.floor_fraction + (1.0 - law.floor_fraction) * decay)


def user_directories() -> list[Path]:
    """Where named users are looked up: the installed share folder, then the source tree."""
    folders = []
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        with contextlib.suppress(PackageNotFoundError):
            folders.append(Path(get_package_share_directory(PACKAGE)) / 'config' / 'sim_users')
    except ImportError:
        pass
    folders.append(Path(__file__).resolve().parents[2] / 'config' / 'sim_users')
    return folders


def resolve_user_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the file of a named user."""
    text = str(name_or_path)
    if text.endswith(('.yaml', '.yml')) or '/' in text:
        path = Path(text)
        if not path.is_file():
            raise SimulatedUserError(f'simulated user file {path} does not exist')
        return path
    for folder in user_directories():
        candidate = folder / f'{text}.yaml'
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for f in user_directories() if f.is_dir() for p in f.glob('*.yaml')})
    raise SimulatedUserError(f'unknown simulated user {text!r}; known users: {known}')


class _Reader:
    """Field-by-field validation with messages naming the file and the field."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise SimulatedUserError(f'{where}: a simulated user must be a mapping, got {data!r}')
        self.data = data
        self.where = where

    def section(
        self, key: str, parent: dict | None = None, prefix: str = '', required: bool = True
    ) -> dict:
        value = (self.data if parent is None else parent).get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise SimulatedUserError(
                f'{self.where}: {prefix}{key} must be a mapping, got {value!r}'
            )
        return value

    def number(
        self, field: str, value: Any, low: float = -math.inf, high: float = math.inf
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SimulatedUserError(f'{self.where}: {field} must be a number, got {value!r}')
        return self.check_range(field, float(value), low, high)

    def check_range(self, field: str, value: float, low: float, high: float) -> float:
        if not math.isfinite(value) or not low <= value <= high:
            raise SimulatedUserError(
                f'{self.where}: {field} must be finite and in [{low}, {high}], got {value!r}'
            )
        return value

    def floats(self, field: str, values: Any) -> list[float]:
        if not isinstance(values, list) or len(values) < 2:
            raise SimulatedUserError(f'{self.where}: {field} must be a list of >= 2 numbers')
        return [self.number(f'{field}[{i}]', v) for i, v in enumerate(values)]

    def same_length(self, field: str, first: list[float], second: list[float]) -> None:
        if len(first) != len(second):
            raise SimulatedUserError(
                f'{self.where}: {field}: offsets and values differ in length '
                f'({len(first)} != {len(second)})'
            )

    def increasing(self, field: str, values: list[float]) -> None:
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise SimulatedUserError(f'{self.where}: {field} must increase strictly: {values}')
