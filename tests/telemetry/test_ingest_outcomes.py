"""Ingest outcomes booked once: the counter of every occurrence, and a log line per cause per
interval that says how many it stands for, without a secret. The clock is injected, so that an
interval passes without waiting for it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from telemetry import logs
from telemetry.ingest_outcomes import (
    MAX_SENDER_TEXT,
    Accepted,
    IngestBook,
    ItemsRejected,
    LineLimiter,
    NothingToStore,
    RequestRefused,
    Sender,
    WaivedTestConnection,
    describe,
)
from telemetry.metrics import Metrics
from tests.helpers.waiting import eventually

INTERVAL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines:
    """A logger that keeps what it is given, as ``IngestBook`` hands it over."""

    def __init__(self) -> None:
        self.written: list[tuple[int, str, dict[str, Any]]] = []

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.written.append((level, event, fields))


SENDER = Sender("203.0.113.7", {"User-Agent": "gateway/1.0"})
UNAUTHORIZED = RequestRefused("otlp", "unauthorized", 401, "missing or invalid bearer token")


def rejected(metrics: Metrics, route: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "relay_items_rejected_total", {"route": route, "reason": reason}
    )
    return value or 0.0


# -- the limiter ---------------------------------------------------------------------------------


def test_the_first_occurrence_is_let_through_and_the_rest_of_the_interval_held_back() -> None:
    clock = Clock()
    limiter = LineLimiter(INTERVAL, clock)
    assert limiter.admit("a") == 0
    for _ in range(41):
        clock.now += 0.1
        assert limiter.admit("a") is None
    assert limiter.admit("b") == 0, "another key has its own interval"
    clock.now = 1000.0 + INTERVAL
    assert limiter.admit("a") == 41, "the next line says how many were held back"
    clock.now += 1
    assert limiter.admit("a") is None, "and starts the next interval"


def test_a_flush_takes_the_count_and_starts_the_next_interval() -> None:
    clock = Clock()
    limiter = LineLimiter(INTERVAL, clock)
    assert limiter.flush("a") == 0
    limiter.admit("a")
    limiter.admit("a")
    limiter.admit("a")
    clock.now += INTERVAL
    assert limiter.seconds_left("a") == 0
    assert limiter.flush("a") == 2
    assert limiter.flush("a") == 0, "taken once"
    assert limiter.seconds_left("a") == INTERVAL
    clock.now += 1
    assert limiter.admit("a") is None, "the flushed line was the interval's line"


# -- the book ------------------------------------------------------------------------------------


def test_every_occurrence_is_counted_and_one_line_per_cause_per_interval_written() -> None:
    clock, lines, metrics = Clock(), Lines(), Metrics()
    book = IngestBook(INTERVAL, clock, lines)
    for _ in range(5):
        book.book(metrics, UNAUTHORIZED, SENDER)
    too_large = RequestRefused("otlp", "too_large", 413, "request body exceeds 10 bytes", 10)
    book.book(metrics, too_large, SENDER)
    assert rejected(metrics, "otlp", "unauthorized") == 5
    assert rejected(metrics, "otlp", "too_large") == 1
    assert [(event, fields["reason"]) for _, event, fields in lines.written] == [
        ("ingest_refused", "unauthorized"),
        ("ingest_refused", "too_large"),
    ]
    assert lines.written[0][2]["suppressed"] == 0

    clock.now += INTERVAL
    book.book(metrics, UNAUTHORIZED, SENDER)  # no loop, no timer: this line carries the count
    assert lines.written[-1][2]["suppressed"] == 4
    assert "summary" not in lines.written[-1][2]


async def test_a_count_held_back_is_written_when_the_interval_ends_without_more_traffic() -> None:
    lines, metrics = Lines(), Metrics()
    book = IngestBook(0.05, logger=lines)
    for _ in range(7):
        book.book(metrics, UNAUTHORIZED, SENDER)
    assert len(lines.written) == 1
    await eventually(lambda: len(lines.written) == 2, timeout=5, message="the summary line")
    _, event, fields = lines.written[1]
    assert event == "ingest_refused"
    assert fields["suppressed"] == 6
    assert fields["summary"] is True
    assert rejected(metrics, "otlp", "unauthorized") == 7


async def test_a_line_after_the_interval_takes_the_count_from_the_pending_summary() -> None:
    """The occurrence after the interval writes the count before the timer does: the count is
    written once, and the next interval gets its own summary, not an early one."""
    clock, lines, metrics = Clock(), Lines(), Metrics()
    book = IngestBook(INTERVAL, clock, lines)
    book.book(metrics, UNAUTHORIZED, SENDER)
    book.book(metrics, UNAUTHORIZED, SENDER)  # held, a timer set for the interval's end
    clock.now += INTERVAL
    book.book(metrics, UNAUTHORIZED, SENDER)
    assert [fields["suppressed"] for _, _, fields in lines.written] == [0, 1]
    book.book(metrics, UNAUTHORIZED, SENDER)  # held in the new interval
    book.flush_all()  # as at shutdown
    assert [fields["suppressed"] for _, _, fields in lines.written] == [0, 1, 1]
    assert lines.written[-1][2]["summary"] is True
    book.flush_all()
    assert len(lines.written) == 3, "nothing held back any more"


def test_items_and_empty_bodies_are_counted_as_they_were() -> None:
    lines, metrics = Lines(), Metrics()
    book = IngestBook(INTERVAL, Clock(), lines)
    book.book(metrics, ItemsRejected("litellm", "litellm", 3, "item 0: bad", 2, 200), SENDER)
    book.book(metrics, NothingToStore("events", "native", 0), SENDER)
    book.book(metrics, NothingToStore("otlp", "otlp-json", 4), SENDER)  # counted as not_llm
    assert rejected(metrics, "litellm", "invalid_item") == 3
    skipped = metrics.registry.get_sample_value
    assert skipped("relay_items_skipped_total", {"format": "native", "reason": "empty"}) == 1
    assert skipped("relay_items_skipped_total", {"format": "otlp-json", "reason": "empty"}) is None
    assert [event for _, event, _ in lines.written] == ["items_rejected", "no_events", "no_events"]


def test_accepted_requests_are_not_rate_limited_and_count_nothing() -> None:
    lines, metrics = Lines(), Metrics()
    book = IngestBook(INTERVAL, Clock(), lines)
    accepted = Accepted("otlp", "otlp-proto", 3, 1, 0, "acme", 1234, ("openrouter",))
    for _ in range(3):
        book.book(metrics, accepted, SENDER)
    assert [level for level, _, _ in lines.written] == [logging.DEBUG] * 3
    fields = lines.written[0][2]
    assert fields["events"] == 3 and fields["tenant"] == "acme" and fields["bytes"] == 1234
    assert fields["gateways"] == ["openrouter"]
    assert "suppressed" not in fields


# -- what a line says ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "scheme"),
    [
        (None, "none"),
        ("", "none"),
        ("Bearer planted-token-1234567890", "bearer"),
        ("basic cGxhbnRlZDpzZWNyZXQ=", "basic"),
        ("planted-token-1234567890", "other"),
        ("Token planted-token-1234567890", "other"),
    ],
)
def test_a_401_line_names_the_scheme_never_the_token(
    authorization: str | None, scheme: str
) -> None:
    headers = {"User-Agent": "gateway/1.0"}
    if authorization is not None:
        headers["Authorization"] = authorization
    level, event, fields = describe(UNAUTHORIZED, Sender("127.0.0.1", headers))
    assert (level, event) == (logging.WARNING, "ingest_refused")
    assert fields["authorization"] == scheme
    assert fields["status"] == 401 and fields["client"] == "127.0.0.1"
    assert "planted" not in repr(fields)
    assert "cGxhbnRlZDpzZWNyZXQ" not in repr(fields)


def test_sender_texts_are_masked_then_cut_short() -> None:
    agent = "probe Bearer sk-live-0123456789abcdef " + "x" * 1000
    content_type = "text/plain; token=planted-secret-5678"
    sender = Sender("127.0.0.1", {"User-Agent": agent, "Content-Type": content_type})
    refused = RequestRefused(
        "otlp", "unsupported", 415, f"unsupported Content-Type {content_type!r}"
    )
    _, _, fields = describe(refused, sender)
    text = repr(fields)
    assert "sk-live-0123456789abcdef" not in text and "planted-secret-5678" not in text
    assert str(fields["user_agent"]).startswith("probe Bearer [REDACTED]")
    assert len(str(fields["user_agent"])) == MAX_SENDER_TEXT
    assert str(fields["content_type"]).startswith("text/plain; token=[REDACTED]")


def test_a_413_line_gives_the_limit_and_what_was_sent() -> None:
    sender = Sender("127.0.0.1", {"Content-Length": "70000", "Content-Type": "application/json"})
    refused = RequestRefused("events", "too_large", 413, "request body exceeds 65536 bytes", 65536)
    _, _, fields = describe(refused, sender)
    assert fields["limit_bytes"] == 65536
    assert fields["content_length"] == "70000"


@pytest.mark.parametrize(
    ("outcome", "level"),
    [
        (ItemsRejected("otlp", "otlp-json", 1, "span 0: bad", 4, 200), logging.INFO),
        (ItemsRejected("events", "native", 2, "[0]: bad", 0, 400), logging.WARNING),
        (NothingToStore("otlp", "otlp-json", 3), logging.INFO),
        (WaivedTestConnection("otlp", 415, "unsupported Content-Type"), logging.INFO),
    ],
    ids=["some items", "every item", "nothing to store", "test connection"],
)
def test_a_warning_only_when_the_senders_events_were_lost(
    outcome: ItemsRejected | NothingToStore | WaivedTestConnection, level: int
) -> None:
    assert describe(outcome, SENDER)[0] == level


def test_a_test_connection_says_so() -> None:
    sender = Sender("127.0.0.1", {"X-Test-Connection": "true"})
    _, event, fields = describe(WaivedTestConnection("otlp", 415, "unsupported"), sender)
    assert event == "test_connection"
    assert fields["test_connection"] is True and fields["waived_status"] == 415
    assert "test_connection" not in describe(UNAUTHORIZED, SENDER)[2]


# -- the level check -----------------------------------------------------------------------------


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """``configure_logging`` sets the process's logging: put back what pytest had."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
        logs._level = logging.INFO


@pytest.mark.usefixtures("restored_logging")
def test_debug_enabled_follows_the_configured_level() -> None:
    logs.configure_logging("info")
    assert not logs.debug_enabled()
    logs.configure_logging("debug")
    assert logs.debug_enabled()
    logs.configure_logging("warning")
    assert not logs.debug_enabled()
