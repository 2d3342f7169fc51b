"""The files around a spool database: its lock, its high-water mark, and a damaged copy moved aside.

SQLite keeps the events; these few things it cannot know about are kept beside it:

- ``<db>.lock``: an exclusive ``flock`` (``ProcessLock``) held while a spool is open, so that two
  relays (or two workers) never write one spool. The kernel drops it when the process dies,
  ``kill -9`` included.
- ``<db>.seq``: the highest sequence number ever committed, rewritten in place after each commit
  without an fsync (a ``pwrite`` of 16 bytes; a process crash keeps it, an OS crash may keep an
  older value). At the next open it is compared with what the database holds: if the database
  holds less, committed transactions were lost with a deleted, truncated or damaged write-ahead
  log, which SQLite itself cannot notice. The mark can only lag, never lead, so it never raises a
  false alarm.
- ``damaged/``: a database that SQLite cannot read is moved there with its WAL, kept for recovery,
  and the relay starts a fresh one instead of refusing traffic.

Hand-written because no library does these SQLite-specific chores; each is a few system calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Final

# The SQLite files of one database: the database, its write-ahead log and its shared memory.
SQLITE_SUFFIXES: Final = ("", "-wal", "-shm")
_MARK = struct.Struct("<QII")  # sequence number, crc32 of it, a constant to tell it from zeros
_MARK_MAGIC: Final = 0x5E0A11CE


class SpoolLockedError(Exception):
    """Another process has this spool open: two relays must not share one data directory."""


class ProcessLock:
    """An exclusive, non-blocking ``flock`` on a lock file, held until ``release``.

    A spool holds ``<db>.lock`` while open; ``serve`` holds ``<data dir>/relay.lock`` so that a
    second relay is refused before it opens anything.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SpoolLockedError(
                f"{self.path.parent} is in use by another relay process (pid {holder}):"
                " two relays cannot share one RELAY_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


class HighWaterMark:
    """``<db>.seq``: the highest sequence number committed, as far as this process knows."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".seq")
        self._fd: int | None = None

    def read(self) -> int:
        """The stored mark; 0 when there is none or it is unreadable (torn by an OS crash)."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return 0
        if len(data) != _MARK.size:
            return 0
        seq, crc, magic = _MARK.unpack(data)
        if magic != _MARK_MAGIC or crc != zlib.crc32(seq.to_bytes(8, "little")):
            return 0
        return int(seq)

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)

    def write(self, seq: int) -> None:
        """Record ``seq``; never raises: the commit it follows has happened whatever this does."""
        if self._fd is None:
            return
        mark = _MARK.pack(seq, zlib.crc32(seq.to_bytes(8, "little")), _MARK_MAGIC)
        with contextlib.suppress(OSError):  # a stale mark only makes the check at open weaker
            os.pwrite(self._fd, mark, 0)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class FileIdentity:
    """Which file a path named when the spool opened, to notice it deleted or replaced later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        stat = path.stat()
        self._identity = (stat.st_dev, stat.st_ino)

    def problem(self) -> str | None:
        """Why the path no longer names the open database, or None while it does."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return f"{self.path} was deleted while the relay was running"
        except OSError as error:
            return f"{self.path} cannot be read: {error.strerror}"
        if (stat.st_dev, stat.st_ino) != self._identity:
            return f"{self.path} was replaced while the relay was running"
        return None


def move_aside(db_path: Path) -> Path:
    """Move a damaged database and its WAL into ``damaged/``; returns the database's new path."""
    target_dir = db_path.parent / "damaged"
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = target_dir / f"{db_path.stem}-{stamp}{db_path.suffix}"
    for suffix in SQLITE_SUFFIXES:
        source = db_path.with_name(db_path.name + suffix)
        if source.exists():
            os.replace(source, moved.with_name(moved.name + suffix))
    return moved


def remove_spool_files(db_path: Path) -> None:
    """Delete a drained spool: the database, its WAL and shared memory, its mark and lock."""
    for suffix in (*SQLITE_SUFFIXES, ".seq", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            db_path.with_name(db_path.name + suffix).unlink()


def can_write(directory: Path) -> bool:
    """Whether the disk takes a small fsynced write again (after "database or disk is full")."""
    probe = directory / f".relay-write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 65536)
            handle.flush()
            os.fsync(handle.fileno())
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
