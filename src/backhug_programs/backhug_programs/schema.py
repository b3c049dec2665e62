"""Treatment program files: the YAML schema, its validation and the Program data classes.

A program is a YAML mapping (``id``, ``name``, ``description``, ``phases``); each phase works a
spinal region with a pattern at a peak force, frequency and duration (README "Treatment
programs"). The file is composed into YAML's node tree first, so every value keeps the line it
was written on, and every problem is reported as ``file:line: field: what was expected``.
Nothing here moves a finger: the compiler turns a valid Program into force setpoints.

Ranges enforced (design.md §1, from the physiotherapy literature on posterior–anterior
mobilisation):

- oscillation frequency 0.5–3 Hz (grades I–IV differ by amplitude and depth, hardly by rate);
- peak force per finger above 0 and at most the device's per-finger effort limit (180 N by
  default, config/device.yaml of backhug_description); treatment forces are ~20–150 N
  (Petty, Manual Therapy 1995: lumbar PA mean peak ≈ 92 N).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

# design.md §1: oscillation 0.5–3 Hz.
MIN_FREQUENCY_HZ = 0.5
MAX_FREQUENCY_HZ = 3.0
# A phase longer than half an hour is a typo (design.md §1: sessions of 10–30 min).
MAX_PHASE_DURATION_S = 1800.0
MAX_PROGRAM_DURATION_S = 3600.0
DEFAULT_RAMP_S = 2.0
# A program file is a page or two of YAML; anything far larger is not a program.
MAX_PROGRAM_TEXT_CHARS = 256_000

#: Vertebral levels the device can address, head to tail.
LEVELS: tuple[str, ...] = (
    'C7',
    *(f'T{i}' for i in range(1, 13)),
    *(f'L{i}' for i in range(1, 6)),
)

#: Named regions → (first level, last level), head to tail.
NAMED_REGIONS: dict[str, tuple[str, str]] = {
    'upper_back': ('T1', 'T6'),
    # The scapulae span about T2 (superior angle) to T7 (inferior angle) in standard anatomy.
    'shoulder_blades': ('T2', 'T7'),
    'mid_back': ('T5', 'T10'),
    # Thoracolumbar junction and lumbar spine.
    'lower_back': ('T10', 'L5'),
    'lumbar': ('L1', 'L5'),
    'full_back': ('T1', 'L5'),
}

PATTERNS = (
    'rhythmic_press',
    'alternating',
    'wave_up',
    'wave_down',
    'wave',
    'sustained_hold',
    'rest',
)
OSCILLATING = frozenset({'rhythmic_press', 'alternating', 'wave_up', 'wave_down'})
SIDES = ('both', 'left', 'right')
WAVE_DIRECTIONS = ('up', 'down')

_PROGRAM_KEYS = ('id', 'name', 'description', 'phases')
_PHASE_KEYS = (
    'name',
    'region',
    'sides',
    'pattern',
    'direction',
    'force_n',
    'frequency_hz',
    'duration_s',
    'ramp_s',
)
_ID_RE = re.compile(r'[a-z][a-z0-9_]*')
_RANGE_RE = re.compile(r'\s*([CTL]\d{1,2})\s*(?:[-–]\s*([CTL]\d{1,2}))?\s*')


@dataclass(frozen=True)
class Issue:
    """One problem in a program file."""

    file: str
    line: int  # 1-based; 0 when unknown
    field: str
    message: str

    def __str__(self) -> str:
        where = f'{self.file}:{self.line}' if self.line else self.file
        field_part = f'{self.field}: ' if self.field else ''
        return f'{where}: {field_part}{self.message}'


class ProgramError(ValueError):
    """An invalid program; ``issues`` lists every problem with its file, line and field."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        super().__init__('\n'.join(str(issue) for issue in self.issues))

    @property
    def file(self) -> str:
        return self.issues[0].file if self.issues else ''

    @property
    def line(self) -> int:
        return self.issues[0].line if self.issues else 0

    @property
    def field(self) -> str:
        return self.issues[0].field if self.issues else ''


@dataclass(frozen=True)
class Phase:
    """One phase of a program, validated; ``pattern`` is normalised (wave → wave_up/down)."""

    name: str
    region: str  # as written, e.g. 'T4-T9' or 'lower_back'
    first_level: str
    last_level: str
    sides: str
    pattern: str
    force_n: float  # peak per finger at intensity 1.0 (0 for rest)
    frequency_hz: float  # 0 for sustained_hold and rest
    duration_s: float
    ramp_s: float
    line: int = 0  # line of the phase in its file

    @property
    def levels(self) -> tuple[str, ...]:
        """Every vertebral level of the region, head to tail."""
        i, j = LEVELS.index(self.first_level), LEVELS.index(self.last_level)
        return LEVELS[i : j + 1]


@dataclass(frozen=True)
class Program:
    """A validated treatment program."""

    id: str
    name: str
    description: str
    phases: tuple[Phase, ...]
    source: str = '<text>'  # file path, or '<text>' for inline YAML
    text: str = field(default='', repr=False)

    @property
    def duration_s(self) -> float:
        """Total planned duration, s."""
        return float(sum(phase.duration_s for phase in self.phases))


@lru_cache(maxsize=1)
def device_force_limit_n() -> float:
    """The per-finger effort limit of the default device config (backhug_description)."""
    from backhug_description import load_config

    return float(load_config().effort_limit_n)


def parse_region(text: str) -> tuple[str, str]:
    """``'T4-T9'`` / ``'T7'`` / ``'lower_back'`` → (first level, last level); ValueError if not."""
    if text in NAMED_REGIONS:
        return NAMED_REGIONS[text]
    match = _RANGE_RE.fullmatch(text)
    if not match:
        raise ValueError(
            f'expected a vertebra range like T4-T9 (levels {LEVELS[0]}..{LEVELS[-1]}) or one of '
            f'{", ".join(NAMED_REGIONS)}, got {text!r}'
        )
    first, last = match.group(1), match.group(2) or match.group(1)
    for level in (first, last):
        if level not in LEVELS:
            raise ValueError(
                f'unknown vertebra {level!r} in {text!r}: the device addresses '
                f'{LEVELS[0]}, T1..T12, L1..L5'
            )
    if LEVELS.index(first) > LEVELS.index(last):
        raise ValueError(f'range {text!r} runs tail to head: write it head to tail, {last}-{first}')
    return first, last


class _Checker:
    """Walks the composed node tree, collecting issues with their lines."""

    def __init__(self, file: str, loader: yaml.SafeLoader, max_force_n: float) -> None:
        self.file = file
        self.loader = loader
        self.max_force_n = max_force_n
        self.issues: list[Issue] = []

    def issue(self, node: yaml.Node | None, field_name: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.issues.append(Issue(self.file, line, field_name, message))

    def value(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def mapping(
        self, node: yaml.Node, where: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Keys → (key node, value node); None (and an issue) if not a mapping."""
        if not isinstance(node, yaml.MappingNode):
            kind = 'a list' if isinstance(node, yaml.SequenceNode) else repr(self.value(node))
            self.issue(node, where, f'expected a mapping of {", ".join(allowed)}, got {kind}')
            return None
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            name = f'{where}.{key}' if where else str(key)
            if not isinstance(key, str):
                self.issue(key_node, where or 'program', f'keys must be text, got {key!r}')
            elif key not in allowed:
                self.issue(key_node, name, f'unknown key; expected one of {", ".join(allowed)}')
            elif key in entries:
                self.issue(key_node, name, 'duplicate key')
            else:
                entries[key] = (key_node, value_node)
        return entries

    def text(self, entries, key: str, where: str, node: yaml.Node, *, required: bool = True):
        name = f'{where}.{key}' if where else key
        if key not in entries:
            if required:
                self.issue(node, name, 'missing (expected text)')
            return None
        value_node = entries[key][1]
        value = self.value(value_node) if isinstance(value_node, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value.strip():
            self.issue(value_node, name, f'expected non-empty text, got {self._show(value_node)}')
            return None
        return value.strip()

    def number(self, entries, key: str, where: str, node: yaml.Node, *, required: bool = True):
        """A finite number, or None (with an issue when it is wrong or required and missing)."""
        name = f'{where}.{key}'
        if key not in entries:
            if required:
                self.issue(node, name, 'missing (expected a number)')
            return None
        value_node = entries[key][1]
        value = self.value(value_node) if isinstance(value_node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.issue(value_node, name, f'expected a number, got {self._show(value_node)}')
            return None
        if not math.isfinite(value):
            self.issue(value_node, name, f'expected a finite number, got {value!r}')
            return None
        return float(value)

    def _show(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return 'a mapping'
        if isinstance(node, yaml.SequenceNode):
            return 'a list'
        return repr(self.value(node))

    def node_of(self, entries, key: str, fallback: yaml.Node) -> yaml.Node:
        return entries[key][1] if key in entries else fallback

    # -- the program -----------------------------------------------------------------------------
    def program(self, root: yaml.Node, text: str) -> Program | None:
        entries = self.mapping(root, '', _PROGRAM_KEYS)
        if entries is None:
            return None
        program_id = self.text(entries, 'id', '', root)
        if program_id is not None and not _ID_RE.fullmatch(program_id):
            self.issue(
                entries['id'][1],
                'id',
                f'expected lower-case letters, digits and underscores, starting with a letter, '
                f'got {program_id!r}',
            )
        name = self.text(entries, 'name', '', root)
        description = self.text(entries, 'description', '', root)
        phases: list[Phase] = []
        if 'phases' not in entries:
            self.issue(root, 'phases', 'missing (expected a list of phases)')
        else:
            phases_node = entries['phases'][1]
            if not isinstance(phases_node, yaml.SequenceNode) or not phases_node.value:
                self.issue(
                    phases_node,
                    'phases',
                    f'expected a non-empty list of phases, got {self._show(phases_node)}',
                )
            else:
                for index, phase_node in enumerate(phases_node.value):
                    phase = self.phase(phase_node, f'phases[{index}]')
                    if phase is not None:
                        phases.append(phase)
                total = sum(p.duration_s for p in phases)
                if total > MAX_PROGRAM_DURATION_S:
                    self.issue(
                        phases_node,
                        'phases',
                        f'total duration {total:.0f} s exceeds {MAX_PROGRAM_DURATION_S:.0f} s',
                    )
        if self.issues:
            return None
        return Program(program_id, name, description, tuple(phases), self.file, text)

    def phase(self, node: yaml.Node, where: str) -> Phase | None:
        entries = self.mapping(node, where, _PHASE_KEYS)
        if entries is None:
            return None
        before = len(self.issues)
        name = self.text(entries, 'name', where, node)
        pattern = self.text(entries, 'pattern', where, node)
        if pattern is not None and pattern not in PATTERNS:
            self.issue(
                entries['pattern'][1],
                f'{where}.pattern',
                f'unknown pattern {pattern!r}; expected one of {", ".join(PATTERNS)}',
            )
            pattern = None
        direction = self.text(entries, 'direction', where, node, required=False)
        oscillates = pattern in OSCILLATING or pattern == 'wave'
        if pattern == 'wave':
            if direction is None and 'direction' not in entries:
                self.issue(node, f'{where}.direction', 'missing: pattern wave needs up or down')
            elif direction is not None and direction not in WAVE_DIRECTIONS:
                self.issue(
                    entries['direction'][1],
                    f'{where}.direction',
                    f'expected up or down, got {direction!r}',
                )
            else:
                pattern = f'wave_{direction}' if direction else None
        elif 'direction' in entries:
            is_wave = pattern in ('wave_up', 'wave_down')
            expected = pattern.removeprefix('wave_') if is_wave else None
            if expected is None or direction != expected:
                self.issue(
                    entries['direction'][0],
                    f'{where}.direction',
                    f'only pattern wave takes a direction (pattern is {pattern!r})',
                )
        rest = pattern == 'rest'

        # region and sides
        region_text, first, last = 'full_back', *NAMED_REGIONS['full_back']
        if 'region' in entries or not rest:
            region_text = self.text(entries, 'region', where, node)
            if region_text is not None:
                try:
                    first, last = parse_region(region_text)
                except ValueError as error:
                    self.issue(entries['region'][1], f'{where}.region', str(error))
        sides = self.text(entries, 'sides', where, node, required=False) or 'both'
        if 'sides' in entries and sides not in SIDES:
            self.issue(
                entries['sides'][1],
                f'{where}.sides',
                f'expected one of {", ".join(SIDES)}, got {sides!r}',
            )
        if pattern == 'alternating' and sides != 'both':
            self.issue(
                self.node_of(entries, 'sides', node),
                f'{where}.sides',
                f'pattern alternating alternates left and right: sides must be both, got {sides!r}',
            )

        # force
        force = 0.0
        if rest:
            if 'force_n' in entries:
                self.issue(
                    entries['force_n'][0], f'{where}.force_n', 'a rest phase presses nothing'
                )
        else:
            value = self.number(entries, 'force_n', where, node)
            if value is not None:
                if not 0.0 < value <= self.max_force_n:
                    self.issue(
                        entries['force_n'][1],
                        f'{where}.force_n',
                        f'expected a peak force above 0 and at most the per-finger limit '
                        f'{self.max_force_n:g} N, got {value:g} N',
                    )
                force = value

        # frequency
        frequency = 0.0
        if oscillates:
            value = self.number(entries, 'frequency_hz', where, node)
            if value is not None:
                if not MIN_FREQUENCY_HZ <= value <= MAX_FREQUENCY_HZ:
                    self.issue(
                        entries['frequency_hz'][1],
                        f'{where}.frequency_hz',
                        f'expected {MIN_FREQUENCY_HZ:g}–{MAX_FREQUENCY_HZ:g} Hz (mobilisation '
                        f'range, design.md §1), got {value:g} Hz',
                    )
                frequency = value
        elif pattern is not None and 'frequency_hz' in entries:
            self.issue(
                entries['frequency_hz'][0],
                f'{where}.frequency_hz',
                f'pattern {pattern} does not oscillate: remove frequency_hz',
            )

        # duration and ramp
        duration = self.number(entries, 'duration_s', where, node)
        if duration is not None and not 0.0 < duration <= MAX_PHASE_DURATION_S:
            self.issue(
                entries['duration_s'][1],
                f'{where}.duration_s',
                f'expected a duration above 0 and at most {MAX_PHASE_DURATION_S:g} s, '
                f'got {duration:g} s',
            )
            duration = None
        ramp = self.number(entries, 'ramp_s', where, node, required=False)
        if ramp is None and 'ramp_s' not in entries and duration is not None:
            ramp = min(DEFAULT_RAMP_S, duration / 2.0)
        if ramp is not None and duration is not None and not 0.0 <= ramp <= duration / 2.0:
            self.issue(
                entries['ramp_s'][1],
                f'{where}.ramp_s',
                f'expected 0 to half the duration ({duration / 2.0:g} s), got {ramp:g} s',
            )
        if len(self.issues) > before or None in (name, pattern, duration, ramp):
            return None
        return Phase(
            name=name,
            region=region_text,
            first_level=first,
            last_level=last,
            sides=sides,
            pattern=pattern,
            force_n=force,
            frequency_hz=frequency,
            duration_s=duration,
            ramp_s=ramp,
            line=node.start_mark.line + 1,
        )


def load_program(
    path_or_text: str | Path, *, max_force_n: float | None = None, source: str | None = None
) -> Program:
    """Load and validate a program from a file path or from YAML text.

    A ``Path``, or a string without a newline that names an existing file, is read as a file;
    any other string is the YAML itself (reported as ``source``, default ``<text>``).
    ``max_force_n`` is the per-finger force limit (default: the device config's effort limit).
    Raises ProgramError listing every problem as ``file:line: field: expected ...``.
    """
    limit = device_force_limit_n() if max_force_n is None else float(max_force_n)
    if isinstance(path_or_text, Path) or (
        '\n' not in path_or_text and path_or_text.endswith(('.yaml', '.yml'))
    ):
        path = Path(path_or_text)
        file = str(path)
        try:
            text = path.read_text(encoding='utf-8')
        except (OSError, UnicodeDecodeError) as error:
            raise ProgramError([Issue(file, 0, '', f'cannot read the file: {error}')]) from error
    else:
        text, file = str(path_or_text), source or '<text>'
    return parse_program(text, file, max_force_n=limit)


def parse_program(
    text: str, source: str = '<text>', *, max_force_n: float | None = None
) -> Program:
    """Validate a program given as YAML text (never read from a file); see load_program."""
    limit = device_force_limit_n() if max_force_n is None else float(max_force_n)
    file = source
    if not isinstance(text, str):
        raise ProgramError([Issue(file, 0, '', f'expected YAML text, got {type(text).__name__}')])
    if len(text) > MAX_PROGRAM_TEXT_CHARS:
        raise ProgramError(
            [
                Issue(
                    file,
                    0,
                    '',
                    f'{len(text)} characters: a program is at most {MAX_PROGRAM_TEXT_CHARS}',
                )
            ]
        )
    try:
        loader = yaml.SafeLoader(text)  # the reader checks every character at once
    except yaml.YAMLError as error:
        raise ProgramError([Issue(file, 0, '', f'invalid YAML: {error}')]) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark is not None else 0
            problem = ' '.join(p for p in (error.context, error.problem) if p)
            context = error.context_mark
            if context is not None and mark is not None and context.line != mark.line:
                problem += f' (the construct starts on line {context.line + 1})'
            raise ProgramError([Issue(file, line, '', f'invalid YAML: {problem}')]) from None
        except yaml.YAMLError as error:
            raise ProgramError([Issue(file, 0, '', f'invalid YAML: {error}')]) from None
        if root is None:
            raise ProgramError([Issue(file, 1, '', 'empty file: expected a program mapping')])
        checker = _Checker(file, loader, limit)
        try:
            program = checker.program(root, text)
        except yaml.constructor.ConstructorError as error:
            mark = error.problem_mark
            raise ProgramError(
                [Issue(file, mark.line + 1 if mark else 0, '', f'invalid value: {error.problem}')]
            ) from None
    finally:
        loader.dispose()
    if checker.issues or program is None:
        raise ProgramError(sorted(checker.issues, key=lambda issue: issue.line))
    return program
