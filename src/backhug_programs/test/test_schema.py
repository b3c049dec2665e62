"""Program files: every malformed file is refused with the exact file, line and field."""

from __future__ import annotations

import textwrap

import pytest
from backhug_programs.schema import ProgramError, load_program, parse_program, parse_region

VALID = textwrap.dedent(
    """\
    id: test_program
    name: Test program
    description: A short program for the tests.
    phases:
      - name: warm up
        region: T4-T9
        sides: both
        pattern: rhythmic_press
        force_n: 50
        frequency_hz: 1.0
        duration_s: 30
        ramp_s: 3
      - name: wave
        region: lower_back
        pattern: wave
        direction: down
        force_n: 40
        frequency_hz: 0.5
        duration_s: 20
      - name: pause
        pattern: rest
        duration_s: 5
    """
)


def replace_line(line: int, text: str) -> str:
    """VALID with 1-based ``line`` replaced by ``text`` (indentation kept)."""
    lines = VALID.splitlines()
    old = lines[line - 1]
    lines[line - 1] = old[: len(old) - len(old.lstrip())] + text
    return '\n'.join(lines) + '\n'


def only_issue(text: str, tmp_path=None):
    source = text
    if tmp_path is not None:
        path = tmp_path / 'bad.yaml'
        path.write_text(text)
        source = path
    with pytest.raises(ProgramError) as caught:
        load_program(source)
    assert len(caught.value.issues) == 1, str(caught.value)
    return caught.value.issues[0]


def test_valid_program_loads_with_defaults_and_lines():
    program = load_program(VALID)
    assert program.id == 'test_program'
    assert [p.pattern for p in program.phases] == ['rhythmic_press', 'wave_down', 'rest']
    assert program.phases[0].levels == ('T4', 'T5', 'T6', 'T7', 'T8', 'T9')
    assert program.phases[1].first_level == 'T10' and program.phases[1].last_level == 'L5'
    assert program.phases[1].ramp_s == 2.0  # default
    assert program.phases[2].ramp_s == 2.0
    assert [p.line for p in program.phases] == [5, 13, 20]
    assert program.duration_s == 55.0


@pytest.mark.parametrize(
    ('line', 'text', 'field', 'words'),
    [
        (9, 'force_n: fifty', 'phases[0].force_n', 'expected a number'),
        (9, 'force_n: true', 'phases[0].force_n', 'expected a number'),
        (9, 'force_n: 181', 'phases[0].force_n', 'per-finger limit 180 N'),
        (9, 'force_n: 0', 'phases[0].force_n', 'above 0'),
        (9, 'force_n: .nan', 'phases[0].force_n', 'finite'),
        (8, 'pattern: kneading', 'phases[0].pattern', "unknown pattern 'kneading'"),
        (11, 'duration_s: -5', 'phases[0].duration_s', 'above 0'),
        (11, 'duration_s: 0', 'phases[0].duration_s', 'above 0'),
        (12, 'ramp_s: 20', 'phases[0].ramp_s', 'half the duration'),
        (10, 'frequency_hz: 5', 'phases[0].frequency_hz', '0.5–3 Hz'),
        (10, 'frequency_hz: 0.1', 'phases[0].frequency_hz', '0.5–3 Hz'),
        (6, 'region: T4-X9', 'phases[0].region', 'vertebra range'),
        (6, 'region: T9-T4', 'phases[0].region', 'head to tail'),
        (6, 'region: T13', 'phases[0].region', "unknown vertebra 'T13'"),
        (6, 'region: [T4, T9]', 'phases[0].region', 'expected non-empty text'),
        (7, 'sides: middle', 'phases[0].sides', 'both, left, right'),
        (16, 'direction: sideways', 'phases[1].direction', 'up or down'),
        (12, 'speed: 3', 'phases[0].speed', 'unknown key'),
        (1, 'id: Test Program', 'id', 'lower-case'),
    ],
)
def test_malformed_field_names_line_and_field(line, text, field, words):
    issue = only_issue(replace_line(line, text))
    assert issue.line == line, issue
    assert issue.field == field, issue
    assert words in issue.message, issue
    assert str(issue).startswith(f'<text>:{line}: {field}: ')


def test_missing_keys_are_named(tmp_path):
    text = VALID.replace('    duration_s: 30\n', '')
    issue = only_issue(text, tmp_path)
    assert issue.field == 'phases[0].duration_s'
    assert 'missing' in issue.message
    assert issue.line == 5  # the phase that lacks it
    assert issue.file.endswith('bad.yaml')

    issue = only_issue(VALID.replace('name: Test program\n', ''))
    assert (issue.field, issue.line) == ('name', 1)

    issue = only_issue(VALID.replace('    force_n: 40\n', ''))
    assert (issue.field, issue.line) == ('phases[1].force_n', 13)


def test_pattern_rules():
    # Frequency is required for oscillating patterns and refused for holds and rests.
    issue = only_issue(VALID.replace('    frequency_hz: 1.0\n', ''))
    assert issue.field == 'phases[0].frequency_hz' and 'missing' in issue.message
    issue = only_issue(replace_line(8, 'pattern: sustained_hold'))
    assert issue.field == 'phases[0].frequency_hz' and 'does not oscillate' in issue.message
    assert issue.line == 10
    # A rest phase presses nothing.
    issue = only_issue(VALID.replace('    duration_s: 5\n', '    duration_s: 5\n    force_n: 10\n'))
    assert issue.field == 'phases[2].force_n' and 'rest' in issue.message
    # Alternating needs both sides.
    text = replace_line(8, 'pattern: alternating').replace('sides: both', 'sides: left')
    issue = only_issue(text)
    assert (issue.field, issue.line) == ('phases[0].sides', 7)
    # A wave needs a direction.
    issue = only_issue(VALID.replace('    direction: down\n', ''))
    assert issue.field == 'phases[1].direction' and issue.line == 13


def test_bad_yaml_reports_its_line(tmp_path):
    text = replace_line(9, 'force_n: [50')
    path = tmp_path / 'broken.yaml'
    path.write_text(text)
    with pytest.raises(ProgramError) as caught:
        load_program(path)
    issue = caught.value.issues[0]
    assert issue.file == str(path)
    assert 'invalid YAML' in issue.message
    assert 9 <= issue.line <= 10, issue
    # A tab in indentation.
    issue = only_issue(VALID.replace('    region: T4-T9', '\tregion: T4-T9'))
    assert issue.line == 6 and 'invalid YAML' in issue.message


def test_duplicate_key_and_wrong_shapes():
    issue = only_issue(VALID.replace('    ramp_s: 3\n', '    ramp_s: 3\n    ramp_s: 4\n'))
    assert (issue.field, issue.line) == ('phases[0].ramp_s', 13)
    assert 'duplicate' in issue.message
    empty = only_issue(VALID.split('phases:')[0] + 'phases: []\n')
    assert 'expected a non-empty list' in empty.message
    issue = only_issue('- just\n- a list\n')
    assert issue.line == 1 and 'expected a mapping' in issue.message
    issue = only_issue('')
    assert 'empty' in issue.message


def test_every_problem_reported_at_once():
    text = replace_line(9, 'force_n: 500').replace('duration_s: 20', 'duration_s: -1')
    with pytest.raises(ProgramError) as caught:
        load_program(text)
    fields = [issue.field for issue in caught.value.issues]
    assert fields == ['phases[0].force_n', 'phases[1].duration_s']
    assert 'phases[0].force_n' in str(caught.value) and '<text>:19: ' in str(caught.value)


def test_unknown_top_level_key():
    issue = only_issue(VALID.replace('phases:\n', 'author: me\nphases:\n'))
    assert (issue.line, issue.field) == (4, 'author')
    assert 'unknown key' in issue.message


def test_missing_file_and_custom_force_limit(tmp_path):
    issue = only_issue_path(tmp_path / 'nope.yaml')
    assert 'cannot read' in issue.message
    with pytest.raises(ProgramError, match='per-finger limit 40 N'):
        load_program(VALID, max_force_n=40.0)


def only_issue_path(path):
    with pytest.raises(ProgramError) as caught:
        load_program(path)
    return caught.value.issues[0]


def test_parse_region():
    assert parse_region('T4–T9') == ('T4', 'T9')  # en dash
    assert parse_region('T10-L2') == ('T10', 'L2')
    assert parse_region('L3') == ('L3', 'L3')
    assert parse_region('shoulder_blades') == ('T2', 'T7')
    with pytest.raises(ValueError, match='C8'):
        parse_region('C8-T2')


def test_oversized_text_is_refused_before_parsing():
    with pytest.raises(ProgramError, match='at most'):
        parse_program('# padding\n' * 30_000, '<goal program_yaml>')
