"""One benchmark run: start the peers and the relay (or the null receiver), load it, measure.

The relay runs as users run it (``python -m service``) with the durable spool and all three sinks:
the file sink writes into the run's temporary directory, Tempo and Datadog point at ``bench.peers``
on loopback. What the sinks received is counted from the outside: lines in the file sink's output
(followed across rotations), spans counted by each peer.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from bench.loadgen import DRAIN_SECONDS
from bench.payloads import SCENARIOS
from bench.procs import (
    Child,
    Cores,
    LineCounter,
    Poller,
    free_port,
    http_get,
    relay_environment,
    wait_ready,
)

SINKS: Final = ("file", "tempo", "datadog")
MB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: float
    connections: int
    client: str = "raw"
    # Events/s for the whole run, shared equally by its scenarios; None: as fast as answers come.
    rate: float | None = None
    variants: int = 64
    max_requests: int = 5_000_000
    drain_timeout: float = 60.0
    poll_interval: float = 0.05
    cores: Cores = field(default_factory=Cores.plan)
    keep: bool = False
    # More RELAY_* settings for the relay (--relay-setting), e.g. a sink's filter or content
    # policy, to measure what it costs. Settings that leave events out would stall the drain.
    relay_settings: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Sample:
    at: float
    counts: dict[str, int]
    cpu_s: float


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _started(stack: ExitStack, child: Child) -> Child:
    stack.callback(child.stop)
    return child


def _loadgen(
    stack: ExitStack,
    directory: Path,
    port: int,
    scenario: str,
    connections: int,
    s: Settings,
    share: int = 1,
) -> tuple[Child, Path]:
    out = directory / f"loadgen-{scenario}-{port}.json"
    args = [
        "-m",
        "bench.loadgen",
        f"--port={port}",
        f"--scenario={scenario}",
        f"--connections={connections}",
        f"--seconds={s.seconds}",
        f"--max-requests={s.max_requests}",
        f"--variants={s.variants}",
        f"--client={s.client}",
        f"--out={out}",
    ]
    if s.rate is not None:
        args.append(f"--rate={s.rate / share / SCENARIOS[scenario].events_per_request}")
    child = Child(f"loadgen {scenario}", args, directory / "loadgen.log", s.cores.client)
    return _started(stack, child), out


def _load_results(children: Sequence[tuple[Child, Path]]) -> list[dict[str, Any]]:
    results = []
    for child, out in children:
        if child.process.returncode != 0 or not out.exists():
            raise RuntimeError(f"{child.name} failed ({child.process.returncode}):\n{child.log()}")
        results.append(orjson.loads(out.read_bytes()))
    return results


def _load_summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    started = min(r["started_at"] for r in results)
    ended = max(r["ended_at"] for r in results)
    seconds = max(ended - started, 1e-9)
    events = sum(r["events"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for key, count in r["errors"].items():
            errors[key] = errors.get(key, 0) + count
    return {
        "started_at": started,
        "load_seconds": round(seconds, 3),
        "requests_ok": sum(r["ok"] for r in results),
        "errors": errors,
        "unanswered": sum(r["unanswered"] for r in results),
        "accepted_events": events,
        "accepted_eps": events / seconds,
        "p50_ms": max(r["latency_ms"].get("p50", 0.0) for r in results),
        "p99_ms": max(r["latency_ms"].get("p99", 0.0) for r in results),
        "latency_ms": {r["scenario"]: r["latency_ms"] for r in results},
        "loadgen_cpu_util": sum(r["cpu_s"] for r in results) / seconds,
    }


def _wait_loadgens(children: Sequence[tuple[Child, Path]], s: Settings) -> None:
    limit = time.monotonic() + s.seconds + DRAIN_SECONDS + 60
    for child, _ in children:
        if child.wait(max(0.1, limit - time.monotonic())) is None:
            child.stop(5)
            raise RuntimeError(f"{child.name} overran its bounds and was stopped")


# -- the ceiling ---------------------------------------------------------------------------------


def run_null(scenario: str, s: Settings, directory: Path) -> dict[str, Any]:
    """The same load against ``bench.null_receiver`` on the relay's core."""
    with ExitStack() as stack:
        port = free_port()
        server = _started(
            stack,
            Child(
                "null receiver",
                ["-m", "bench.null_receiver", f"--port={port}"],
                directory / "null.log",
                s.cores.server,
            ),
        )
        wait_ready(server, port, "/ready")
        cpu_before = server.cpu_seconds()
        loadgen = _loadgen(stack, directory, port, scenario, s.connections, s)
        _wait_loadgens([loadgen], s)
        cpu = server.cpu_seconds() - cpu_before
        summary = _load_summary(_load_results([loadgen]))
        peak = server.peak_rss_bytes()
    summary.pop("started_at")
    return {
        "target": "null",
        **summary,
        "peak_rss_mb": peak / MB,
        "cpu_s": cpu,
        "cpu_s_per_1k_events": cpu / max(1, summary["accepted_events"]) * 1000,
        # The null receiver does nothing outside the load: its CPU over the load's duration.
        "server_cpu_util": cpu / summary["load_seconds"],
    }


# -- the relay -----------------------------------------------------------------------------------


def sink_settings(tempo_port: int, datadog_port: int) -> dict[str, str]:
    """All three sinks: the file in the data directory, Tempo and Datadog at ``bench.peers``."""
    return {
        "RELAY_SINKS": ",".join(SINKS),
        "RELAY_TEMPO_ENDPOINT": f"http://127.0.0.1:{tempo_port}/v1/traces",
        "RELAY_DATADOG_URL": f"http://127.0.0.1:{datadog_port}",
        "DD_API_KEY": "bench-not-a-key",
        "DD_LLMOBS_ML_APP": "bench",
    }


def run_relay(
    scenarios: Sequence[str], s: Settings, directory: Path, *, rss_every: float = 1.0
) -> dict[str, Any]:
    """Load the relay with every scenario at once (one load generator each), then wait until
    every sink has received everything it acknowledged."""
    data_dir = directory / "relay-data"
    with ExitStack() as stack:
        tempo_port, datadog_port, port = free_port(), free_port(), free_port()
        peers = _started(
            stack,
            Child(
                "peers",
                [
                    "-m",
                    "bench.peers",
                    f"--tempo-port={tempo_port}",
                    f"--datadog-port={datadog_port}",
                ],
                directory / "peers.log",
                s.cores.client,
            ),
        )
        wait_ready(peers, tempo_port, "/counts")
        wait_ready(peers, datadog_port, "/counts")
        relay = _started(
            stack,
            Child(
                "relay",
                ["-m", "service"],
                directory / "relay.log",
                s.cores.server,
                env=relay_environment(
                    port, data_dir, **sink_settings(tempo_port, datadog_port), **s.relay_settings
                ),
            ),
        )
        wait_ready(relay, port, "/readyz")
        tempo, datadog = Poller(tempo_port), Poller(datadog_port)
        stack.callback(tempo.close)
        stack.callback(datadog.close)
        lines = LineCounter(data_dir / "llm-events.jsonl")
        stack.callback(lines.close)

        def counts() -> dict[str, int]:
            return {
                "file": lines.count(),
                "tempo": int(orjson.loads(tempo.get("/counts"))["spans"]),
                "datadog": int(orjson.loads(datadog.get("/counts"))["spans"]),
            }

        cpu_before = relay.cpu_seconds()
        connections = max(1, s.connections // len(scenarios))
        loadgens = [
            _loadgen(stack, directory, port, name, connections, s, len(scenarios))
            for name in scenarios
        ]
        samples: list[Sample] = []
        rss_samples: list[tuple[float, int]] = []
        load_limit = time.monotonic() + s.seconds + DRAIN_SECONDS + 60
        summary: dict[str, Any] | None = None
        drain_limit = float("inf")
        while True:
            now = time.monotonic()
            sample = Sample(now, counts(), relay.cpu_seconds())
            samples.append(sample)
            if not rss_samples or now - rss_samples[-1][0] >= rss_every:
                rss_samples.append((now, relay.rss_bytes()))
            if not relay.alive():
                raise RuntimeError(f"the relay exited during the run:\n{relay.log()}")
            if summary is None and all(not child.alive() for child, _ in loadgens):
                summary = _load_summary(_load_results(loadgens))
                drain_limit = now + s.drain_timeout
            if summary is not None:
                total = summary["accepted_events"]
                if all(sample.counts[sink] >= total for sink in SINKS) or now > drain_limit:
                    break
            elif now > load_limit:
                _wait_loadgens(loadgens, s)  # raises: a load generator overran its bounds
            time.sleep(s.poll_interval)
        peak = relay.peak_rss_bytes()
        status = orjson.loads(http_get(port, "/v1/status")[1])
        relay.stop(20)
        log_text = relay.log(tail=1 << 20)

    total = summary["accepted_events"]
    started = summary.pop("started_at")
    delivered: dict[str, dict[str, Any]] = {}
    for sink in SINKS:
        reached = next((x for x in samples if x.counts[sink] >= total), None)
        delivered[sink] = {
            "events": samples[-1].counts[sink],
            "seconds": None if reached is None else round(reached.at - started, 3),
        }
    complete = all(d["seconds"] is not None for d in delivered.values())
    last = max((d["seconds"] or 0.0) for d in delivered.values())
    # CPU until the last sink caught up (or until the wait for it gave up).
    end_sample = samples[-1]
    if complete:
        end_sample = next((x for x in samples if x.at - started >= last), end_sample)
    cpu = end_sample.cpu_s - cpu_before
    window = max(1e-9, end_sample.at - started)
    result: dict[str, Any] = {
        "target": "relay",
        **summary,
        "delivered": delivered,
        "delivered_complete": complete,
        "delivered_eps": total / last if complete and last > 0 else None,
        "peak_rss_mb": peak / MB,
        "cpu_s": cpu,
        "cpu_s_per_1k_events": cpu / max(1, total) * 1000,
        "server_cpu_util": cpu / window,
        "relay_status": {
            name: {
                k: state.get(k)
                for k in ("sent", "backlog", "retries", "dead_lettered", "last_error")
            }
            for name, state in status.get("sinks", {}).items()
        },
        "relay_log_problems": log_problems(log_text),
        "rss_mb_series": [(round(at - started, 2), round(rss / MB, 1)) for at, rss in rss_samples],
    }
    return result


def log_problems(text: str) -> dict[str, int]:
    """How many warning and error lines the relay logged, by level and event name."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if line.strip():
                found["unstructured"] = found.get("unstructured", 0) + 1
            continue
        if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
            if record.get("event") == "ingest_open":
                continue  # the bench runs without ingest tokens on purpose
            key = f"{record['level']}: {record.get('event')}"
            found[key] = found.get(key, 0) + 1
    return found


def run_scenario(scenario: str, s: Settings) -> dict[str, Any]:
    spec = SCENARIOS[scenario]
    with workdir(s.keep) as directory:
        log(f"{scenario}: null receiver, {s.seconds:g}s, {s.connections} connections")
        null = run_null(scenario, s, directory)
        log(f"{scenario}: relay with file, tempo and datadog sinks")
        relay = run_relay([scenario], s, directory)
    relay.pop("rss_mb_series")
    return {
        "scenario": scenario,
        "title": spec.title,
        "events_per_request": spec.events_per_request,
        "relay": relay,
        "null": null,
        "ratios": ratios(relay, null),
    }


RATIO_FIGURES: Final = (
    "accepted_eps",
    "delivered_eps",
    "p50_ms",
    "p99_ms",
    "peak_rss_mb",
    "cpu_s_per_1k_events",
)


def ratios(relay: dict[str, Any], null: dict[str, Any]) -> dict[str, float | None]:
    """Every relay figure over the null receiver's; delivered is compared with its accepted rate
    (the null receiver delivers nothing)."""
    found: dict[str, float | None] = {}
    for figure in RATIO_FIGURES:
        mine = relay.get(figure)
        theirs = null.get("accepted_eps" if figure == "delivered_eps" else figure)
        found[figure] = mine / theirs if mine is not None and theirs else None
    return found


def run_soak(scenarios: Sequence[str], s: Settings) -> dict[str, Any]:
    """All scenarios at once for ``s.seconds``: is the relay's memory flat?"""
    with workdir(s.keep) as directory:
        log(f"soak: {', '.join(scenarios)} at once for {s.seconds:g}s")
        relay = run_relay(scenarios, s, directory, rss_every=1.0)
    series: list[tuple[float, float]] = relay["rss_mb_series"]
    during = [(t, mb) for t, mb in series if 0 <= t <= relay["load_seconds"]]

    def at(fraction: float) -> float | None:
        if not during:
            return None
        target = relay["load_seconds"] * fraction
        return min(during, key=lambda point: abs(point[0] - target))[1]

    tail = [(t, mb) for t, mb in during if t >= relay["load_seconds"] * 0.2]
    relay["rss_mb"] = {
        "start_10s": at(10 / max(relay["load_seconds"], 10)),
        "middle": at(0.5),
        "end": at(1.0),
        "max": max((mb for _, mb in during), default=None),
        "slope_mb_per_min_after_20pct": _slope(tail) * 60 if len(tail) > 2 else None,
    }
    return {"scenarios": list(scenarios), "relay": relay}


def _slope(points: Sequence[tuple[float, float]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var if var else 0.0
