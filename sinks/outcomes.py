"""What happens to a sink's events, booked once: status, metric and log from one typed outcome.

As Vector's internal events do, each outcome is a small typed value, and ``DeliveryBook.book`` is
the one place that turns it into the three things an operator reads: the sink's line in
``/v1/status`` (``SinkStatus``), its Prometheus series and its log line. The dispatcher books every
attempt, retry and dead letter here; the relay books the dead letters of a sink removed from
``RELAY_SINKS`` here too, so that the three never disagree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from telemetry.metrics import Metrics

log = structlog.get_logger("relay.dispatch")
# A failing filter fails on every event alike: one line a minute says so.
FILTER_LOG_INTERVAL = 60.0


@dataclass(slots=True)
class SinkStatus:
    """What ``/v1/status`` shows for one sink."""

    sent: int = 0
    retries: int = 0
    dead_lettered: int = 0
    partial_rejected: int = 0
    filtered: int = 0
    sampled_out: int = 0
    filter_failed: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """The peer took a batch (``rejected`` of its items refused in a partial success)."""

    count: int
    seconds: float
    rejected: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """One send attempt failed; ``reason`` is the failure class (``retryable``, ``timeout``...).

    ``bug`` is set when the sink raised something other than a ``SinkError``: logged with its
    traceback, since no peer said anything.
    """

    reason: str
    message: str
    seconds: float
    bug: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Retrying:
    """A failed batch will be sent again after ``wait_s``."""

    attempt: int
    wait_s: float
    error: str


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """Events written to the sink's dead-letter file instead of being delivered."""

    count: int
    reason: str
    error: str
    path: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """Events of a batch the sink's selection left out (``sinks.selection``): not selected by its
    filter, sampled out, or failed by its filter (``filter_error`` is the last message)."""

    filtered: int
    sampled_out: int
    filter_failed: int = 0
    filter_error: str = ""


@dataclass(frozen=True, slots=True)
class DispatchFault:
    """The dispatcher itself failed (the spool's database, a bug) and pauses before going on."""

    error: BaseException


Outcome = Delivered | AttemptFailed | Retrying | DeadLettered | Skipped | DispatchFault


class DeliveryBook:
    """One sink's status, series and log lines, written from the outcomes booked."""

    def __init__(self, sink: str, metrics: Metrics) -> None:
        self.sink = sink
        self.metrics = metrics
        self.status = SinkStatus()
        self._filter_logged_at = -FILTER_LOG_INTERVAL
        self._filter_failures = 0

    def book(self, outcome: Outcome) -> None:
        sink, status, metrics = self.sink, self.status, self.metrics
        match outcome:
            case Delivered(count, seconds, rejected, message):
                now = time.time()
                status.sent += count
                status.last_success_at = now
                metrics.sink_send_duration.labels(sink).observe(seconds)
                metrics.sink_sent.labels(sink).inc(count)
                metrics.sink_last_success.labels(sink).set(now)
                if rejected or message:
                    status.partial_rejected += rejected
                    metrics.sink_partial_rejected.labels(sink).inc(rejected)
                    log.warning("partial_success", sink=sink, rejected=rejected, message=message)
            case AttemptFailed(reason, message, seconds, bug):
                self._error(message)
                metrics.sink_send_duration.labels(sink).observe(seconds)
                metrics.sink_failures.labels(sink, reason).inc()
                if bug is not None:
                    log.error("sink_failed", sink=sink, error=message, exc_info=bug)
            case Retrying(attempt, wait_s, error):
                status.retries += 1
                metrics.sink_retries.labels(sink).inc()
                log.info("send_retry", sink=sink, attempt=attempt, wait_s=wait_s, error=error)
            case DeadLettered(count, reason, error, path):
                status.dead_lettered += count
                metrics.sink_dead_lettered.labels(sink, reason).inc(count)
                log.error(
                    "events_dead_lettered",
                    sink=sink,
                    reason=reason,
                    count=count,
                    error=error,
                    path=path,
                )
            case Skipped(filtered, sampled_out, filter_failed, filter_error):
                status.filtered += filtered
                status.sampled_out += sampled_out
                status.filter_failed += filter_failed
                metrics.sink_skipped.labels(sink, "filtered").inc(filtered)
                metrics.sink_skipped.labels(sink, "sampled_out").inc(sampled_out)
                if filter_failed:
                    metrics.sink_skipped.labels(sink, "filter_failed").inc(filter_failed)
                    self._filter_failed(filter_failed, filter_error)
            case DispatchFault(error):
                self._error(f"relay: {error}")
                log.error("dispatch_failed", sink=sink, error=str(error), exc_info=error)

    def _filter_failed(self, count: int, error: str) -> None:
        """A filter that fails on events (a string compared with a number) is a setting to fix:
        shown in the status, and logged once a minute at most with the count since the last
        line (the metric counts each, ``reason="filter_failed"``)."""
        self._error(f"RELAY_{self.sink.upper()}_FILTER failed on {count} events: {error}")
        self._filter_failures += count
        now = time.monotonic()
        if now - self._filter_logged_at >= FILTER_LOG_INTERVAL:
            log.warning(
                "sink_filter_failed",
                sink=self.sink,
                events=self._filter_failures,
                error=error,
                hint="these events were left out of this sink: fix the expression",
            )
            self._filter_logged_at, self._filter_failures = now, 0

    def _error(self, message: str) -> None:
        self.status.last_error = message
        self.status.last_error_at = time.time()
