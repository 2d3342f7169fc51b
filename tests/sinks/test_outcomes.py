"""Each delivery outcome is booked once and shows the same thing in the three places an operator
looks: the sink's ``/v1/status`` line, its Prometheus series and its log line."""

from __future__ import annotations

from structlog.testing import capture_logs

from sinks.outcomes import (
    AttemptFailed,
    DeadLettered,
    Delivered,
    DeliveryBook,
    DispatchFault,
    Retrying,
)
from telemetry.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_delivery_with_a_partial_rejection() -> None:
    metrics = Metrics()
    book = DeliveryBook("tempo", metrics)
    with capture_logs() as logs:
        book.book(Delivered(10, 0.2))
        book.book(Delivered(5, 0.1, rejected=2, message="2 spans too old"))
    assert (book.status.sent, book.status.partial_rejected) == (15, 2)
    assert book.status.last_success_at is not None
    assert sample(metrics, "relay_sink_sent_events_total", sink="tempo") == 15
    assert sample(metrics, "relay_sink_partial_rejected_events_total", sink="tempo") == 2
    assert sample(metrics, "relay_sink_send_duration_seconds_count", sink="tempo") == 2
    assert [(log["event"], log["rejected"]) for log in logs] == [("partial_success", 2)]


def test_failures_retries_and_dead_letters() -> None:
    metrics = Metrics()
    book = DeliveryBook("datadog", metrics)
    bug = ValueError("odd event")
    with capture_logs() as logs:
        book.book(AttemptFailed("retryable", "Datadog answered 503", 0.05))
        book.book(Retrying(1, 0.8, "Datadog answered 503"))
        book.book(AttemptFailed("permanent", "datadog sink failed: ValueError", 0.01, bug))
        book.book(DeadLettered(3, "rejected", "HTTP 400", "/data/dead-letter/datadog.jsonl"))
    status = book.status
    assert (status.retries, status.dead_lettered) == (1, 3)
    assert status.last_error == "datadog sink failed: ValueError"
    assert (
        sample(metrics, "relay_sink_send_failures_total", sink="datadog", reason="retryable") == 1
    )
    assert (
        sample(metrics, "relay_sink_send_failures_total", sink="datadog", reason="permanent") == 1
    )
    assert sample(metrics, "relay_sink_retries_total", sink="datadog") == 1
    assert (
        sample(metrics, "relay_sink_dead_lettered_events_total", sink="datadog", reason="rejected")
        == 3
    )
    assert [log["event"] for log in logs] == ["send_retry", "sink_failed", "events_dead_lettered"]
    assert logs[1]["exc_info"] is bug
    assert logs[2]["path"] == "/data/dead-letter/datadog.jsonl"


def test_a_fault_of_the_relay_itself_is_shown_as_such() -> None:
    book = DeliveryBook("file", Metrics())
    with capture_logs() as logs:
        book.book(DispatchFault(OSError("database or disk is full")))
    assert book.status.last_error == "relay: database or disk is full"
    assert [log["event"] for log in logs] == ["dispatch_failed"]
