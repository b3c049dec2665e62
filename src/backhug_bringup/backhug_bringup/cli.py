"""The ``backhug`` command: one entry point for everything a user or developer does.

    backhug run [--program demo] [--intensity 0.6] [--height 1.75] [--speed 2] [--scan] ...
    backhug programs list | show NAME | validate FILE... | preview NAME --out FILE.png
    backhug report SESSION.mcap [--out report.png]
    backhug spinemap SESSION_DIR
    backhug history --user NAME [--out FILE.png]

Each sub-command is the ``main(argv)`` of the module that owns it; this file only dispatches.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _run(argv: list[str]) -> int:
    from backhug_bringup.run import main

    return main(argv)


def _programs(argv: list[str]) -> int:
    from backhug_programs.cli import main

    return main(argv)


def _report(argv: list[str]) -> int:
    from backhug_bringup.report import main

    return main(argv)


def _spinemap(argv: list[str]) -> int:
    from backhug_programs.spinemap.cli import spinemap_main

    return spinemap_main(argv)


def _history(argv: list[str]) -> int:
    from backhug_programs.spinemap.cli import history_main

    return history_main(argv)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    'run': (_run, 'bring the system up (simulated device by default) and run a program'),
    'programs': (_programs, 'list, show, validate and preview treatment programs'),
    'report': (_report, 'render the report of a session recording (MCAP)'),
    'spinemap': (_spinemap, 'render the spine map of a session folder again'),
    'history': (_history, "plot a user's spine maps across sessions"),
}


def usage() -> str:
    lines = ['usage: backhug COMMAND [ARGS...]', '', 'commands:']
    lines += [f'  {name:<10} {text}' for name, (_, text) in COMMANDS.items()]
    lines += ['', "'backhug COMMAND --help' for a command's options"]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f'backhug: unknown command {command!r}\n\n{usage()}', file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest)


if __name__ == '__main__':
    sys.exit(main())
