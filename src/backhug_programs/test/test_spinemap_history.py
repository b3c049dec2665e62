"""Scan history: round trip, trend, and survival of corruption, locks and a killed writer."""

from __future__ import annotations

import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from backhug_programs.spinemap.analysis import FingerResult, SegmentValue
from backhug_programs.spinemap.cli import history_main, spinemap_main
from backhug_programs.spinemap.history import HistoryStore, record_scan_safely
from backhug_programs.spinemap.model import SpineMapResult, segment_changes
from backhug_programs.spinemap.report import read_json, render_png, summary_text, write_json


def make_scan(stamp: str, scale: float = 1.0, user: str = 'ada', complete: bool = True):
    fingers = [
        FingerResult(
            f'finger_{s}_{r:02d}_joint', s, r, 0.035 * (r - 1), 0.012, 3.0 * r * scale, 0.1, 3
        )
        for s in 'lr'
        for r in (1, 2, 3)
    ]
    segments = [
        SegmentValue(f'T{r}', 0.035 * (r - 1), 3.0 * r * scale, 3.1 * r * scale, 0.1, 0.1)
        for r in (1, 2, 3)
    ]
    return SpineMapResult(
        user, stamp, complete, '' if complete else 'fault', 20, 60, fingers, segments
    )


def test_json_round_trip_keeps_values_and_nan(tmp_path):
    before = make_scan('2026-11-24T10:00:00Z')
    before.fingers[0].stiffness_n_per_mm = math.nan
    after = make_scan('2026-11-24T10:30:00Z', scale=0.8)
    write_json(tmp_path, before, after)
    assert '"NaN"' not in (tmp_path / 'spinemap.json').read_text()
    b, a = read_json(tmp_path)
    assert math.isnan(b.fingers[0].stiffness_n_per_mm)
    assert a.segments[2].stiffness_left_n_per_mm == pytest.approx(9.0 * 0.8)
    changes = segment_changes(b, a)
    assert all(c['change_percent'] == pytest.approx(-20.0) for c in changes)
    assert b.stiffest() == ['T3', 'T2', 'T1']


def test_report_png_and_summary(tmp_path):
    before = make_scan('2026-11-24T10:00:00Z')
    after = make_scan('2026-11-24T10:30:00Z', scale=0.9, complete=False)
    png = render_png(tmp_path, before, after)
    assert png.stat().st_size > 10_000
    text = summary_text(before, after)
    assert 'INCOMPLETE (fault)' in text and 'stiffest: T3, T2, T1' in text and '-10.0 %' in text


def test_spinemap_command_renders_again(tmp_path, capsys):
    write_json(tmp_path, make_scan('2026-11-24T10:00:00Z'), None)
    assert spinemap_main([str(tmp_path)]) == 0
    assert (tmp_path / 'spinemap.png').is_file()
    assert 'stiffest: T3' in capsys.readouterr().out
    assert spinemap_main([str(tmp_path / 'missing')]) == 1


def test_history_stores_and_plots_the_trend(tmp_path, capsys):
    store = HistoryStore(tmp_path / 'h.sqlite')
    for day, scale in ((1, 1.0), (2, 0.9), (3, 0.8)):
        assert record_scan_safely(store, make_scan(f'2026-11-0{day}T10:00:00Z', scale), 'before')[0]
    store.add(make_scan('2026-11-04T10:00:00Z', user='bob'), 'after')
    entries = store.entries('ada')
    assert [e.stamp[:10] for e in entries] == ['2026-11-01', '2026-11-02', '2026-11-03']
    out = tmp_path / 'trend.png'
    assert history_main(['--user', 'ada', '--db', str(store.path), '--out', str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert history_main(['--user', 'nobody', '--db', str(store.path), '--out', str(out)]) == 1


def test_corrupt_database_is_moved_aside_and_the_new_scan_kept(tmp_path):
    path = tmp_path / 'h.sqlite'
    path.write_bytes(b'this is not a database' * 100)
    ok, message = record_scan_safely(
        HistoryStore(path), make_scan('2026-11-24T10:00:00Z'), 'before'
    )
    assert ok and 'moved to' in message
    assert len(HistoryStore(path).entries('ada')) == 1
    assert list(tmp_path.glob('h.sqlite.corrupt-*'))


def test_locked_database_gives_up_quickly_without_raising(tmp_path):
    path = tmp_path / 'h.sqlite'
    HistoryStore(path).add(make_scan('2026-11-24T09:00:00Z'), 'before')
    blocker = sqlite3.connect(path)
    blocker.execute('BEGIN EXCLUSIVE')
    try:
        start = time.monotonic()
        ok, message = record_scan_safely(
            HistoryStore(path, timeout_s=0.2), make_scan('2026-11-24T10:00:00Z'), 'after'
        )
        assert not ok and 'locked' in message and 'kept in the session folder' in message
        assert time.monotonic() - start < 5.0
    finally:
        blocker.rollback()
        blocker.close()


def test_history_survives_a_writer_killed_mid_write(tmp_path):
    path = tmp_path / 'h.sqlite'
    writer = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_spinemap_history import make_scan
        from backhug_programs.spinemap.history import HistoryStore
        store = HistoryStore({str(path)!r})
        i = 0
        while True:
            store.add(make_scan(f'2026-11-24T10:{{i // 60 % 60:02d}}:{{i % 60:02d}}Z'), 'before')
            i += 1
            print(i, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, '-c', writer], stdout=subprocess.PIPE, text=True)
    written = 0
    while written < 20:
        line = proc.stdout.readline()
        assert line, 'writer died early'
        written = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    connection = sqlite3.connect(path)
    assert connection.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    connection.close()
    stored = len(HistoryStore(path).entries('ada'))
    # Everything reported as written is there; at most the scan in flight is missing or extra.
    assert written <= stored <= written + 1
