"""The Python API: canonical joints, limits and tip positions of the expanded URDF vs the config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from backhug_description import (
    HARDWARE_CHOICES,
    DescriptionError,
    load_config,
    load_description,
)

TOLERANCE_M = 1e-4  # 0.1 mm


def expected_tip(config, side: str, row: int) -> tuple[float, float, float]:
    """Tip position at joint zero from the config alone (independent of the xacro)."""
    x = config.first_row_x_m + (row - 1) * config.row_pitch_m
    y = config.lateral_offset_m if side == 'l' else -config.lateral_offset_m
    z = config.frame_height_m + config.pad_thickness_m - config.tip_recess_m
    return (x, y, z)


@pytest.mark.parametrize(
    ('hardware', 'overrides', 'rows'),
    [(hw, {}, 13) for hw in HARDWARE_CHOICES]
    + [('sim', {'rows': 8}, 8), ('gazebo', {'rows': 16}, 16), ('mock', {'rows': 8}, 8)],
)
def test_joints_match_config(hardware: str, overrides: dict, rows: int) -> None:
    description = load_description(hardware, **overrides)
    config = description.config
    assert config.rows == rows
    assert len(description.joints) == 2 * rows
    names = [f'finger_{s}_{r:02d}_joint' for s in 'lr' for r in range(1, rows + 1)]
    assert description.joint_names == names
    for joint in description.joints:
        assert joint.name == f'finger_{joint.side}_{joint.row:02d}_joint'
        assert joint.lower_m == 0.0
        assert math.isclose(joint.upper_m, config.stroke_m)
        assert math.isclose(joint.effort_limit_n, config.effort_limit_n)
        assert math.isclose(joint.velocity_limit_m_s, config.velocity_limit_m_s)
        tip = expected_tip(config, joint.side, joint.row)
        assert joint.tip_xyz_m == pytest.approx(tip, abs=TOLERANCE_M)
        assert joint.spine_offset_m == pytest.approx(
            (joint.row - 1) * config.row_pitch_m, abs=TOLERANCE_M
        )


def test_default_device_is_2_by_13_within_safety_ceiling() -> None:
    config = load_config()
    assert (config.columns, config.rows, config.finger_count) == (2, 13, 26)
    assert config.effort_limit_n <= 180.0
    assert config.stroke_m == pytest.approx(0.040)
    assert 0.025 <= config.lateral_offset_m <= 0.035


def test_layout_overrides_reach_the_urdf() -> None:
    description = load_description(
        'sim', rows=8, row_pitch_m=0.04, stroke_m=0.03, lateral_offset_m=0.028
    )
    last = description.joints[7]
    assert last.name == 'finger_l_08_joint'
    assert last.spine_offset_m == pytest.approx(7 * 0.04, abs=TOLERANCE_M)
    assert last.upper_m == pytest.approx(0.03)
    assert last.tip_xyz_m[1] == pytest.approx(0.028, abs=TOLERANCE_M)
    assert description.joints[8].tip_xyz_m[1] == pytest.approx(-0.028, abs=TOLERANCE_M)


def test_three_digit_rows_when_more_than_99(tmp_path) -> None:
    text = Path(load_config().source).read_text()
    text = text.replace('length_m: 0.90', 'length_m: 4.00').replace(
        'row_pitch_m: 0.035', 'row_pitch_m: 0.025'
    )
    path = tmp_path / 'long.yaml'
    path.write_text(text)
    description = load_description('mock', path, rows=100)
    assert description.joint_names[0] == 'finger_l_001_joint'
    assert description.joint_names[99] == 'finger_l_100_joint'


def test_prefix_is_applied_to_every_name() -> None:
    description = load_description('mock', prefix='left_bed_')
    assert description.joint_names[0] == 'left_bed_finger_l_01_joint'
    assert 'left_bed_spine_line' in description.urdf


@pytest.mark.parametrize(
    ('key', 'value'),
    [
        ('row_pitch_m', -0.035),
        ('rows', 0),
        ('stroke_m', 0.05),  # above the 45 mm mechanical limit
        ('row_pitch_m', 'wide'),
        ('rows', 2.5),
        ('columns', 3),
        ('stroke_m', float('nan')),
    ],
)
def test_invalid_override_names_key_and_value(key: str, value) -> None:
    with pytest.raises(DescriptionError) as error:
        load_description('sim', **{key: value})
    message = str(error.value)
    assert key in message
    assert repr(value) in message or str(value) in message


def test_unknown_hardware_and_override_rejected() -> None:
    with pytest.raises(DescriptionError, match="'hydraulic'"):
        load_description('hydraulic')
    with pytest.raises(DescriptionError, match='pad_mass_kg'):
        load_description('sim', pad_mass_kg=3.0)
    with pytest.raises(DescriptionError, match='colour'):
        load_config(colour=3)


def _config_with(tmp_path, old: str, new: str) -> Path:
    text = Path(load_config().source).read_text()
    assert old in text
    path = tmp_path / 'device.yaml'
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ('old', 'new', 'expected'),
    [
        ('row_pitch_m: 0.035', 'row_pitch_m: -0.035', ['row_pitch_m', '-0.035']),
        ('rows: 13', 'rows: 0', ['rows', '0']),
        ('rows: 13', 'rows: thirteen', ['rows', "'thirteen'"]),
        ('stroke_m: 0.040', 'stroke_m: 0.050', ['stroke_m=0.05', 'mechanical_stroke_m=0.045']),
        ('effort_limit_n: 180.0', 'effort_limit_n: 250.0', ['effort_limit_n=250.0', '180']),
        ('velocity_limit_m_s: 0.050', 'velocity_limit_m_s: .nan', ['velocity_limit_m_s', 'nan']),
        ('tip_mass_kg: 0.010', 'tip_mass_kg: true', ['tip_mass_kg', 'True']),
        ('  width_m: 0.55\n', '', ['bed.width_m', 'missing']),
        ('  width_m: 0.55\n', '  width_m: 0.55\n  colour: 3\n', ['colour', 'bed']),
    ],
)
def test_invalid_config_file_names_file_key_and_value(tmp_path, old, new, expected) -> None:
    path = _config_with(tmp_path, old, new)
    with pytest.raises(DescriptionError) as error:
        load_description('sim', path)
    message = str(error.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_config_file_errors_for_unreadable_or_non_mapping_files(tmp_path) -> None:
    with pytest.raises(DescriptionError, match='cannot read'):
        load_config(tmp_path / 'absent.yaml')
    bad = tmp_path / 'list.yaml'
    bad.write_text('- 1\n- 2\n')
    with pytest.raises(DescriptionError, match='mapping'):
        load_config(bad)


def test_xacro_guards_catch_bad_layout_without_the_python_checks() -> None:
    # Plain xacro (e.g. `xacro backhug.urdf.xacro rows:=0` on a distro) must refuse too.
    from backhug_description.description import expand_xacro

    with pytest.raises(DescriptionError, match='rows must be > 0, got 0'):
        expand_xacro({'rows': '0'})
    with pytest.raises(DescriptionError, match='stroke_m'):
        expand_xacro({'stroke_m': '0.06'})
    with pytest.raises(DescriptionError, match="'hydraulic'"):
        expand_xacro({'hardware': 'hydraulic'})
    assert 'finger_r_08_joint' in expand_xacro({'rows': '8'})
    assert 'finger_r_09_joint' not in expand_xacro({'rows': '8'})
