"""`backhug spinemap SESSION_DIR` and `backhug history --user NAME`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backhug_programs.spinemap.history import HistoryError, HistoryStore
from backhug_programs.spinemap.report import read_json, render_history_png, render_png, summary_text


def spinemap_main(argv: list[str] | None = None) -> int:
    """Render a session's spine map again (spinemap.png) and print its summary."""
    parser = argparse.ArgumentParser(
        prog='backhug spinemap', description='Render the spine map of a session folder again.'
    )
    parser.add_argument('session_dir', type=Path, help='session folder holding spinemap.json')
    parser.add_argument('--out', type=Path, help='PNG to write (default: SESSION_DIR/spinemap.png)')
    args = parser.parse_args(argv)
    try:
        before, after = read_json(args.session_dir)
    except ValueError as error:
        print(f'backhug spinemap: {error}', file=sys.stderr)
        return 1
    out = args.out or (args.session_dir if args.session_dir.is_dir() else args.session_dir.parent)
    path = render_png(out, before, after)
    print(summary_text(before, after))
    print(f'spine map written to {path}')
    return 0


def history_main(argv: list[str] | None = None) -> int:
    """Show a user's stored scans as a table and a trend plot."""
    parser = argparse.ArgumentParser(
        prog='backhug history', description="Show a user's spine-map history."
    )
    parser.add_argument('--user', required=True, help='user id the scans were stored under')
    parser.add_argument('--db', type=Path, help='history database (default: per-user data dir)')
    parser.add_argument('--out', type=Path, default=Path('history.png'), help='trend plot PNG')
    args = parser.parse_args(argv)
    store = HistoryStore(args.db)
    try:
        entries = store.entries(args.user)
    except HistoryError as error:
        print(f'backhug history: {error}', file=sys.stderr)
        return 1
    if not entries:
        print(f'backhug history: no scans stored for user {args.user!r} in {store.path}')
        return 1
    print(f'{"time":26} {"kind":7} {"complete":8} stiffest levels')
    for entry in entries:
        stiffest = ', '.join(entry.scan.stiffest())
        print(f'{entry.stamp:26} {entry.kind:7} {entry.scan.complete!s:8} {stiffest}')
    path = render_history_png(entries, args.out, args.user)
    print(f'trend plot written to {path}')
    return 0
