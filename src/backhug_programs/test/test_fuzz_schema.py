"""Fuzz the program loader: on any text, load_program raises ProgramError or returns a valid
Program (every phase inside the schema's ranges), never any other exception.

Inputs: random text, random YAML documents built from the schema's own keys and values (valid
and invalid ones mixed), and byte-level mutations (insert, delete, replace, duplicate lines) of
the library's program files. Brief by default (make test); ``BACKHUG_FUZZ_EXAMPLES=N`` raises
hypothesis' max_examples for a long run (``make faults`` sets it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml
from backhug_programs.schema import ProgramError, load_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backhug_programs import schema

EXAMPLES = int(os.environ.get('BACKHUG_FUZZ_EXAMPLES', '0')) or None
FUZZ = settings(
    max_examples=EXAMPLES or 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES is None,  # make test: the same examples every run
)
LIBRARY = Path(__file__).resolve().parent.parent / 'programs'
PROGRAM_TEXTS = [p.read_text(encoding='utf-8') for p in sorted(LIBRARY.glob('*.yaml'))]
LIMIT_N = 180.0


def check(text: str) -> None:
    """The property: ProgramError, or a Program whose every field is in range."""
    try:
        program = load_program(text, max_force_n=LIMIT_N)
    except ProgramError as error:
        assert error.issues, 'ProgramError without an issue'
        for issue in error.issues:
            assert isinstance(issue.line, int) and issue.line >= 0
            assert str(issue)
        return
    assert isinstance(program, schema.Program)
    assert isinstance(program.id, str) and program.id
    assert program.phases
    assert 0 < program.duration_s <= schema.MAX_PROGRAM_DURATION_S
    for phase in program.phases:
        assert phase.pattern in schema.PATTERNS or phase.pattern.startswith('wave_')
        assert phase.sides in ('both', 'left', 'right')
        assert schema.LEVELS.index(phase.first_level) <= schema.LEVELS.index(phase.last_level)
        assert phase.levels
        for value in (phase.force_n, phase.frequency_hz, phase.duration_s, phase.ramp_s):
            assert isinstance(value, float) and math.isfinite(value), phase
        assert 0 <= phase.force_n <= LIMIT_N
        assert 0 < phase.duration_s <= schema.MAX_PHASE_DURATION_S
        assert 0 <= phase.ramp_s <= phase.duration_s / 2 + 1e-9
        if phase.frequency_hz:
            assert schema.MIN_FREQUENCY_HZ <= phase.frequency_hz <= schema.MAX_FREQUENCY_HZ


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            *schema.PATTERNS,
            'wave',
            'up',
            'down',
            'both',
            'left',
            'right',
            'T4-T9',
            'L5-C7',
            *list(schema.NAMED_REGIONS),
            *list(schema.LEVELS),
            '.nan',
            '.inf',
            '1e400',
            '0x10',
            '~',
            '',
        ]
    ),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(scalars, inner, max_size=3)
)
PHASE_KEYS = [
    'name',
    'region',
    'sides',
    'pattern',
    'direction',
    'force_n',
    'frequency_hz',
    'duration_s',
    'ramp_s',
    'extra',
]
good_values = {
    'name': st.text(min_size=1, max_size=10),
    'region': st.sampled_from(['T4-T9', 'L1-L5', 'C7-T1', 'full_back', 'lumbar', 'T9-T4']),
    'sides': st.sampled_from(['both', 'left', 'right']),
    'pattern': st.sampled_from([*schema.PATTERNS, 'wave']),
    'direction': st.sampled_from(['up', 'down']),
    'force_n': st.floats(-10, 400),
    'frequency_hz': st.floats(0, 5),
    'duration_s': st.floats(-1, 4000),
    'ramp_s': st.floats(-1, 100),
    'extra': values,
}


@st.composite
def phases(draw):
    keys = draw(st.lists(st.sampled_from(PHASE_KEYS), unique=True, max_size=len(PHASE_KEYS)))
    return {k: draw(good_values[k] if draw(st.integers(0, 4)) else values) for k in keys}


@st.composite
def documents(draw):
    doc = {
        'id': draw(st.sampled_from(['x', 'my_program', '', 'Bad Id', 7])),
        'name': draw(st.text(max_size=10)),
        'description': draw(st.text(max_size=10)),
        'phases': draw(st.lists(phases(), max_size=4)),
    }
    for key in draw(st.lists(st.sampled_from([*doc, 'unknown']), max_size=2)):
        if key in doc and draw(st.booleans()):
            del doc[key]
        else:
            doc[key] = draw(values)
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@st.composite
def mutated_library_files(draw):
    text = draw(st.sampled_from(PROGRAM_TEXTS))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(['insert', 'delete', 'replace', 'line', 'number']))
        at = draw(st.integers(0, len(text)))
        if kind == 'insert':
            text = text[:at] + draw(st.text(max_size=8)) + text[at:]
        elif kind == 'delete':
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif kind == 'replace':
            token = draw(st.sampled_from([':', '-', ' ', '\n', '  ', '"', "'", '&a', '*a', '!!']))
            text = text[:at] + token + text[at + 1 :]
        elif kind == 'line':
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(draw(st.integers(0, len(lines))), lines[i])
                text = ''.join(lines)
        else:
            number = draw(st.sampled_from(['-1', '0', '1e9', '.nan', '-.inf', '999', '0.4']))
            text = text[:at] + number + text[at:]
    return text


@FUZZ
@given(st.text(max_size=400))
def test_random_text(text) -> None:
    check(text)


@FUZZ
@given(documents())
def test_random_documents_of_the_schema(text) -> None:
    check(text)


@FUZZ
@given(mutated_library_files())
def test_mutated_library_programs(text) -> None:
    check(text)


def test_every_library_program_passes_the_property() -> None:
    assert PROGRAM_TEXTS
    for text in PROGRAM_TEXTS:
        check(text)
        load_program(text, max_force_n=LIMIT_N)  # and is valid
