"""``backhug programs``: list, show, validate and preview treatment programs (no ROS graph).

    backhug programs list
    backhug programs show NAME [--height 1.75] [--weight KG]
    backhug programs validate FILE_OR_NAME...
    backhug programs preview NAME [--height 1.75] [--intensity 0.6] [--c7 M] [--max-force N]
                             [--weight KG]
                                  [--out preview.png]

``validate`` loads each file (errors name the file, line and field) and compiles it at
intensity 1.0 for users of 1.50, 1.75 and 2.00 m, which also checks every phase against the
force-rate limit and that its region lies under some finger row; it exits 1 if any file fails.
``preview`` draws a heat map of the force on every finger over time (rows labelled by vertebra,
phases marked) and the force per finger, for one user and intensity.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from backhug_programs.compiler import DEFAULT_MAX_FORCE_RATE_N_S, compile_program
from backhug_programs.library import find_program, list_programs
from backhug_programs.schema import ProgramError

VALIDATION_HEIGHTS_M = (1.50, 1.75, 2.00)


def _profile(
    height_m: float, c7_m: float | None = None, max_force_n: float = 0.0, weight_kg: float = 0.0
):
    return SimpleNamespace(
        height_m=height_m,
        c7_position_m=math.nan if c7_m is None else c7_m,
        max_force_n=max_force_n,
        weight_kg=weight_kg,
    )


def _minutes(seconds: float) -> str:
    return f'{int(seconds // 60)}:{seconds % 60:04.1f}' if seconds >= 60 else f'{seconds:.1f} s'


def _cmd_list(_args: argparse.Namespace) -> int:
    programs = list_programs()
    print(f'{"id":<14} {"duration":>9} {"phases":>6}  name')
    for program in programs:
        print(
            f'{program.id:<14} {_minutes(program.duration_s):>9} {len(program.phases):>6}  '
            f'{program.name}'
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    program = find_program(args.name)
    compiled = compile_program(program, _profile(args.height, weight_kg=args.weight), 1.0)
    model = compiled.model
    print(f'{program.name} [{program.id}] — {_minutes(program.duration_s)}, from {program.source}')
    print(textwrap.fill(program.description, 96, initial_indent='  ', subsequent_indent='  '))
    c7 = 'estimated' if model.c7_estimated else 'measured'
    weight = f'{args.weight:g} kg' if args.weight else 'unknown weight (budgeted as 50 kg)'
    print(
        f'\nfor a {args.height:g} m user of {weight} (C7 {c7} at {model.c7_position_m:+.3f} m '
        f'from row 1); summed force at most {compiled.max_total_force_n:.0f} N: a phase that '
        'would lift the user is scaled down ("x" column)'
    )
    header = (
        f'{"#":>2} {"start":>7} {"end":>7}  {"phase":<34} {"pattern":<15} {"region":<22} '
        f'{"sides":<5} {"force":>6} {"x":>4} {"freq":>6} {"ramp":>5}  rows'
    )
    print(header)
    for phase in compiled.phases:
        p = phase.phase
        levels = f'{p.first_level}-{p.last_level}'
        region = '-' if p.pattern == 'rest' else levels
        if p.pattern != 'rest' and p.region not in (levels, p.first_level):
            region = f'{p.region}={levels}'
        force = f'{p.force_n:g} N' if p.pattern != 'rest' else '-'
        freq = f'{p.frequency_hz:g} Hz' if p.frequency_hz else '-'
        rows = ','.join(str(r) for r in phase.rows) or '-'
        print(
            f'{phase.index:>2} {_minutes(phase.start_s):>7} {_minutes(phase.end_s):>7}  '
            f'{p.name[:34]:<34} {p.pattern:<15} {region:<22} {p.sides:<5} {force:>6} '
            f'{compiled.load_scale(phase):>4.2f} {freq:>6} {p.ramp_s:>4g}s  {rows}'
        )
    if compiled.out_of_reach:
        print(f'out of reach for this user: {", ".join(compiled.out_of_reach)}')
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for name in args.files:
        try:
            program = find_program(name)
            for height in VALIDATION_HEIGHTS_M:
                compile_program(
                    program,
                    _profile(height),
                    1.0,
                    max_force_rate_n_s=args.max_force_rate,
                )
        except ProgramError as error:
            failed += 1
            print(f'INVALID {name}', file=sys.stderr)
            for issue in error.issues:
                print(f'  {issue}', file=sys.stderr)
            continue
        except ValueError as error:
            failed += 1
            print(f'INVALID {name}\n  {error}', file=sys.stderr)
            continue
        print(
            f'OK {name}: {program.id}, {len(program.phases)} phases, {_minutes(program.duration_s)}'
        )
    return 1 if failed else 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from backhug_programs.preview import render_preview

    program = find_program(args.name)
    compiled = compile_program(
        program,
        _profile(args.height, args.c7, args.max_force, args.weight),
        args.intensity,
        max_force_rate_n_s=args.max_force_rate,
    )
    out = Path(args.out)
    render_preview(compiled, out)
    print(f'wrote {out} ({program.id}, {args.height:g} m, intensity {args.intensity:g})')
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by ``backhug programs``)."""
    parser = argparse.ArgumentParser(
        prog='backhug programs',
        description='List, show, validate and preview BackHug treatment programs.',
    )
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('list', help='list the library programs').set_defaults(func=_cmd_list)
    show = sub.add_parser('show', help='phases of a program, placed on a user')
    show.add_argument('name', help='library id or program file')
    show.add_argument('--height', type=float, default=1.75, help='user height, m (1.2–2.2)')
    show.add_argument('--weight', type=float, default=0.0, help='user weight, kg (0 = unknown)')
    show.set_defaults(func=_cmd_show)
    validate = sub.add_parser('validate', help='check program files; exit 1 on any error')
    validate.add_argument('files', nargs='+', metavar='FILE', help='program files or library ids')
    validate.set_defaults(func=_cmd_validate)
    preview = sub.add_parser('preview', help='draw the forces of a program as a PNG')
    preview.add_argument('name', help='library id or program file')
    preview.add_argument('--height', type=float, default=1.75, help='user height, m (1.2–2.2)')
    preview.add_argument('--intensity', type=float, default=0.6, help='0..1 (default 0.6)')
    preview.add_argument('--c7', type=float, default=None, help='measured C7 from row 1, m')
    preview.add_argument('--max-force', type=float, default=0.0, help='personal cap, N (0=none)')
    preview.add_argument('--weight', type=float, default=0.0, help='user weight, kg (0=unknown)')
    preview.add_argument('--out', default='preview.png', help='PNG file to write')
    preview.set_defaults(func=_cmd_preview)
    for command in (validate, preview):
        command.add_argument(
            '--max-force-rate',
            type=float,
            default=DEFAULT_MAX_FORCE_RATE_N_S,
            help=f'force-rate limit, N/s (default {DEFAULT_MAX_FORCE_RATE_N_S:g})',
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``backhug programs`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ProgramError as error:
        print(f'error:\n{error}', file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
