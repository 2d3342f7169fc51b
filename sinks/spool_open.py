"""What a spool finds when it opens, and what it does about it.

The database is checked page by page (SQLite's ``quick_check``), so that damage is found at start,
not when a sink's dispatcher reaches the damaged page; a database SQLite cannot read is moved aside
(``spool_files.move_aside``) and a fresh one started, since refusing traffic would lose every
gateway's events. Then the numbering is taken as the highest of everything the spool remembers
(so it never goes backwards) and each cursor is checked against the rows it is owed. Every finding
is a ``SpoolProblem`` for the relay to log, count and show.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sinks.spool_files import move_aside

# SQLite's primary result codes for a damaged file (https://www.sqlite.org/rescode.html).
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


@dataclass(frozen=True, slots=True)
class SpoolProblem:
    """Something wrong with the spool, found at open or while running, for logs and status."""

    kind: str  # damaged, events_missing, write_failed, files_gone
    message: str


@dataclass(slots=True)
class OpenedSpool:
    db: sqlite3.Connection
    last_seq: int
    # Every cursor in the database: the enabled sinks', and removed sinks' until forgotten.
    cursors: dict[str, int] = field(default_factory=dict)
    # Sinks with a cursor that are no longer enabled, and how many stored events they are owed.
    removed: dict[str, int] = field(default_factory=dict)
    problems: list[SpoolProblem] = field(default_factory=list)


def open_checked(path: Path, sinks: Sequence[str], mark: int) -> OpenedSpool:
    """Open the spool at ``path`` for ``sinks``; ``mark`` is the high-water mark kept beside it.

    Only damage moves the database aside: any other failure to open it (a full disk, too many
    open files, permissions) is raised, and the spool stays where it is for the next start.
    """
    problems: list[SpoolProblem] = []
    try:
        db = connect_checked(path)
    except sqlite3.DatabaseError as error:
        if not is_damage(error):
            raise
        moved = move_aside(path)
        problems.append(
            SpoolProblem(
                "damaged",
                f"{path} cannot be read ({error}): moved to {moved} for recovery and started a"
                " fresh spool; the events it held are not delivered",
            )
        )
        try:
            db = connect_checked(path)
        except sqlite3.Error as again:
            raise sqlite3.OperationalError(f"{problems[0].message}; then: {again}") from again
        mark = 0  # the fresh spool is empty by design: nothing is missing from it
    try:
        opened = _load(db, path, sinks, mark)
    except BaseException:
        db.close()
        raise
    opened.problems[:0] = problems
    return opened


class DamagedError(sqlite3.DatabaseError):
    """SQLite's integrity check found the database damaged."""


def is_damage(error: sqlite3.DatabaseError) -> bool:
    """Whether the file itself is bad (corrupt, or not a database), not the disk or the process."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, DamagedError) or (
        code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    )


def connect_checked(path: Path) -> sqlite3.Connection:
    """Open the database, check it page by page, and create what is missing."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        verdict = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
        if verdict != ["ok"]:
            raise DamagedError("integrity check failed: " + "; ".join(verdict))
        db.execute(
            "CREATE TABLE IF NOT EXISTS events"
            " (seq INTEGER PRIMARY KEY, received REAL NOT NULL, body BLOB NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
        )
    except BaseException:
        db.close()
        raise
    return db


def _load(db: sqlite3.Connection, path: Path, sinks: Sequence[str], mark: int) -> OpenedSpool:
    """Numbering, cursors and removed sinks from the database, checked against each other."""
    # Rows go only once every recorded cursor has passed them (``Spool._cleanup``): the highest
    # row or cursor is the highest number the database ever gave out.
    (stored,) = db.execute(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM events), 0),"
        " COALESCE((SELECT MAX(seq) FROM cursors), 0))"
    ).fetchone()
    opened = OpenedSpool(db, max(stored, mark))
    if mark > stored:  # the mark knows of commits the database lost
        opened.problems.append(
            SpoolProblem(
                "events_missing",
                f"{path} lost its last commits, events {stored + 1} to {mark} (its write-ahead"
                " log was deleted, truncated or damaged): those of them not yet delivered to"
                " every sink are missing",
            )
        )
    known = dict(db.execute("SELECT sink, seq FROM cursors").fetchall())
    db.execute("BEGIN")
    for name in sinks:
        # A newly enabled sink starts with what arrives from now on; `replay` sends history.
        opened.cursors[name] = known.pop(name, opened.last_seq)
        db.execute("INSERT OR IGNORE INTO cursors VALUES (?, ?)", (name, opened.cursors[name]))
    db.execute("COMMIT")
    opened.cursors.update(known)
    for name, seq in opened.cursors.items():
        (present,) = db.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (seq,)).fetchone()
        if name in known:
            opened.removed[name] = present
        missing = stored - seq - present
        if missing > 0:
            opened.problems.append(
                SpoolProblem(
                    "events_missing",
                    f"{missing} acknowledged events owed to sink {name} are missing from {path}"
                    " (deleted behind the relay's back)",
                )
            )
    return opened
