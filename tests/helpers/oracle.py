"""The restart/kill oracle's bookkeeping: what the relay acknowledged, and what the sinks hold.

The relay's one promise: an event it answered 2xx to is never lost. It reaches every enabled sink
(at least once), or, when a sink refuses it for good, that sink's dead-letter file. The oracle
checks the promise from outside, as a user could:

- ``Ledger`` records every ingest request the test made and how it ended. Only a 2xx answer
  acknowledges the request's events; a refusal (503 when the spool is full or closing), a
  connection reset by ``kill -9`` or no answer at all leaves them unacknowledged: they may or may
  not be delivered, and both are fine.
- ``Oracle.outcome`` reads what the sinks hold: the file sink's JSON Lines (every worker's file,
  rotated files too), the spans a scripted Tempo peer answered 2xx to, and the dead-letter files.
- ``Oracle.problems`` compares the two and names, per sink, the acknowledged events that are lost
  (a few ids and the count), duplicates beyond what the crashes can explain, events nobody sent,
  file-sink lines that are not JSON, and requests that got no clear answer.

Events are identified by the OTLP span id the test generates: the file sink keeps it as
``span_id``, the Tempo sink sends it as the span's own id, a dead letter keeps the whole event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import threading
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal

import orjson
import urllib3
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.otlp_peer import OK
from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.relay import RelayProcess
from tests.helpers.scripted_server import Answer, Received, ScriptedServer
from tests.helpers.waiting import eventually

JSON: Final = {"Content-Type": "application/json"}
# An ingest request not answered within this long hung: the relay must always answer.
REQUEST_TIMEOUT: Final = 10.0
EXAMPLES: Final = 5

StopKind = Literal["kill -9", "SIGTERM"]


# -- what was sent and acknowledged --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ingest request and how it ended."""

    cycle: int
    span_ids: tuple[str, ...]
    # The HTTP status; None when there was no answer (refused or reset connection, timeout).
    status: int | None
    # What went wrong: the refusal's text, the exception, or an unexpected partial success.
    error: str = ""
    hung: bool = False

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Ledger:
    """Every ingest request a test made, with its outcome, and every stop of the relay.

    Thread-safe: poster threads record into it while the test kills and restarts the relay.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        # Incremented at each start of the relay; attempts are tagged with it.
        self.cycle = 0
        # (how, worker processes running) for every stop: each may leave one batch per sink and
        # worker delivered but not yet marked done, to be sent again.
        self.stops: list[tuple[StopKind, int]] = []

    def record(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts.append(attempt)

    def note_stop(self, how: StopKind, workers: int = 1) -> None:
        with self._lock:
            self.stops.append((how, workers))

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def acknowledged(self, cycles: Collection[int] | None = None) -> dict[str, Attempt]:
        """Span id -> the request that acknowledged it (optionally only in some cycles)."""
        return {
            span_id: attempt
            for attempt in self.attempts
            if attempt.acknowledged and (cycles is None or attempt.cycle in cycles)
            for span_id in attempt.span_ids
        }

    def sent(self) -> set[str]:
        return {span_id for attempt in self.attempts for span_id in attempt.span_ids}

    def crash_slots(self) -> int:
        """Worker stops: each can leave one in-flight batch per sink to be sent twice."""
        with self._lock:
            return sum(workers for _, workers in self.stops)

    def summary(self) -> str:
        attempts = self.attempts
        acknowledged = [a for a in attempts if a.acknowledged]
        refused = Counter(a.status for a in attempts if a.status is not None and not a.acknowledged)
        unanswered = [a for a in attempts if a.status is None]
        how = Counter(kind for kind, _ in self.stops)
        stops = ", ".join(f"{count} {kind}" for kind, count in sorted(how.items())) or "none"
        refusals = ", ".join(f"{count}x {status}" for status, count in sorted(refused.items()))
        return (
            f"{len(attempts)} requests over {self.cycle} starts (stops: {stops}):"
            f" {len(acknowledged)} acknowledged ({sum(len(a.span_ids) for a in acknowledged)}"
            f" events), refused: {refusals or 'none'}, {len(unanswered)} without an answer"
        )


def post_spans(
    http: urllib3.PoolManager,
    url: str,
    ledger: Ledger,
    count: int,
    *,
    close_connection: bool = False,
    timeout: float = REQUEST_TIMEOUT,
) -> Attempt:
    """POST ``count`` fresh OTLP JSON LLM spans to ``/v1/traces`` and record how it ended.

    ``close_connection`` opens a new connection for the request, so that with several workers
    the kernel spreads requests over them (SO_REUSEPORT hashes connections, not requests).
    """
    body = otlp_json_spans(count)
    ids = tuple(span_ids(body))
    cycle = ledger.cycle
    headers = dict(JSON)
    if close_connection:
        headers["Connection"] = "close"
    try:
        response = http.request(
            "POST", url + "/v1/traces", body=body, headers=headers, timeout=timeout, retries=False
        )
    except urllib3.exceptions.NewConnectionError as error:  # a TimeoutError subclass: first
        attempt = Attempt(cycle, ids, None, repr(error))
    except urllib3.exceptions.TimeoutError as error:
        attempt = Attempt(cycle, ids, None, f"no answer within {timeout}s: {error!r}", hung=True)
    except urllib3.exceptions.HTTPError as error:
        attempt = Attempt(cycle, ids, None, repr(error))
    else:
        text = response.data.decode(errors="replace")
        error_text = "" if 200 <= response.status < 300 else text[:300]
        if 200 <= response.status < 300 and "partialSuccess" in text:
            error_text = f"unexpected partial success: {text[:300]}"
        attempt = Attempt(cycle, ids, response.status, error_text)
    ledger.record(attempt)
    return attempt


def post_until(
    stop: threading.Event,
    url: str,
    ledger: Ledger,
    rng: random.Random,
    *,
    spans: tuple[int, int] = (1, 3),
    pause: tuple[float, float] = (0.0, 0.0),
    max_requests: int = 100,
    close_connection: bool = False,
) -> int:
    """A poster thread: requests of ``spans`` events, ``pause`` apart, until ``stop`` or the cap."""
    http = urllib3.PoolManager(retries=False, maxsize=2)
    sent = 0
    try:
        while not stop.is_set() and sent < max_requests:
            post_spans(http, url, ledger, rng.randint(*spans), close_connection=close_connection)
            sent += 1
            if pause[1] > 0:
                stop.wait(rng.uniform(*pause))
    finally:
        http.clear()
    return sent


async def start_relay(relay: RelayProcess, ledger: Ledger) -> None:
    ledger.cycle += 1
    await asyncio.to_thread(relay.start)


async def stop_relay(relay: RelayProcess, ledger: Ledger, how: StopKind) -> None:
    workers = int(relay.extra_env.get("RELAY_WORKERS", "1"))
    ledger.note_stop(how, workers)
    await asyncio.to_thread(relay.kill if how == "kill -9" else relay.stop)


# -- a Tempo under strain ------------------------------------------------------------------------


class FlakyPeer:
    """A ``ScriptedServer.check`` that answers like a Tempo under strain, at random.

    Some requests get 503, 429 or 502 (retryable: the relay must send them again), some a 200
    that takes a while; the rest the server's default (200).
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        failures: float = 0.25,
        slow: float = 0.1,
        slow_seconds: tuple[float, float] = (0.1, 0.5),
    ) -> None:
        self.rng = rng
        self.failures = failures
        self.slow = slow
        self.slow_seconds = slow_seconds
        self.enabled = True

    def __call__(self, received: Received) -> Answer | None:
        if not self.enabled:
            return None
        roll = self.rng.random()
        if roll < self.failures:
            return Answer(self.rng.choice((503, 429, 502)), b"busy", content_type="text/plain")
        if roll < self.failures + self.slow:
            return replace(OK, delay=self.rng.uniform(*self.slow_seconds))
        return None


def otlp_span_ids(received: Received) -> list[str]:
    """The span ids in one OTLP/HTTP protobuf export (the events' own span ids)."""
    request = ExportTraceServiceRequest.FromString(received.body)
    return [
        span.span_id.hex()
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


class PeerTally:
    """Span ids a scripted OTLP peer answered 2xx to, with counts; reads new answers only."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.accepted: Counter[str] = Counter()
        self.refused = 0
        self._read = 0

    def refresh(self) -> Counter[str]:
        answered = self.server.answered
        while self._read < len(answered):
            received, status = answered[self._read]
            self._read += 1
            if 200 <= status < 300:
                self.accepted.update(otlp_span_ids(received))
            else:
                self.refused += 1
        return self.accepted


# -- what the sinks hold -------------------------------------------------------------------------


def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        return reader.read()
    return data


def _complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for every newline-terminated line: the last one may be in progress."""
    try:
        data = _decompressed(path)
    except FileNotFoundError:  # rotated and compressed meanwhile
        return
    yield from enumerate(data.split(b"\n")[:-1], start=1)


@dataclass(slots=True)
class FileSinkOutput:
    counts: Counter[str] = field(default_factory=Counter)
    # "file:line: text" of every complete line that is not a JSON event.
    corrupt: list[str] = field(default_factory=list)


def read_file_sink(directory: Path, stem: str = "llm-events") -> FileSinkOutput:
    """Span ids in every file-sink file: ``<stem>.jsonl``, each worker's ``<stem>.w<N>.jsonl``
    and rotated, compressed ones."""
    output = FileSinkOutput()
    for path in sorted(directory.glob(f"{stem}*.jsonl*")):
        if path.name.endswith(".partial"):
            continue
        for number, line in _complete_lines(path):
            try:
                event = orjson.loads(line)
                output.counts[str(event["span_id"])] += 1
            except (orjson.JSONDecodeError, KeyError, TypeError):
                text = line[:100].decode(errors="replace")
                output.corrupt.append(f"{path.name}:{number}: {text!r}")
    return output


@dataclass(slots=True)
class DeadLetterOutput:
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    # Lines that are not a dead-lettered event (a raw spool row, or not JSON).
    other: list[str] = field(default_factory=list)


def read_dead_letters(data_dir: Path, sink: str) -> DeadLetterOutput:
    output = DeadLetterOutput()
    path = data_dir / "dead-letter" / f"{sink}.jsonl"
    if not path.exists():
        return output
    for number, line in _complete_lines(path):
        try:
            record = orjson.loads(line)
            span_id = str(record["event"]["span_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            output.other.append(f"{path.name}:{number}: {line[:100].decode(errors='replace')!r}")
            continue
        output.counts[span_id] += 1
        output.reasons[str(record.get("reason"))] += 1
    return output


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the sinks hold at one moment."""

    delivered: Mapping[str, Counter[str]]
    dead_lettered: Mapping[str, DeadLetterOutput]
    corrupt_file_lines: list[str]


# -- the verdict ---------------------------------------------------------------------------------


class Oracle:
    """Compares a ``Ledger`` with what the sinks hold, for one scenario.

    ``sinks`` are the sinks that owe every acknowledged event (``owed`` narrows that per sink,
    e.g. to the events posted while the sink was enabled); ``batch_sizes`` bound the duplicates
    one stop can cause. A sink's dead letters count as resolved unless it is in ``must_deliver``
    (the scenario's sink works, so nothing may end up there).
    """

    def __init__(
        self,
        scenario: str,
        ledger: Ledger,
        data_dir: Path,
        sinks: Collection[str],
        batch_sizes: Mapping[str, int],
        peer: PeerTally | None = None,
        file_dir: Path | None = None,
    ) -> None:
        self.scenario = scenario
        self.ledger = ledger
        self.data_dir = data_dir
        self.sinks = tuple(sinks)
        self.batch_sizes = dict(batch_sizes)
        self.peer = peer
        self.file_dir = file_dir or data_dir
        self.owed: dict[str, set[str]] = {}
        self.must_deliver: set[str] = set()
        # Duplicates the scenario causes on purpose (a replay), per sink.
        self.extra_duplicates: Counter[str] = Counter()
        self.notes: list[str] = []

    def outcome(self) -> Outcome:
        file_output = read_file_sink(self.file_dir)
        delivered: dict[str, Counter[str]] = {}
        for sink in self.sinks:
            if sink == "file":
                delivered[sink] = file_output.counts
            elif self.peer is not None:
                delivered[sink] = Counter(self.peer.refresh())
            else:
                raise AssertionError(f"no peer to read {sink}'s deliveries from")
        dead = {sink: read_dead_letters(self.data_dir, sink) for sink in self.sinks}
        return Outcome(delivered, dead, file_output.corrupt)

    def owed_by(self, sink: str) -> set[str]:
        return self.owed.get(sink, set(self.ledger.acknowledged()))

    def lost(self, outcome: Outcome, sink: str) -> list[str]:
        resolved = set(outcome.delivered[sink])
        if sink not in self.must_deliver:
            resolved |= set(outcome.dead_lettered[sink].counts)
        return sorted(self.owed_by(sink) - resolved)

    def anything_lost(self, outcome: Outcome) -> bool:
        return any(self.lost(outcome, sink) for sink in self.sinks)

    async def settle(self, timeout: float) -> Outcome:
        """Wait until no acknowledged event is missing (or ``timeout``); the outcome then."""
        with contextlib.suppress(AssertionError):
            await eventually(
                lambda: not self.anything_lost(self.outcome()),
                timeout=timeout,
                interval=0.1,
                message="every acknowledged event in every sink",
            )
        return self.outcome()

    def problems(self, outcome: Outcome, step: str = "") -> list[str]:
        where = f"[{self.scenario}{': ' + step if step else ''}]"
        problems: list[str] = []
        acknowledged = self.ledger.acknowledged()
        sent = self.ledger.sent()
        for sink in self.sinks:
            owed = self.owed_by(sink)
            lost = self.lost(outcome, sink)
            if lost:
                cycles = Counter(acknowledged[s].cycle for s in lost if s in acknowledged)
                place = "accepted by the peer" if sink != "file" else "in the file sink's output"
                if sink not in self.must_deliver:
                    place += f" nor in dead-letter/{sink}.jsonl"
                problems.append(
                    f"{where} {sink}: {len(lost)} of {len(owed)} acknowledged events lost (not"
                    f" {place}), e.g. {', '.join(lost[:EXAMPLES])}; acknowledged after start"
                    f" number {_counts(cycles)}"
                )
            delivered = outcome.delivered[sink]
            duplicates = sum(count - 1 for count in delivered.values() if count > 1)
            bound = self.ledger.crash_slots() * self.batch_sizes.get(sink, 0)
            bound += self.extra_duplicates[sink]
            if duplicates > bound:
                twice = [f"{s} x{c}" for s, c in delivered.most_common(EXAMPLES) if c > 1]
                problems.append(
                    f"{where} {sink}: {duplicates} duplicate deliveries, more than the {bound}"
                    f" that {self.ledger.crash_slots()} worker stops x batch size"
                    f" {self.batch_sizes.get(sink, 0)} can explain, e.g. {', '.join(twice)}"
                )
            unknown = sorted(set(delivered) - sent)
            if unknown:
                problems.append(
                    f"{where} {sink}: {len(unknown)} events nobody sent, e.g."
                    f" {', '.join(unknown[:EXAMPLES])}"
                )
            strange = outcome.dead_lettered[sink].other
            if strange:
                problems.append(
                    f"{where} dead-letter/{sink}.jsonl: {len(strange)} lines without an event,"
                    f" e.g. {'; '.join(strange[:EXAMPLES])}"
                )
        if outcome.corrupt_file_lines:
            problems.append(
                f"{where} file sink: {len(outcome.corrupt_file_lines)} complete lines are not a"
                f" JSON event (a torn write with more lines after it), e.g."
                f" {'; '.join(outcome.corrupt_file_lines[:3])}"
            )
        attempts = self.ledger.attempts
        hung = [a for a in attempts if a.hung]
        if hung:
            problems.append(
                f"{where} {len(hung)} requests got no answer within {REQUEST_TIMEOUT}s, e.g."
                f" after start number {hung[0].cycle}: {hung[0].error}"
            )
        odd = [a for a in attempts if a.status is not None and a.status not in (200, 503)]
        odd += [a for a in attempts if a.acknowledged and a.error]
        if odd:
            problems.append(
                f"{where} {len(odd)} requests answered neither a plain 200 nor 503, e.g."
                f" {odd[0].status}: {odd[0].error}"
            )
        if problems:
            problems.append(f"{where} {self.ledger.summary()}")
            problems.extend(f"{where} note: {note}" for note in self.notes)
        return problems

    def describe(self, outcome: Outcome) -> str:
        """One line for the test's output: the ledger, then each sink's deliveries."""
        parts = [self.ledger.summary()]
        for sink in self.sinks:
            delivered = outcome.delivered[sink]
            duplicates = sum(count - 1 for count in delivered.values() if count > 1)
            dead = sum(outcome.dead_lettered[sink].counts.values())
            parts.append(
                f"{sink}: {len(delivered)} events, {duplicates} duplicates, {dead} dead letters"
            )
        return "; ".join(parts + self.notes)

    async def verify(self, timeout: float, step: str = "") -> Outcome:
        """Settle, then fail naming every problem."""
        outcome = await self.settle(timeout)
        problems = self.problems(outcome, step)
        assert not problems, "\n".join(problems)
        return outcome


def _counts(counter: Counter[int]) -> str:
    return ", ".join(f"{key} ({count})" for key, count in sorted(counter.items())) or "?"


def relay_errors(relay: RelayProcess, limit: int = 20) -> list[str]:
    """Error-level lines and tracebacks from the relay's log, for the failure report."""
    found: list[str] = []
    for line in relay.log().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if "Error" in line or "Traceback" in line:
                found.append(line[:300])
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            found.append(line[:300])
    return found[:limit]
