"""Simulated-user files: loading, validation messages, stiffness profile and de-stiffening law."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from backhug_hw_interface.sim import Destiffening, SimulatedUser, SimulatedUserError
from backhug_hw_interface.sim.user import destiffened_stiffness, user_directories

SOURCE_USERS = Path(__file__).resolve().parents[1] / 'config' / 'sim_users'


def _default_mapping() -> dict:
    return yaml.safe_load((SOURCE_USERS / 'default.yaml').read_text())


@pytest.mark.parametrize('path', sorted(SOURCE_USERS.glob('*.yaml')), ids=lambda p: p.stem)
def test_every_shipped_user_loads_by_name(path: Path) -> None:
    user = SimulatedUser.load(path.stem)
    assert user.name == path.stem
    # de Leva 1996 trunk fraction of a 75 kg adult: ~32.6 kg.
    assert 25.0 < user.trunk_mass_kg < 40.0
    assert min(user.curve_heights_m) == 0.0


def test_named_users_are_found_in_the_source_or_install_tree() -> None:
    assert any((folder / 'default.yaml').is_file() for folder in user_directories())


def test_unknown_user_lists_the_known_ones() -> None:
    with pytest.raises(SimulatedUserError, match=r"unknown simulated user 'nobody'.*default"):
        SimulatedUser.load('nobody')


@pytest.mark.parametrize(
    ('edit', 'field'),
    [
        (lambda m: m['body'].update(mass_kg='heavy'), 'body.mass_kg'),
        (lambda m: m['body'].update(mass_kg=float('nan')), 'body.mass_kg'),
        (lambda m: m['body'].pop('trunk_mass_fraction'), 'body.trunk_mass_fraction'),
        (lambda m: m['spine_curve'].update(heights_mm=[1.0] * 12), 'spine_curve.heights_mm'),
        (lambda m: m['spine_curve'].update(offsets_m=[0.1, 0.0]), 'spine_curve'),
        (
            lambda m: m['tissue']['stiffness_profile']['n_per_mm'].__setitem__(1, -3.0),
            r'tissue.stiffness_profile.n_per_mm\[1\]',
        ),
        (
            lambda m: m['tissue'].update(stiff_segments=[{'offset_m': 0.1, 'factor': 2.0}]),
            r'tissue.stiff_segments\[0\].half_width_m',
        ),
        (lambda m: m['destiffening'].update(floor_fraction=1.5), 'destiffening.floor_fraction'),
        (lambda m: m.update(seed=-1), 'seed'),
    ],
)
def test_bad_fields_are_named(edit, field: str, tmp_path: Path) -> None:
    mapping = _default_mapping()
    edit(mapping)
    path = tmp_path / 'broken.yaml'
    path.write_text(yaml.safe_dump(mapping))
    with pytest.raises(SimulatedUserError, match=field) as raised:
        SimulatedUser.load(path)
    assert str(path) in str(raised.value)


def test_stiff_segment_applies_to_its_rows_and_sides_only() -> None:
    user = SimulatedUser.load('stiff_t7')
    segment = user.stiff_segments[0]
    offsets = np.array([segment.offset_m, segment.offset_m, segment.offset_m + 0.035])
    stiffness = user.stiffness_at(offsets, np.array(['l', 'r', 'l']))
    base = SimulatedUser.load('default').stiffness_at(offsets, np.array(['l', 'r', 'l']))
    np.testing.assert_allclose(stiffness[:2], base[:2] * segment.factor)
    assert stiffness[2] == base[2]
    one_sided = dataclasses.replace(
        user, stiff_segments=(dataclasses.replace(segment, sides=('r',)),)
    )
    left, right = one_sided.stiffness_at(offsets[:2], np.array(['l', 'r']))
    assert left == base[0]
    assert right == base[1] * segment.factor


def test_destiffening_law_is_monotonic_bounded_and_off_when_disabled() -> None:
    law = Destiffening(enabled=True, floor_fraction=0.7, work_scale_j=10.0)
    work = np.array([0.0, 1.0, 10.0, 100.0, 1e6])
    stiffness = destiffened_stiffness(20.0, work, law)
    assert stiffness[0] == 20.0
    assert np.all(np.diff(stiffness) < 0)
    assert stiffness[-1] == pytest.approx(14.0)
    assert np.all(stiffness >= 14.0)
    assert stiffness[2] == pytest.approx(20.0 * (0.7 + 0.3 * np.exp(-1.0)))
    off = dataclasses.replace(law, enabled=False)
    np.testing.assert_array_equal(destiffened_stiffness(20.0, work, off), np.full(5, 20.0))
