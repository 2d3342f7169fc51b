"""Hostile input (issue 16): is the relay still alive, to its orchestrator, while it works?

Two figures, each on a fresh relay (``python -m service``, file sink only, the durable spool, the
cap ``RELAY_MAX_BODY_BYTES`` set to the run's size) pinned to the server core:

1. For each input format, the largest body it may send (``bench.hostile``: just under the cap) is
   posted once while ``bench.livez_probe`` polls ``GET /livez`` every 10 ms from a process of its
   own. Reported: the worst and p99 probe, during the request and until the file sink has written
   every accepted event; the request's own time and status; the events accepted; the relay's
   peak RSS (``VmHWM``: a fresh relay per format, so each peak is that format's).
2. Events with ``models`` distinct model names are posted (OTLP protobuf, in bounded batches);
   once the file sink has them all, ``/metrics`` is scraped several times while the prober runs:
   the exposition's size, the median and worst scrape, the worst ``/livez`` meanwhile.

Goals are printed next to the figures, not asserted. Every loop is bounded in count and time, and
only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import copy
import http.client
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench.hostile import PROTOBUF, HeavyBody, heavy_bodies
from bench.livez_probe import LivezProber, Probe
from bench.loadgen import accepted_events, percentiles
from bench.payloads import build
from bench.procs import HOST, Child, Cores, LineCounter, free_port, relay_environment, wait_ready
from bench.runner import MB, log, workdir

MIB: Final = 1024 * 1024
LIVEZ_GOAL_MS: Final = 100.0
METRICS_BYTES_GOAL: Final = 1_000_000
METRICS_MS_GOAL: Final = 100.0
SLOW_KEPT: Final = 40


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    max_body_bytes: int = 20 * MIB  # the relay's default cap
    models: int = 20_000
    models_per_request: int = 1_000
    scrapes: int = 10
    probe_interval: float = 0.01
    request_timeout: float = 300.0  # one heavy request, or one batch of models
    delivery_timeout: float = 300.0  # until the file sink has every accepted event
    cores: Cores = field(default_factory=Cores.plan)
    keep: bool = False

    @classmethod
    def quick(cls, cores: Cores, keep: bool = False) -> OverloadSettings:
        return cls(
            max_body_bytes=2 * MIB,
            models=2_000,
            models_per_request=500,
            scrapes=5,
            request_timeout=60.0,
            delivery_timeout=60.0,
            cores=cores,
            keep=keep,
        )

    @property
    def probe_seconds(self) -> float:
        """The prober's own bound: longer than anything it watches may take."""
        return self.request_timeout + self.delivery_timeout + 60.0


# -- the relay -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Relay:
    child: Child
    port: int
    lines: LineCounter


@contextmanager
def started_relay(directory: Path, name: str, s: OverloadSettings) -> Iterator[Relay]:
    port = free_port()
    data_dir = directory / f"relay-{name}"
    env = relay_environment(
        port, data_dir, RELAY_SINKS="file", RELAY_MAX_BODY_BYTES=str(s.max_body_bytes)
    )
    child = Child(
        f"relay ({name})", ["-m", "service"], directory / f"relay-{name}.log", s.cores.server, env
    )
    lines = LineCounter(data_dir / "llm-events.jsonl")
    try:
        wait_ready(child, port, "/readyz")
        yield Relay(child, port, lines)
    finally:
        lines.close()
        child.stop(20)


def wait_for_lines(relay: Relay, expected: int, timeout: float) -> float | None:
    """When (``time.monotonic()``) the file sink had written ``expected`` lines; None if it had
    not within ``timeout`` or the relay died."""
    limit = time.monotonic() + timeout
    while time.monotonic() < limit and relay.child.alive():
        if relay.lines.count() >= expected:
            return time.monotonic()
        time.sleep(0.02)
    return None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no answer (the error says why)
    body: bytes
    started: float
    ended: float
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def send(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> Answer:
    """One request on its own connection, timed from the first byte written to the last read."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        return Answer(answer.status, data, started, time.monotonic())
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, b"", started, time.monotonic(), f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def accepted(answer: Answer, content_type: str, sent: int) -> int:
    if answer.status is None:
        return 0
    if content_type == PROTOBUF and 200 <= answer.status < 300:
        rejected = ExportTraceServiceResponse.FromString(answer.body).partial_success
        return sent - rejected.rejected_spans
    return accepted_events(answer.status, answer.body, sent)


def livez_figures(probes: list[Probe], start: float, answered: float) -> dict[str, Any]:
    """The probes in flight at or after ``start`` (the request's first byte); ``answered`` is when
    its answer was in: probes begun until then are "during the request", the rest during
    delivery. ``worst_at_s``, when the worst probe began after ``start``, tells which step of the
    request stalled the relay."""
    window = [p for p in probes if p.ended >= start]
    if not window:
        return {"probes": 0, "failed": 0}
    during = [p.seconds for p in window if p.started <= answered]
    worst = max(window, key=lambda p: p.seconds)
    slow = [p for p in window if p.seconds * 1000 >= LIVEZ_GOAL_MS]
    figures = percentiles([p.seconds for p in window])
    return {
        "probes": len(window),
        "failed": sum(not p.ok for p in window),
        "over_goal": len(slow),
        # When each slow probe began (s after ``start``) and took (ms): the first few suffice.
        "over_goal_probes": [
            (round(p.started - start, 3), round(p.seconds * 1000, 1)) for p in slow[:SLOW_KEPT]
        ],
        "worst_ms": figures["max"],
        "worst_at_s": worst.started - start,
        "p99_ms": figures["p99"],
        "p50_ms": figures["p50"],
        "worst_during_request_ms": max(during) * 1000 if during else None,
    }


# -- 1. the largest body of each format ----------------------------------------------------------


def run_heavy(heavy: HeavyBody, s: OverloadSettings, directory: Path) -> dict[str, Any]:
    headers = {"Content-Type": heavy.content_type}
    if heavy.encoding is not None:
        headers["Content-Encoding"] = heavy.encoding
    with started_relay(directory, heavy.name, s) as relay:
        idle_rss = relay.child.rss_bytes()
        cpu_before = relay.child.cpu_seconds()
        with LivezProber(relay.port, s.probe_interval, s.probe_seconds) as prober:
            answer = send(relay.port, "POST", heavy.path, heavy.body, headers, s.request_timeout)
            events = accepted(answer, heavy.content_type, heavy.events)
            written = wait_for_lines(relay, events, s.delivery_timeout) if events else None
            probes = prober.stop()
        cpu = relay.child.cpu_seconds() - cpu_before
        peak = relay.child.peak_rss_bytes()
        stored = relay.lines.count()
    return {
        "format": heavy.name,
        "path": heavy.path,
        "encoding": heavy.encoding,
        "body_bytes": len(heavy.body),
        "expanded_bytes": heavy.expanded_bytes,
        "events_sent": heavy.events,
        "status": answer.status,
        "error": answer.error,
        "request_seconds": answer.seconds,
        "events_accepted": events,
        "events_written": stored,
        "written_after_answer_seconds": None if written is None else written - answer.ended,
        "livez": livez_figures(probes, answer.started, answer.ended),
        "idle_rss_mb": idle_rss / MB,
        "peak_rss_mb": peak / MB,
        "cpu_s": cpu,
    }


# -- 2. /metrics after many model names ----------------------------------------------------------


def model_bodies(models: int, per_request: int) -> Iterator[tuple[bytes, int]]:
    """OTLP protobuf bodies of the bench's GenAI span, each span with a model name of its own."""
    request = ExportTraceServiceRequest.FromString(build("otlp-proto", 1)[0])
    spans = request.resource_spans[0].scope_spans[0].spans
    template = copy.deepcopy(spans[0])
    named = [
        i
        for i, kv in enumerate(template.attributes)
        if kv.key in ("gen_ai.request.model", "gen_ai.response.model")
    ]
    assert named, "the GenAI span fixture names no model"
    for first in range(0, models, per_request):
        del spans[:]
        count = min(per_request, models - first)
        for index in range(first, first + count):
            span = spans.add()
            span.CopyFrom(template)
            span.trace_id = bytes([0xC0]) + index.to_bytes(15, "big")
            span.span_id = bytes([0xC0]) + index.to_bytes(7, "big")
            for position in named:
                span.attributes[position].value.string_value = f"bench-model-{index:06d}"
        yield request.SerializeToString(), count


def post_models(relay: Relay, s: OverloadSettings) -> dict[str, Any]:
    """Every model name posted, one batch after another (bounded: ``models / per_request``)."""
    headers = {"Content-Type": PROTOBUF}
    sent = events = 0
    statuses: dict[str, int] = {}
    started = time.monotonic()
    for body, count in model_bodies(s.models, s.models_per_request):
        answer = send(relay.port, "POST", "/v1/traces", body, headers, s.request_timeout)
        key = str(answer.status or answer.error)
        statuses[key] = statuses.get(key, 0) + 1
        sent += count
        events += accepted(answer, PROTOBUF, count)
    return {
        "events_sent": sent,
        "events_accepted": events,
        "statuses": statuses,
        "post_seconds": time.monotonic() - started,
    }


_MODEL_LABEL: Final = re.compile(rb'[{,]model="((?:[^"\\]|\\.)*)"')
_FOLDED_MODELS: Final = re.compile(
    rb'^relay_metric_label_values_folded_total\{label="model"\} (\S+)$', re.MULTILINE
)


def exposition_figures(exposition: bytes) -> dict[str, Any]:
    """What the scrape holds: its size, its series, the model label's distinct values."""
    folded = _FOLDED_MODELS.search(exposition)
    return {
        "bytes": len(exposition),
        "series": sum(1 for line in exposition.splitlines() if line and line[:1] != b"#"),
        "model_label_values": len(set(_MODEL_LABEL.findall(exposition))),
        "models_folded": float(folded.group(1)) if folded else None,
    }


def scrape(relay: Relay, s: OverloadSettings) -> dict[str, Any]:
    """``s.scrapes`` scrapes of /metrics, one after another, while the prober runs."""
    answers: list[Answer] = []
    with LivezProber(relay.port, s.probe_interval, s.probe_seconds) as prober:
        for _ in range(s.scrapes):
            answers.append(send(relay.port, "GET", "/metrics", None, {}, s.request_timeout))
        probes = prober.stop()
    times = [a.seconds * 1000 for a in answers if a.status == 200]
    last = next((a.body for a in reversed(answers) if a.status == 200), b"")
    return {
        "scrapes": len(answers),
        "scrapes_ok": len(times),
        "scrape_p50_ms": statistics.median(times) if times else None,
        "scrape_worst_ms": max(times, default=None),
        "exposition": exposition_figures(last),
        "livez": livez_figures(probes, answers[0].started, answers[-1].ended),
    }


def run_models(s: OverloadSettings, directory: Path) -> dict[str, Any]:
    with started_relay(directory, "models", s) as relay:
        posted = post_models(relay, s)
        written = wait_for_lines(relay, posted["events_accepted"], s.delivery_timeout)
        # Scraped once the file sink is idle: the figures are the exposition's, not delivery's.
        scraped = scrape(relay, s)
        peak = relay.child.peak_rss_bytes()
    return {
        "models": s.models,
        **posted,
        "all_written": written is not None,
        **scraped,
        "peak_rss_mb": peak / MB,
    }


# -- both ----------------------------------------------------------------------------------------


def run_overload(s: OverloadSettings) -> dict[str, Any]:
    with workdir(s.keep) as directory:
        formats = []
        for heavy in heavy_bodies(s.max_body_bytes):
            log(
                f"overload: {heavy.name}, {len(heavy.body) / MIB:.1f} MiB"
                f" ({heavy.expanded_bytes / MIB:.1f} MiB decoded), {heavy.events} events"
            )
            formats.append(run_heavy(heavy, s, directory))
        log(f"overload: /metrics after {s.models:,} model names")
        models = run_models(s, directory)
    return {
        "max_body_bytes": s.max_body_bytes,
        "probe_interval_ms": s.probe_interval * 1000,
        "pinning": s.cores.describe(),
        "goals": {
            "livez_ms": LIVEZ_GOAL_MS,
            "metrics_bytes": METRICS_BYTES_GOAL,
            "metrics_ms": METRICS_MS_GOAL,
        },
        "formats": formats,
        "metrics": models,
    }
