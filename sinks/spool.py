"""The durable spool: every accepted event is on disk before the sender gets its 2xx.

An embedded SQLite database in WAL mode holds the events in arrival order (``seq``) and one cursor
per sink, so each sink progresses on its own and a broken sink never holds another back.

Durability: ``append`` returns only after the transaction holding the events has committed with
``synchronous=FULL``, i.e. after the write-ahead log was fsynced. Concurrent requests share that
fsync (group commit): while one commit is on disk, new appends queue up and go in the next one, so
the cost is one fsync per commit, not per request. A commit also waits ``COMMIT_GATHER_SECONDS``
for the requests already on their way: an fsync costs about 100 µs of CPU, more than a small
request's own work, and single-span requests would otherwise mostly pay one each. Hence an
acknowledged event survives both a process crash (``kill -9``) and an OS crash or power loss.
A sink's cursor moves only after its batch was delivered or dead-lettered, so after a crash
in-flight batches are sent again (at-least-once; ``event_id`` lets receivers drop the duplicates).

Sequence numbers never go backwards, whatever was deleted: rows are deleted only behind every
recorded cursor, so the highest row or cursor is the highest number ever given out, and a mark
beside the database (``spool_files.HighWaterMark``) notices commits the database lost. At open
the spool checks itself (``spool_open``) and says what it found in ``problems``. A sink no longer
enabled keeps its cursor until the relay has dead-lettered what it is still owed (``removed``,
``forget``). While running, the database file is checked before each commit: events are never
acknowledged into a file that was deleted.

All database work runs in one dedicated thread; the event loop only waits on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import orjson

from schemas import LLMEvent
from sinks.spool_files import FileIdentity, HighWaterMark, ProcessLock, can_write
from sinks.spool_open import SpoolProblem, open_checked

# How long a commit waits for more appends to share it: the ack latency it adds.
COMMIT_GATHER_SECONDS: Final = 0.001
# Rows removed at most per cleanup transaction, so one cleanup never holds the thread for long.
_CLEANUP_ROWS: Final = 50_000
# The newest events stay in memory, decoded: sinks that keep up read them from here, without a
# database round trip and without decoding the same JSON once per sink. Bounded in count and in
# bytes of JSON (decoded, an event takes a few times its JSON size).
TAIL_EVENTS: Final = 8192
TAIL_BYTES: Final = 8 * 1024 * 1024
# What a spool must still have room for to call itself ready (/readyz): a typical request.
READY_HEADROOM: Final = 64 * 1024


class SpoolFullError(Exception):
    """The spool cannot take these events (full, unwritable or closing): ingest must answer 503."""


class Record(NamedTuple):
    seq: int
    received: float  # unix seconds
    body: bytes
    # The decoded event when it is still in the in-memory tail. Shared by every sink: read-only.
    event: LLMEvent | None = None


@dataclass(slots=True)
class _PendingAppend:
    bodies: Sequence[bytes]
    events: Sequence[LLMEvent] | None
    received: float
    size: int
    done: asyncio.Future[None]


class Spool:
    def __init__(self, path: Path, max_bytes: int, sinks: Iterable[str]) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.sinks = tuple(sinks)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._db: sqlite3.Connection | None = None
        self._lock = ProcessLock(path.with_name(path.name + ".lock"))
        self._mark = HighWaterMark(path)
        self._identity: FileIdentity | None = None
        self._pending: list[_PendingAppend] = []
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._acked = asyncio.Event()
        self._new_data: dict[str, asyncio.Event] = {name: asyncio.Event() for name in self.sinks}
        self._tail: collections.deque[Record] = collections.deque()
        self._tail_bytes = 0
        # Every cursor in the database: the enabled sinks', and removed sinks' until forgotten.
        self.cursors: dict[str, int] = {}
        self.last_seq = 0
        self.stored_bytes = 0
        self._closed = False
        # Sinks with a cursor in the database that are no longer enabled: what they are still owed.
        self.removed: dict[str, int] = {}
        # What the open found wrong, and what it did about it.
        self.problems: list[SpoolProblem] = []
        # Why the last commit failed, until one succeeds or the disk takes writes again.
        self.write_error: str | None = None
        # Sinks whose cursor moved in memory but could not be recorded yet.
        self._unrecorded: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the spool; raises ``SpoolLockedError`` if another process has it."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open)
        self._committer = asyncio.create_task(self._commit_loop(), name="spool-commit")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            opened = open_checked(self.path, self.sinks, self._mark.read())
        except BaseException:
            self._lock.release()
            raise
        self._db = opened.db
        self.last_seq = opened.last_seq
        self.cursors = opened.cursors
        self.removed = opened.removed
        self.problems = opened.problems
        self._cleanup()
        self.stored_bytes = opened.db.execute(
            "SELECT COALESCE(SUM(length(body)), 0) FROM events"
        ).fetchone()[0]
        self._identity = FileIdentity(self.path)
        self._mark.open()
        self._mark.write(self.last_seq)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            self._wakeup.set()
            await self._committer
            self._committer = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_db)
        self._executor.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._mark.close()
        self._lock.release()

    async def check(self) -> SpoolProblem | None:
        """What keeps the spool from storing right now: its file gone, or the disk refusing.

        Not on the spool's thread, which a long cleanup may hold: readiness must answer fast.
        """
        gone = self._identity.problem() if self._identity is not None else None  # one stat
        if gone is not None:
            return SpoolProblem("files_gone", gone)
        error = self.write_error
        if error is not None:
            if not await asyncio.to_thread(can_write, self.path.parent):
                return SpoolProblem("write_failed", error)
            if self.write_error == error:
                self.write_error = None
        if self._unrecorded:
            with contextlib.suppress(sqlite3.Error):  # still refused: tried again next time
                await self.record_cursors()
        return None

    # -- writing ---------------------------------------------------------------------------------

    def has_room(self, size: int) -> bool:
        return self.stored_bytes + self._pending_bytes + size <= self.max_bytes

    @property
    def full(self) -> bool:
        """No room for a typical request (``READY_HEADROOM``): not ready, so that a load balancer
        sends traffic elsewhere before requests are refused. Ingest still takes any request that
        fits (``append`` alone refuses, at RELAY_SPOOL_MAX_BYTES exactly)."""
        return not self.has_room(READY_HEADROOM)

    async def append(
        self, bodies: Sequence[bytes], events: Sequence[LLMEvent] | None = None
    ) -> None:
        """Store events durably; returns once they would survive a crash.

        ``events``, when given, are the decoded ``bodies``; they are kept for the sinks' reads.
        """
        if not bodies:
            return
        if self._closed:
            raise SpoolFullError("the spool is closed (the relay is stopping)")
        size = sum(len(body) for body in bodies)
        if not self.has_room(size):
            raise SpoolFullError(
                f"the spool is full: it holds {self.stored_bytes} bytes of undelivered events and"
                f" these {size} would pass RELAY_SPOOL_MAX_BYTES={self.max_bytes}"
            )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingAppend(bodies, events, time.time(), size, done))
        self._pending_bytes += size
        self._wakeup.set()
        await done

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if not self._closed:
                await asyncio.sleep(COMMIT_GATHER_SECONDS)
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                size = sum(item.size for item in batch)
                try:
                    await loop.run_in_executor(self._executor, self._commit, batch, self.last_seq)
                except Exception as error:  # every waiter must hear of it; nothing was stored
                    self._pending_bytes -= size
                    self.write_error = f"spool write failed: {error}"
                    _answer_appends(batch, SpoolFullError(self.write_error))
                else:
                    self.write_error = None
                    self._remember(batch)
                    self.stored_bytes += size
                    self._pending_bytes -= size
                    _answer_appends(batch, None)
                    for event in self._new_data.values():
                        event.set()
            if self._closed and not self._pending:
                return

    def _remember(self, batch: list[_PendingAppend]) -> None:
        """Number the committed events as ``_commit`` did, and keep the newest in memory."""
        tail = self._tail
        seq = self.last_seq
        for item in batch:
            decoded = item.events if item.events is not None else [None] * len(item.bodies)
            for body, event in zip(item.bodies, decoded, strict=True):
                seq += 1
                tail.append(Record(seq, item.received, body, event))
            self._tail_bytes += item.size
        while tail and (len(tail) > TAIL_EVENTS or self._tail_bytes > TAIL_BYTES):
            self._tail_bytes -= len(tail.popleft().body)
        self.last_seq = seq

    def _commit(self, batch: list[_PendingAppend], last_seq: int) -> None:
        assert self._db is not None
        # Events written into a deleted file would be gone at the next start: refuse them instead.
        gone = self._identity.problem() if self._identity is not None else None
        if gone is not None:
            raise OSError(gone)
        seq = last_seq
        rows = []
        for item in batch:
            for body in item.bodies:
                seq += 1
                rows.append((seq, item.received, body))
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO events VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to tell
                    db.execute("ROLLBACK")
            raise
        self._mark.write(seq)

    # -- reading, per sink -----------------------------------------------------------------------

    def backlog(self, sink: str) -> int:
        return self.last_seq - self.cursors[sink]

    def appended(self, sink: str) -> asyncio.Event:
        """Set whenever new events are committed; the sink's dispatcher clears it to wait."""
        return self._new_data[sink]

    async def read(self, sink: str, limit: int, max_bytes: int) -> list[Record]:
        """The next events for a sink, oldest first: at most ``limit`` and about ``max_bytes``."""
        after = self.cursors[sink]
        tail = self._tail
        if tail and tail[0].seq <= after + 1:
            start = after + 1 - tail[0].seq
            return _bounded(itertools.islice(tail, start, start + limit), max_bytes)
        end = self.last_seq
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(self._executor, self._read, after, limit, max_bytes)
        if not records and after < end:
            # Numbers given out but no longer stored: events reported missing at open.
            await self.ack(sink, end)
        return records

    def _read(self, after: int, limit: int, max_bytes: int) -> list[Record]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT seq, received, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return _bounded((Record(seq, received, body) for seq, received, body in rows), max_bytes)

    async def oldest_pending(self, sink: str) -> float | None:
        """When the oldest event not yet resolved for ``sink`` arrived (unix seconds)."""
        if self.backlog(sink) <= 0:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._oldest, self.cursors[sink])

    def _oldest(self, after: int) -> float | None:
        assert self._db is not None
        row = self._db.execute(
            "SELECT received FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (after,)
        ).fetchone()
        return None if row is None else float(row[0])

    async def ack(self, sink: str, upto: int) -> None:
        """Everything up to ``upto`` is resolved for ``sink``: delivered or dead-lettered.

        The cursor moves in memory at once; if the database cannot record it (a full disk), the
        error is raised and ``record_cursors`` records it later: meanwhile a crash would only send
        these events again.
        """
        loop = asyncio.get_running_loop()
        previous_floor = min(self.cursors.values())
        self.cursors[sink] = upto
        try:
            freed = await loop.run_in_executor(
                self._executor, self._ack, sink, upto, min(self.cursors.values()) > previous_floor
            )
        except Exception:
            self._unrecorded.add(sink)
            raise
        finally:
            self._acked.set()
        self._unrecorded.discard(sink)
        self.stored_bytes -= freed

    async def record_cursors(self) -> None:
        """Record the cursors an ack could not (a full disk then), and free what they allow.

        Without it a sink with nothing more to send would leave its rows pinned, and a full spool
        full, until the next start.
        """
        loop = asyncio.get_running_loop()
        for sink in list(self._unrecorded):
            upto = self.cursors[sink]
            freed = await loop.run_in_executor(self._executor, self._ack, sink, upto, True)
            if self.cursors.get(sink) == upto:
                self._unrecorded.discard(sink)
            self.stored_bytes -= freed

    async def forget(self, sink: str) -> None:
        """Drop a removed sink's cursor once what it was owed is dead-lettered."""
        loop = asyncio.get_running_loop()
        del self.cursors[sink]
        self.removed.pop(sink, None)
        freed = await loop.run_in_executor(self._executor, self._forget, sink)
        self.stored_bytes -= freed

    def _forget(self, sink: str) -> int:
        assert self._db is not None
        self._db.execute("DELETE FROM cursors WHERE sink = ?", (sink,))
        return self._cleanup()

    async def wait_resolved(self, sink: str) -> None:
        """Wait until every event spooled so far is resolved for ``sink``."""
        target = self.last_seq
        while self.cursors[sink] < target:
            self._acked.clear()
            await self._acked.wait()

    def _ack(self, sink: str, upto: int, cleanup: bool) -> int:
        assert self._db is not None
        self._db.execute("UPDATE cursors SET seq = ? WHERE sink = ?", (upto, sink))
        return self._cleanup() if cleanup else 0

    def _cleanup(self) -> int:
        """Delete events every sink is done with; returns the bytes freed."""
        assert self._db is not None
        # The cursors as recorded, not as in memory: a row goes only once every sink's recorded
        # cursor has passed it, so after a crash no cursor points behind a deleted row.
        (floor,) = self._db.execute("SELECT MIN(seq) FROM cursors").fetchone()
        if floor is None:
            return 0
        freed = 0
        while True:
            db = self._db
            db.execute("BEGIN")
            row = db.execute(
                "SELECT MAX(seq), COALESCE(SUM(length(body)), 0) FROM"
                " (SELECT seq, body FROM events WHERE seq <= ? ORDER BY seq LIMIT ?)",
                (floor, _CLEANUP_ROWS),
            ).fetchone()
            upto, size = row
            if upto is None:
                db.execute("COMMIT")
                return freed
            db.execute("DELETE FROM events WHERE seq <= ?", (upto,))
            db.execute("COMMIT")
            freed += int(size)
            if upto >= floor:
                return freed


def decode_records(records: Sequence[Record]) -> tuple[list[LLMEvent], list[bytes], list[bytes]]:
    """The records' events and JSON, and the raw bytes of rows that hold no event."""
    events: list[LLMEvent] = []
    encoded: list[bytes] = []
    undecodable: list[bytes] = []
    for record in records:
        event = record.event
        if event is None:
            try:
                event = orjson.loads(record.body)
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                undecodable.append(record.body)
                continue
        events.append(event)
        encoded.append(record.body)
    return events, encoded, undecodable


def _answer_appends(batch: list[_PendingAppend], error: Exception | None) -> None:
    """Answer every append of a commit: stored, or the error that kept it from being stored."""
    for item in batch:
        if not item.done.done():
            if error is None:
                item.done.set_result(None)
            else:
                item.done.set_exception(error)


def _bounded(records: Iterable[Record], max_bytes: int) -> list[Record]:
    """Records in order until ``max_bytes`` would be passed (at least one)."""
    chosen: list[Record] = []
    total = 0
    for record in records:
        if chosen and total + len(record.body) > max_bytes:
            break
        chosen.append(record)
        total += len(record.body)
    return chosen
