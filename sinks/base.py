"""The one contract every sink implements.

A sink only encodes and sends one batch, then says how it went: return normally (optionally with a
``SendResult`` counting spans the peer refused in a partial success), or raise one of the errors
below. Batching, retries, backoff, Retry-After, 413 splitting, dead letters and metrics live in
``sinks.dispatcher`` and wrap every sink the same way, as the OpenTelemetry Collector's
exporterhelper wraps every exporter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload, runtime_checkable

import orjson

from schemas import LLMEvent
from sinks.selection import Selection


class SinkError(Exception):
    """Base of the failures a sink reports. ``str(error)`` is shown to operators: no secrets."""


class RetryableError(SinkError):
    """The peer may take the same batch later (429, 502/503/504, network errors, timeouts)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MisconfiguredError(RetryableError):
    """The peer refuses every batch alike (401/403, an unknown endpoint): a setting to fix.

    Not the events' fault, so nothing is dead-lettered for it at once: the batch is retried with
    backoff like any retryable failure, so that a key fixed hours later still delivers the backlog,
    and only what outlives ``max_retry_time`` goes to dead letters.
    """


class PermanentError(SinkError):
    """Sending the same batch again cannot succeed.

    ``isolate`` says whether the fault may lie with some of the events (a 400 on bad data): the
    dispatcher then bisects the batch so that only the offending events are dead-lettered. When the
    peer refuses any batch alike (a 5xx it will not retry) bisecting would only multiply requests,
    so the whole batch is dead-lettered at once.
    """

    def __init__(self, message: str, *, isolate: bool = True) -> None:
        super().__init__(message)
        self.isolate = isolate


class PayloadTooLargeError(SinkError):
    """The peer refused the batch for its size (413): the dispatcher splits it and retries."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """A delivered batch of which the peer nevertheless refused some items (partial success)."""

    rejected: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The verdict of a live setup check, phrased so that a person can act on it."""

    ok: bool
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How the dispatcher drives one sink; read from ``RELAY_<SINK>_<SETTING>``."""

    batch_size: int = 512
    batch_max_bytes: int = 4 * 1024 * 1024
    flush_interval: float = 1.0
    max_retry_time: float = 3600.0
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    retry_after_cap: float = 300.0
    timeout: float = 30.0
    max_event_age: float | None = None
    # Which events the sink gets, and in what form: RELAY_<SINK>_FILTER, _SAMPLE_*, _CONTENT*.
    selection: Selection = field(default_factory=Selection)


class Batch(Sequence[LLMEvent]):
    """The events of one send, each with its JSON as the spool holds it (``orjson.dumps``).

    What every ``Sink.send`` takes. A sink that writes events as JSON takes ``json`` rather than
    encoding every event again. Slices stay batches (the dispatcher splits them); ``Batch.of``
    builds one from events alone.
    """

    __slots__ = ("_events", "json")

    def __init__(self, events: Sequence[LLMEvent], json: Sequence[bytes]) -> None:
        if len(events) != len(json):
            raise ValueError(f"{len(events)} events but {len(json)} JSON encodings")
        self._events = events
        self.json = json

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, index: int) -> LLMEvent: ...

    @overload
    def __getitem__(self, index: slice) -> Batch: ...

    def __getitem__(self, index: int | slice) -> LLMEvent | Batch:
        if isinstance(index, slice):
            return Batch(self._events[index], self.json[index])
        return self._events[index]

    @classmethod
    def of(cls, events: Sequence[LLMEvent]) -> Batch:
        """A batch of events that come without their JSON (a test event, tests): encoded now,
        exactly as the spool would have stored them."""
        return cls(events, [orjson.dumps(event) for event in events])


@runtime_checkable
class Sink(Protocol):
    """What the dispatcher needs of a destination.

    Its owner (the relay, or a CLI command) calls ``start`` once, then any number of ``send`` and
    ``probe``, then ``close``. A sink never starts itself: ``send`` on a sink that was not started
    (or was closed) raises ``SinkNotStartedError`` naming the sink: a bug in the caller, not a
    delivery failure, so the dispatcher keeps the batch in the spool rather than dead-lettering it.
    """

    # The name in RELAY_SINKS, the status page and metric labels; an instance attribute because
    # one class serves several names (every OTLP preset is an ``OtlpSink``).
    name: str

    async def start(self) -> None:
        """Open connections or files; called once before the first ``send``."""

    async def send(self, batch: Batch) -> SendResult | None:
        """Deliver one batch or raise a ``SinkError`` saying why not.

        The events are shared with the other sinks: read them, never modify them; ``batch.json``
        has each event's JSON as the spool stored it.
        """

    async def probe(self) -> ProbeResult:
        """Check live that this sink can deliver now (credentials, reachability, disk).

        Works whether or not the sink was started: the setup check may run on its own.
        """

    async def close(self) -> None:
        """Release resources; safe to call twice and without ``start``."""


class SinkNotStartedError(RuntimeError):
    """A ``send`` before ``start`` (or after ``close``): the caller's bug, never the events'."""


def not_started(name: str) -> SinkNotStartedError:
    return SinkNotStartedError(
        f"the {name} sink was sent a batch before start() (or after close())"
    )
