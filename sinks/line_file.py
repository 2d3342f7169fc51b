"""An append-only file of whole lines: an append lands whole or leaves the file as it was.

Hand-written because no library offers "whole lines or nothing": a buffered Python file leaves part
of a failed write in the file and part in its buffer, so the retry lands after a torn line. Here an
append is ``os.write`` on an ``O_APPEND`` descriptor, cut back with ``os.ftruncate`` if it fails,
under an ``flock`` so that two processes (the relay and ``replay``) never interleave.
``read_lines`` reads such a file back, rotated and compressed (``.gz``, ``.zst``) or not.
"""

from __future__ import annotations

import fcntl
import gzip
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final

import structlog
import zstandard

_TAIL_CHUNK: Final = 8192

log = structlog.get_logger("relay.line_file")


class LineFile:
    """A file of ``b"\\n"``-terminated lines, opened for appending.

    Opening cuts a torn tail (bytes after the last newline, left by a crash during a write: they
    were never acknowledged, the spool sends them again); ``cut_at_open`` says how many bytes.
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        # (size to cut back to, size with the torn bytes) of an append whose cut-back failed.
        self._owed_cut: tuple[int, int] | None = None
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            with self._locked():
                self.cut_at_open = self._cut_torn_tail()
        except OSError:
            os.close(self._fd)
            raise
        if self.cut_at_open:
            log.warning("torn_line_cut", path=str(path), bytes_cut=self.cut_at_open)

    @property
    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        """Write ``data`` (whole lines) and fsync; on ``OSError`` undo it all, then raise."""
        if not data:
            return
        if not data.endswith(b"\n"):
            raise ValueError("LineFile.append takes whole lines: data must end with b'\\n'")
        with self._locked():
            self._pay_owed_cut()
            self._write_or_cut_back(data, os.fstat(self._fd).st_size)

    def close(self) -> None:
        """Close; a cut-back still owed is tried first (``OSError`` if it fails, closed anyway)."""
        if self._fd < 0:
            return
        try:
            with self._locked():
                self._pay_owed_cut()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LineFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write_or_cut_back(self, data: bytes, size_before: int) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
            self._sync()
        except OSError:
            self._cut_back(size_before, size_before + written)
            raise

    def _cut_back(self, size_before: int, size_torn: int) -> None:
        try:
            os.ftruncate(self._fd, size_before)
        except OSError:
            self._owed_cut = (size_before, size_torn)

    def _pay_owed_cut(self) -> None:
        """Cut back a failed append whose cut-back failed; ``OSError`` if it still cannot."""
        if self._owed_cut is None:
            return
        size_before, size_torn = self._owed_cut
        # Another size means another process wrote since: cutting back would drop its lines.
        if os.fstat(self._fd).st_size == size_torn:
            os.ftruncate(self._fd, size_before)
        self._owed_cut = None

    def _cut_torn_tail(self) -> int:
        size = os.fstat(self._fd).st_size
        end = self._end_of_last_line(size)
        if end < size:
            os.ftruncate(self._fd, end)
            self._sync()
        return size - end

    def _end_of_last_line(self, size: int) -> int:
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            newline = os.pread(self._fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
        return 0

    def _sync(self) -> None:
        if self.fsync:
            os.fsync(self._fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a line file, decompressed when its name ends in ``.gz`` or ``.zst``."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            yield from handle
    elif path.suffix == ".zst":
        with open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            pending = b""
            while chunk := reader.read(1 << 20):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                yield from complete
            if pending:
                yield pending
    else:
        with open(path, "rb") as handle:
            yield from handle
