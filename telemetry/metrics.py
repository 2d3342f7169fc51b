"""Every count that matters, in Prometheus form: the pipeline's own health and the LLM traffic.

Metric names are a contract (the dashboard and alert rules in ``deploy/`` query them). LLM metrics
are labelled by gateway, provider, upstream and model, never by user: bounded cardinality.
Events marked ``source.test`` (setup checks) are kept out of the LLM metrics so that they never
show up as spend. Failure counters are exported at 0 from the start (``export_sinks``,
``export_routes``, the spool's problems), since alerts built on ``increase()`` miss a series' first
rise.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    values,
)

from foundation.memo import Memo
from schemas import LLMEvent
from telemetry.label_budget import ERROR_TYPES_MAX, LABEL_VALUES_MAX, LabelBudget

# No ``*_created`` series: nothing here reads them (Prometheus only does with created-timestamp
# ingestion switched on), and they are one series more for every counter's and histogram's label
# set, a fifth of /metrics once the model label is at its budget.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 30)
_SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LLM_LABELS = ("gateway", "provider", "upstream", "model")


# Every label value the relay books its failures under, so that each series can be exported at 0
# before the first one (``export_sinks``, ``export_routes``): ``increase()`` only sees a rise from a
# sample it has, and a series born at 512 dead letters never fires an alert on them.
# ``sinks.dispatcher`` books these send failures and dead letters for a running sink; a sink taken
# out of RELAY_SINKS has its own dead-letter reason, ``sink_removed``, booked once at start.
SEND_FAILURE_REASONS: Final = ("retryable", "timeout", "too_large", "permanent", "misconfigured")
DEAD_LETTER_REASONS: Final = (
    "rejected",
    "too_large",
    "retries_exhausted",
    "too_old",
    "undecodable",
    "unselectable",
)
# A sink's filter or sampler leaves events out for these (``sinks.selection``): never a failure,
# and each event is still in every LLM metric.
SKIP_REASONS: Final = ("filtered", "sampled_out", "filter_failed")
# ``receiver.ingest`` refuses a request or an item for these.
INGEST_REJECTION_REASONS: Final = (
    "unauthorized",
    "timeout",
    "too_large",
    "unsupported",
    "malformed",
    "unavailable",
    "invalid_item",
)


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Label sets remembered per metric (see _Children).
CHILDREN_REMEMBERED = 4096

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


class _Children(Generic[_Metric]):
    """``metric.labels(*key)``, remembered: ``labels()`` validates its arguments and takes a lock
    on every call. Switched off, a single-span request cost 3-4 % more (``python -m bench.memos``);
    prometheus_client keeps every child anyway, the memo only saves looking it up again."""

    __slots__ = ("_known", "_metric")

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._known: Memo[tuple[str, ...], _Metric] = Memo(CHILDREN_REMEMBERED)

    def __getitem__(self, key: tuple[str, ...]) -> _Metric:
        child = self._known.get(key)
        if child is None:
            child = self._known.put(key, self._metric.labels(*key))
        return child


def share_between_workers(directory: Path) -> None:
    """With RELAY_WORKERS > 1, every worker writes its metrics where any worker can read them.

    Called in the parent before the workers fork, so that one scrape, whichever worker answers
    it, reports the whole relay (prometheus_client's multiprocess mode).
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def worker_exited(pid: int) -> None:
    if MULTIPROCESS_ENV in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition_registry(own: CollectorRegistry) -> CollectorRegistry:
    """The registry to expose: this process's, or every worker's when they share metrics."""
    if MULTIPROCESS_ENV not in os.environ:
        return own
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "relay_http_requests",
            "HTTP requests by route and status.",
            ("route", "status"),
            registry=r,
        )
        self.events_received = Counter(
            "relay_events_received",
            "Events accepted and spooled, by input format and gateway.",
            ("format", "gateway"),
            registry=r,
        )
        self.items_rejected = Counter(
            "relay_items_rejected",
            "Items or requests refused at ingest, by reason.",
            ("route", "reason"),
            registry=r,
        )
        self.items_skipped = Counter(
            "relay_items_skipped",
            "Valid items that are not LLM calls, by format and reason.",
            ("format", "reason"),
            registry=r,
        )
        # Gauges say how workers combine when they share metrics (RELAY_WORKERS > 1).
        self.spool_bytes = Gauge(
            "relay_spool_bytes",
            "Bytes of undelivered events in the spool.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.spool_problems = Counter(
            "relay_spool_problems",
            "Problems with the spool, by kind: damaged (moved aside at start), events_missing"
            " (lost with a damaged WAL), write_failed (disk full), files_gone (deleted while"
            " running).",
            ("problem",),
            registry=r,
        )
        for problem in ("damaged", "events_missing", "write_failed", "files_gone"):
            self.spool_problems.labels(problem)  # exported at 0, so increase() sees the first
        self.spool_max_bytes = Gauge(
            "relay_spool_max_bytes",
            "RELAY_SPOOL_MAX_BYTES: above it ingest answers 503.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.sink_sent = Counter(
            "relay_sink_sent_events", "Events a sink delivered.", ("sink",), registry=r
        )
        self.sink_failures = Counter(
            "relay_sink_send_failures",
            "Failed send attempts, by reason.",
            ("sink", "reason"),
            registry=r,
        )
        self.sink_retries = Counter(
            "relay_sink_retries", "Send attempts that were retried.", ("sink",), registry=r
        )
        self.sink_partial_rejected = Counter(
            "relay_sink_partial_rejected_events",
            "Items a sink's peer refused in a partial success (counted, not retried).",
            ("sink",),
            registry=r,
        )
        self.sink_skipped = Counter(
            "relay_sink_skipped_events",
            "Events a sink's filter or sampler left out, by reason (filtered, sampled_out,"
            " filter_failed: the filter failed on them).",
            ("sink", "reason"),
            registry=r,
        )
        self.sink_dead_lettered = Counter(
            "relay_sink_dead_lettered_events",
            "Events written to the dead-letter file, by reason.",
            ("sink", "reason"),
            registry=r,
        )
        self.sink_backlog = Gauge(
            "relay_sink_backlog_events",
            "Events spooled and not yet resolved for a sink.",
            ("sink",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.sink_oldest_age = Gauge(
            "relay_sink_oldest_pending_age_seconds",
            "Age of the oldest event not yet resolved for a sink (0 when none).",
            ("sink",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.sink_send_duration = Histogram(
            "relay_sink_send_duration_seconds",
            "Duration of one send attempt.",
            ("sink",),
            buckets=_SEND_BUCKETS,
            registry=r,
        )
        self.sink_last_success = Gauge(
            "relay_sink_last_success_timestamp_seconds",
            "When a sink last delivered a batch.",
            ("sink",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.llm_requests = Counter(
            "llm_requests", "LLM calls reported by gateways.", (*_LLM_LABELS, "status"), registry=r
        )
        self.llm_errors = Counter(
            "llm_errors",
            "Failed LLM calls by error type.",
            (*_LLM_LABELS, "error_type"),
            registry=r,
        )
        self.llm_tokens = Counter(
            "llm_tokens",
            "Tokens by type (input, output, cache_read, cache_write, reasoning).",
            (*_LLM_LABELS, "type"),
            registry=r,
        )
        # source: "gateway" for what the sender reported (billed), "table" for what the relay
        # estimated from a price table (receiver.pricing), so that dashboards can tell them apart.
        self.llm_cost = Counter(
            "llm_cost_usd",
            "Cost of LLM calls in USD, by source: gateway (reported by the gateway) or table"
            " (estimated by the relay from a price table when the gateway reported none).",
            (*_LLM_LABELS, "source"),
            registry=r,
        )
        self.llm_duration = Histogram(
            "llm_request_duration_seconds",
            "End-to-end LLM call duration.",
            _LLM_LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_ttft = Histogram(
            "llm_time_to_first_token_seconds",
            "Time to first token of streamed calls.",
            _LLM_LABELS,
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        # Silence is the failure users miss most: a gateway whose Broadcast stopped (a revoked
        # token, a destination disabled after failures) looks healthy. "max" across workers, live
        # or not: a worker that restarted must not make a gateway's last event disappear.
        self.last_event = Gauge(
            "relay_last_event_timestamp_seconds",
            "When the relay last accepted an LLM event (test events aside), by gateway and the"
            " tenant of the ingest token (empty when ingest is open).",
            ("gateway", "tenant"),
            registry=r,
            multiprocess_mode="max",
        )
        self.labels_folded = Counter(
            "relay_metric_label_values_folded",
            "LLM events booked under the label value 'other': the label had too many values.",
            ("label",),
            registry=r,
        )
        self._budgets = {name: LabelBudget(limit) for name, limit in LABEL_VALUES_MAX.items()}
        self._budgets["error_type"] = LabelBudget(ERROR_TYPES_MAX)
        for name in self._budgets:
            self.labels_folded.labels(name)
        self._http = _Children(self.http_requests)
        self._received = _Children(self.events_received)
        self._requests = _Children(self.llm_requests)
        self._errors = _Children(self.llm_errors)
        self._tokens = _Children(self.llm_tokens)
        self._cost = _Children(self.llm_cost)
        self._duration = _Children(self.llm_duration)
        self._ttft = _Children(self.llm_ttft)
        self._last_event = _Children(self.last_event)

    def export_sinks(self, sinks: Iterable[str]) -> None:
        """Each sink's delivery and failure counters, at 0 until something happens: for every
        sink and every reason it can fail or dead-letter for."""
        for sink in sinks:
            self.sink_sent.labels(sink)
            self.sink_retries.labels(sink)
            self.sink_partial_rejected.labels(sink)
            for reason in SEND_FAILURE_REASONS:
                self.sink_failures.labels(sink, reason)
            for reason in DEAD_LETTER_REASONS:
                self.sink_dead_lettered.labels(sink, reason)
            for reason in SKIP_REASONS:
                self.sink_skipped.labels(sink, reason)

    def export_routes(self, routes: Iterable[str]) -> None:
        """Each ingest route's rejection counters, at 0 for every reason."""
        for route in routes:
            for reason in INGEST_REJECTION_REASONS:
                self.items_rejected.labels(route, reason)

    def count_http(self, route: str, status: int) -> None:
        self._http[route, str(status)].inc()

    def observe_events(self, events: list[LLMEvent]) -> None:
        """Count accepted events, by pipeline and LLM dimensions.

        Sums are gathered per label set first: a request's events mostly share their labels, and
        a ``labels()`` lookup costs more than the addition.
        """
        # Plain dicts: building a Counter costs more than a one-event request's additions.
        received: dict[tuple[str, ...], float] = {}
        requests: dict[tuple[str, ...], float] = {}
        errors: dict[tuple[str, ...], float] = {}
        tokens: dict[tuple[str, ...], float] = {}
        cost: dict[tuple[str, ...], float] = {}
        durations: dict[tuple[str, ...], list[float]] = {}
        ttfts: dict[tuple[str, ...], list[float]] = {}
        senders: set[tuple[str, str]] = set()
        for event in events:
            source = event["source"]
            key: tuple[str, ...] = (source["format"], source["gateway"])
            received[key] = received.get(key, 0) + 1
            if source.get("test"):
                continue
            labels = self._llm_labels(event)
            senders.add((labels[0], source.get("tenant") or ""))
            status = event.get("status", "ok")
            key = (*labels, status)
            requests[key] = requests.get(key, 0) + 1
            if status == "error":
                error_type = self._budgets["error_type"](
                    str(event.get("error", {}).get("type", "unknown"))
                )
                key = (*labels, error_type)
                errors[key] = errors.get(key, 0) + 1
            usage = event.get("usage", {})
            for field, kind in _TOKEN_FIELDS:
                count = usage.get(field)
                if isinstance(count, int) and count > 0:
                    key = (*labels, kind)
                    tokens[key] = tokens.get(key, 0) + count
            priced = event.get("cost", {})
            total = priced.get("total")
            if total:
                key = (*labels, "table" if priced.get("source") == "table" else "gateway")
                cost[key] = cost.get(key, 0.0) + total
            duration = event.get("duration_ms")
            if duration is not None:
                durations.setdefault(labels, []).append(duration / 1000)
            ttft = event.get("ttft_ms")
            if ttft is not None:
                ttfts.setdefault(labels, []).append(ttft / 1000)
        for children, sums in (
            (self._received, received),
            (self._requests, requests),
            (self._errors, errors),
            (self._tokens, tokens),
            (self._cost, cost),
        ):
            for key, amount in sums.items():
                children[key].inc(amount)
        for histograms, samples in ((self._duration, durations), (self._ttft, ttfts)):
            for key, seconds in samples.items():
                child = histograms[key]
                for value in seconds:
                    child.observe(value)
        if senders:
            now = time.time()
            for sender in senders:
                self._last_event[sender].set(now)
        for name, budget in self._budgets.items():
            if folded := budget.take_folded():
                self.labels_folded.labels(name).inc(folded)

    def _llm_labels(self, event: LLMEvent) -> tuple[str, str, str, str]:
        budgets = self._budgets
        return (
            budgets["gateway"](event["source"]["gateway"]),
            budgets["provider"](event.get("provider", "unknown")),
            budgets["upstream"](event.get("upstream", "unknown")),
            budgets["model"](
                event.get("request_model") or event.get("response_model") or "unknown"
            ),
        )


_TOKEN_FIELDS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_input_tokens", "cache_read"),
    ("cache_write_input_tokens", "cache_write"),
    ("reasoning_output_tokens", "reasoning"),
)
