"""Scan history in a local SQLite database, keyed by user and time.

Treatment never waits for the history: a locked database gives up after a short timeout and a
corrupt one is moved aside (kept for recovery) and started afresh; either way the caller is told and
the scan stays in the session folder and recording. Each scan is written in one transaction with
``synchronous=FULL`` in WAL mode, so a process killed mid-write leaves a readable database without
that scan at worst.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from backhug_programs.spinemap.model import SpineMapResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    stamp TEXT NOT NULL,
    kind TEXT NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    complete INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scans_by_user ON scans (user_id, stamp);
"""


class HistoryError(RuntimeError):
    """The history database cannot be used now (locked, unreadable); the message says why."""


def default_database_path() -> Path:
    """The per-user default: <user data dir>/backhug/history.sqlite."""
    from platformdirs import user_data_path

    return user_data_path('backhug') / 'history.sqlite'


@dataclass
class HistoryEntry:
    """One stored scan."""

    user_id: str
    stamp: str
    kind: str
    session: str
    scan: SpineMapResult


class HistoryStore:
    """The SQLite scan history at ``path`` (created on first use)."""

    def __init__(self, path: Path | str | None = None, timeout_s: float = 2.0) -> None:
        self.path = Path(path) if path else default_database_path()
        self.timeout_s = timeout_s

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self.timeout_s)
        try:
            connection.execute('PRAGMA journal_mode=WAL')
            connection.execute('PRAGMA synchronous=FULL')
            connection.executescript(SCHEMA)
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection

    def _quarantine(self, error: Exception) -> Path:
        """Move a corrupt database (and its WAL files) aside; return where it went."""
        aside = self.path.with_name(f'{self.path.name}.corrupt-{int(time.time())}')
        self.path.rename(aside)
        for suffix in ('-wal', '-shm'):
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                extra.rename(aside.with_name(aside.name + suffix))
        return aside

    def add(self, scan: SpineMapResult, kind: str, session: str = '') -> str:
        """Store a scan; returns a note ('' or what was repaired). Raises HistoryError."""
        note = ''
        for attempt in range(2):
            try:
                connection = self._connect()
                try:
                    with connection:
                        connection.execute(
                            'INSERT INTO scans (user_id, stamp, kind, session, complete, data) '
                            'VALUES (?, ?, ?, ?, ?, ?)',
                            (
                                scan.user_id,
                                scan.stamp,
                                kind,
                                session,
                                int(scan.complete),
                                json.dumps(scan.to_dict()),
                            ),
                        )
                finally:
                    connection.close()
                return note
            except sqlite3.OperationalError as error:
                if 'locked' in str(error) or 'busy' in str(error):
                    raise HistoryError(
                        f'history database {self.path} is locked: {error}'
                    ) from error
                if attempt == 0 and self.path.exists():
                    aside = self._quarantine(error)
                    note = f'history database was unreadable ({error}); moved to {aside}'
                    continue
                raise HistoryError(f'history database {self.path}: {error}') from error
            except sqlite3.DatabaseError as error:
                if attempt == 0 and self.path.exists():
                    aside = self._quarantine(error)
                    note = f'history database was corrupt ({error}); moved to {aside}'
                    continue
                raise HistoryError(f'history database {self.path}: {error}') from error
        raise HistoryError(f'history database {self.path} could not be repaired')

    def entries(self, user_id: str) -> list[HistoryEntry]:
        """Every stored scan of ``user_id``, oldest first. Raises HistoryError."""
        if not self.path.exists():
            return []
        try:
            connection = self._connect()
            try:
                rows = connection.execute(
                    'SELECT user_id, stamp, kind, session, data FROM scans '
                    'WHERE user_id = ? ORDER BY stamp, id',
                    (user_id,),
                ).fetchall()
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            raise HistoryError(f'history database {self.path}: {error}') from error
        return [
            HistoryEntry(user, stamp, kind, session, SpineMapResult.from_dict(json.loads(data)))
            for user, stamp, kind, session, data in rows
        ]


def record_scan_safely(
    store: HistoryStore, scan: SpineMapResult, kind: str, session: str = ''
) -> tuple[bool, str]:
    """Store a scan without ever raising: (stored, message for the log)."""
    try:
        note = store.add(scan, kind, session)
    except HistoryError as error:
        return False, f'{error}; the scan is kept in the session folder and recording'
    return True, note
