"""Dead letters: events a sink refused for good, kept with the reason so they can be replayed.

One JSON Lines file per sink, ``<data dir>/dead-letter/<sink>.jsonl``, with two shapes of line:

- ``{"dead_lettered_at", "sink", "reason", "error", "event"}``: an event the sink refused.
  ``read_replay_lines`` reads these lines back (as well as file-sink lines) for
  ``llm-broadcast-relay replay``.
- ``{"dead_lettered_at", "sink", "reason", "error", "raw_base64"}``: a spool row that is not even
  JSON, kept byte for byte (base64) for a person to inspect.

Lines are appended through ``sinks.line_file``: a batch lands whole or, on a full disk, not at all.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from foundation.times import rfc3339_ns
from schemas import LLMEvent
from sinks.line_file import LineFile, read_lines
from sinks.outcomes import DeadLettered, DeliveryBook


class DeadLetters:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dead-letters")

    def path(self, sink: str) -> Path:
        return self.directory / f"{sink}.jsonl"

    async def write_and_book(
        self,
        book: DeliveryBook,
        reason: str,
        error: str,
        events: Sequence[LLMEvent] = (),
        undecodable: Sequence[bytes] = (),
    ) -> None:
        """Dead-letter a sink's events (and spool rows that hold none, under ``undecodable``),
        then book each write once in the sink's status, metrics and log."""
        path = str(self.path(book.sink))
        if events:
            await self.write(book.sink, events, reason, error)
            book.book(DeadLettered(len(events), reason, error, path))
        if undecodable:
            await self.write_undecodable(book.sink, undecodable, "undecodable", error)
            book.book(DeadLettered(len(undecodable), "undecodable", error, path))

    async def write(self, sink: str, events: Sequence[LLMEvent], reason: str, error: str) -> None:
        await self._write_lines(sink, reason, error, ({"event": event} for event in events))

    async def write_undecodable(
        self, sink: str, bodies: Sequence[bytes], reason: str, error: str
    ) -> None:
        """Dead-letter spool rows that are not JSON, each kept as the base64 of its exact bytes."""
        raw = ({"raw_base64": base64.b64encode(body).decode("ascii")} for body in bodies)
        await self._write_lines(sink, reason, error, raw)

    async def _write_lines(
        self, sink: str, reason: str, error: str, payloads: Iterable[Mapping[str, Any]]
    ) -> None:
        header = {"dead_lettered_at": rfc3339_ns(time.time_ns()), "sink": sink}
        header |= {"reason": reason, "error": error}
        data = b"".join(orjson.dumps(header | dict(payload)) + b"\n" for payload in payloads)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._append, sink, data)

    def _append(self, sink: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Opened for each write, as dead letters are rare: a file an operator moved away after a
        # replay is created afresh, and a line torn by a crash is cut before anything follows it.
        with LineFile(self.path(sink)) as line_file:
            line_file.append(data)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class ReplayLine(NamedTuple):
    """One non-blank line of a dead-letter or file-sink file, as ``replay`` reads it."""

    number: int
    sink: str | None  # the sink that dead-lettered the event; None for a file-sink line
    event: dict[str, Any] | None  # None when the line holds nothing to send
    problem: str = ""  # why it holds nothing to send


def read_replay_lines(path: Path) -> Iterator[ReplayLine]:
    """Every non-blank line of a dead-letter file or a file-sink file (compressed rotations
    included): the event to send, or why there is none. Reading errors are raised."""
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield ReplayLine(number, None, None, "not JSON (cut short by a crash, or damaged)")
            continue
        if not isinstance(record, dict):
            yield ReplayLine(number, None, None, "not a JSON object")
            continue
        sink = record.get("sink")
        sink = sink if isinstance(sink, str) else None
        if "raw_base64" in record:
            # A spooled row that held no event: kept for a person to read, nothing to send.
            yield ReplayLine(number, sink, None, "an undecodable spool row (raw_base64)")
        elif "event" in record or "dead_lettered_at" in record:
            event = record.get("event")
            if isinstance(event, dict):
                yield ReplayLine(number, sink, event)
            else:
                yield ReplayLine(number, sink, None, "a dead-letter record without an event")
        else:
            yield ReplayLine(number, None, record)


def replay_records(path: Path) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(the sink that dead-lettered it, or None, event) for each line of a dead-letter file or a
    file-sink file; a line without an event is skipped with a word on stderr."""
    for line in read_replay_lines(path):
        if line.event is None:
            print(f"skipping line {line.number} of {path}: {line.problem}", file=sys.stderr)
        else:
            yield line.sink, line.event
