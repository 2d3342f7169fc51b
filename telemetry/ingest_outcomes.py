"""What ingest made of a request, booked once: metric and log line from one typed outcome.

As ``sinks.outcomes`` does for deliveries (and Vector for its internal events), each outcome is a
small typed value and ``IngestBook.book`` is the one place that turns it into what an operator
reads, its Prometheus series and its log line, so that the two never disagree:

- ``RequestRefused``: the whole request was answered 4xx/5xx (401, 400, 408, 413, 415, 503);
  ``relay_items_rejected_total{route,reason}``, line ``ingest_refused``;
- ``ItemsRejected``: items the normalizer could not use (the rest was stored);
  ``relay_items_rejected_total{reason="invalid_item"}`` per item, line ``items_rejected``;
- ``NothingToStore``: a body read whole that held no LLM call; its skipped items are counted by
  the receiver with every request's, a body with no item at all here as
  ``relay_items_skipped_total{reason="empty"}``; line ``no_events``;
- ``WaivedTestConnection``: OpenRouter's Test Connection answered 2xx although its request would
  have been refused (it posts an empty body without a Content-Type); line ``test_connection``;
- ``Accepted``: at debug level only, one line per request read whole (``ingest_accepted``).

Log lines but ``Accepted``'s are rate-limited per (route, reason), see ``LineLimiter``; the metric
counts every occurrence. A line never carries a secret: the Authorization header is reduced to its
scheme (``bearer``, ``basic``, ``other``, ``none``), and every text a sender chose (User-Agent,
Content-Type, the message it was answered, item names) is masked with ``redact_text`` and cut
short. Sender texts are masked when a line is written, not when an occurrence is counted: a flood
of refusals costs a counter and a comparison each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import structlog

from foundation.secrets import redact_text
from telemetry.metrics import Metrics

log = structlog.get_logger("relay.ingest")

# One line per (route, reason) per 10 s: a mistyped token on a gateway sending 100 requests/s is
# one line at once and then one every 10 s (with the count), not 1,000 lines that bury the rest;
# 10 s is also short enough that a fix shows in the log (the lines stop) before one looks again.
LOG_INTERVAL_SECONDS: Final = 10.0
# What a line keeps of a sender's text (User-Agent, Content-Type): enough to recognise a client.
MAX_SENDER_TEXT: Final = 200
# What a line keeps of a message the sender was answered (quotes items and values it sent).
MAX_MESSAGE: Final = 500


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a request, booked with each of its outcomes: its address and its headers, as
    received (read, and masked, only when a line is written; case-blind, as aiohttp's are)."""

    remote: str | None
    headers: Mapping[str, str]

    @property
    def test_connection(self) -> bool:
        return self.headers.get("X-Test-Connection", "").lower() == "true"


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """The whole request was refused with ``status``; the sender was answered ``message``."""

    route: str
    reason: str  # relay_items_rejected_total's reason
    status: int
    message: str
    limit_bytes: int | None = None  # RELAY_MAX_BODY_BYTES, for a 413


@dataclass(frozen=True, slots=True)
class ItemsRejected:
    """``count`` items could not be used (``first``: the first one and why); ``accepted`` events
    of the same request were stored. ``status``: what the request was answered."""

    reason: ClassVar[str] = "invalid_item"
    route: str
    format: str
    count: int
    first: str
    accepted: int
    status: int


@dataclass(frozen=True, slots=True)
class NothingToStore:
    """A body read whole that held no LLM call: ``skipped`` items that are none (0: no item)."""

    reason: ClassVar[str] = "no_events"
    route: str
    format: str
    skipped: int


@dataclass(frozen=True, slots=True)
class WaivedTestConnection:
    """A Test Connection answered 2xx instead of ``status`` (``message``): nothing was stored."""

    reason: ClassVar[str] = "test_connection"
    route: str
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request read whole (debug level): what it held and what became of it."""

    route: str
    format: str
    events: int
    skipped: int
    rejected: int
    tenant: str | None
    bytes: int
    gateways: tuple[str, ...]


Limited = RequestRefused | ItemsRejected | NothingToStore | WaivedTestConnection
Outcome = Limited | Accepted


class Logger(Protocol):
    def log(self, level: int, event: str, **fields: Any) -> Any: ...


class LineLimiter:
    """At most one line per key per ``interval`` seconds, and a count of the occurrences held back.

    The first occurrence of a key is let through at once (an operator fixing a mistyped token must
    see it now); later ones are held back and counted until ``interval`` has passed since the
    key's last line. The key's next line says how many were held back: the line of its next
    occurrence after the interval (``admit``), or the one written when the interval ends
    (``flush``, which ``IngestBook`` calls then), whichever comes first; so a count is not lost
    when traffic stops. Keys are few (route x reason): nothing is ever forgotten.

    The clock is ``time.monotonic``, the one asyncio's loop schedules the flush timers by
    (``foundation.times`` has wall-clock time only, which a clock step would turn into a burst of
    lines or an hour of silence); tests give their own.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next: dict[Hashable, float] = {}  # when the key may have its next line
        self._held: dict[Hashable, int] = {}

    def admit(self, key: Hashable) -> int | None:
        """None: held back (and counted). Else a line is written now, and this is how many
        occurrences of ``key`` were held back since its last line."""
        now = self._clock()
        next_line = self._next.get(key)
        if next_line is not None and now < next_line:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._held.pop(key, 0)

    def flush(self, key: Hashable) -> int:
        """The occurrences held back for ``key``, taken; when there were any, a line saying so is
        written now and the key's next interval starts."""
        held = self._held.pop(key, 0)
        if held:
            self._next[key] = self._clock() + self.interval
        return held

    def seconds_left(self, key: Hashable) -> float:
        """How long until ``key`` may have its next line."""
        return max(0.0, self._next.get(key, 0.0) - self._clock())


class IngestBook:
    """The metric and the (rate-limited) log line of every ingest outcome; one per application.

    Held-back lines are written at the end of their interval by a timer on the running loop, with
    the latest occurrence's fields, ``suppressed`` (how many occurrences got no line of their
    own, that one included) and ``summary: true``; ``flush_all`` writes them at shutdown. Each
    worker process (RELAY_WORKERS) has its own book: one line per cause per interval per worker.
    """

    def __init__(
        self,
        interval: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        logger: Logger | None = None,
    ) -> None:
        self._limiter = LineLimiter(interval, clock)
        self._log: Logger = logger if logger is not None else log
        self._latest: dict[tuple[str, str], tuple[Limited, Sender]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def book(self, metrics: Metrics, outcome: Outcome, sender: Sender) -> None:
        _count(metrics, outcome)
        if isinstance(outcome, Accepted):
            self._write(outcome, sender)  # debug: the caller checked the level before building it
            return
        key = (outcome.route, outcome.reason)
        held = self._limiter.admit(key)
        if held is None:
            self._latest[key] = (outcome, sender)
            if key not in self._timers:
                self._flush_later(key)
            return
        self._latest.pop(key, None)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()  # this line carries the count; the next interval starts now
        self._write(outcome, sender, suppressed=held)

    def flush_all(self) -> None:
        """Write every held-back count now (at shutdown): none is lost with the process."""
        for key, timer in list(self._timers.items()):
            timer.cancel()
            self._flush(key)

    def _flush_later(self, key: tuple[str, str]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the key's next line carries the count
            return
        self._timers[key] = loop.call_later(self._limiter.seconds_left(key), self._flush, key)

    def _flush(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        latest = self._latest.pop(key, None)
        held = self._limiter.flush(key)
        if held and latest is not None:
            self._write(*latest, suppressed=held, summary=True)

    def _write(
        self, outcome: Outcome, sender: Sender, suppressed: int | None = None, summary: bool = False
    ) -> None:
        level, event, fields = describe(outcome, sender)
        if suppressed is not None:
            fields["suppressed"] = suppressed
        if summary:
            fields["summary"] = True
        self._log.log(level, event, **fields)


def _count(metrics: Metrics, outcome: Outcome) -> None:
    match outcome:
        case RequestRefused(route=route, reason=reason):
            metrics.items_rejected.labels(route, reason).inc()
        case ItemsRejected(route=route, count=count):
            metrics.items_rejected.labels(route, ItemsRejected.reason).inc(count)
        case NothingToStore(format=fmt, skipped=0):
            metrics.items_skipped.labels(fmt, "empty").inc()


# Levels. Warning: events the sender meant for the relay are lost (a request refused whole, or
# every item of one unusable), which an operator must fix (a token, a size, a Content-Type, the
# spool) since no gateway re-sends. Info: the relay stored what it could and told the sender
# which items it could not use, or the body held no LLM call (a Test Connection, an exporter
# sending all its spans), which may be intended. Debug: what was accepted.
def describe(outcome: Outcome, sender: Sender) -> tuple[int, str, dict[str, object]]:
    """The level, name and fields of ``outcome``'s log line, every sender text masked."""
    fields: dict[str, object] = {"route": outcome.route}
    match outcome:
        case RequestRefused():
            fields |= {"reason": outcome.reason, "status": outcome.status}
            fields |= {"message": _message(outcome.message)}
            fields |= _request_details(outcome, sender.headers)
            return logging.WARNING, "ingest_refused", fields | _sender(sender)
        case ItemsRejected():
            fields |= {"reason": outcome.reason, "status": outcome.status, "format": outcome.format}
            fields |= {"count": outcome.count, "accepted": outcome.accepted}
            fields["first"] = _message(outcome.first)
            level = logging.WARNING if outcome.accepted == 0 else logging.INFO
            return level, "items_rejected", fields | _sender(sender)
        case NothingToStore():
            fields |= {"reason": outcome.reason, "status": 200, "format": outcome.format}
            fields |= {"skipped": outcome.skipped, "message": _nothing(outcome.skipped)}
            return logging.INFO, "no_events", fields | _sender(sender)
        case WaivedTestConnection():
            fields |= {"reason": outcome.reason, "status": 200, "waived_status": outcome.status}
            fields["message"] = _message(outcome.message)
            return logging.INFO, "test_connection", fields | _sender(sender)
        case Accepted():
            fields |= {"format": outcome.format, "events": outcome.events}
            fields |= {"skipped": outcome.skipped, "rejected": outcome.rejected}
            fields |= {"tenant": outcome.tenant, "bytes": outcome.bytes}
            fields["gateways"] = [_text(gateway) for gateway in outcome.gateways]
            return logging.DEBUG, "ingest_accepted", fields | _sender(sender)


def _request_details(refused: RequestRefused, headers: Mapping[str, str]) -> dict[str, object]:
    """What the sender needs to fix a refusal, beyond its message: how it authenticated, what it
    said it sent, the limit it passed."""
    if refused.status == 401:
        return {"authorization": _scheme(headers.get("Authorization"))}
    details: dict[str, object] = {}
    if refused.limit_bytes is not None:
        details["limit_bytes"] = refused.limit_bytes
    for name, field in (
        ("Content-Type", "content_type"),
        ("Content-Encoding", "content_encoding"),
        ("Content-Length", "content_length"),
    ):
        if (value := headers.get(name)) is not None:
            details[field] = _text(value)
    return details


def _scheme(authorization: str | None) -> str:
    """The Authorization header's scheme, from a fixed vocabulary: never a byte of its token (a
    token sent without a scheme would otherwise be the "scheme")."""
    if not authorization or not authorization.strip():
        return "none"
    scheme = authorization.strip().partition(" ")[0].lower()
    return scheme if scheme in ("bearer", "basic") else "other"


def _sender(sender: Sender) -> dict[str, object]:
    fields: dict[str, object] = {
        "client": _text(sender.remote or "unknown"),
        "user_agent": _text(sender.headers.get("User-Agent", "")),
    }
    if sender.test_connection:
        fields["test_connection"] = True
    return fields


def _nothing(skipped: int) -> str:
    if skipped:
        return (
            f"none of the {skipped} items was an LLM call (skipped, counted in"
            " relay_items_skipped_total): nothing stored"
        )
    return "the body held no items: nothing stored"


def _text(value: str) -> str:
    # Masked whole, then cut: a secret cut first could be too short to be recognised.
    return redact_text(value)[:MAX_SENDER_TEXT]


def _message(value: str) -> str:
    return redact_text(value)[:MAX_MESSAGE]
