"""The machine a run came from, and the tables (Markdown, so they paste into BENCHMARKS.md)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("aiohttp", "uvloop", "orjson", "protobuf", "opentelemetry-proto")


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; cells are used as given."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def scenarios_table(results: list[dict[str, Any]]) -> str:
    header = [
        "scenario",
        "target",
        "accepted ev/s",
        "delivered ev/s (all sinks)",
        "p50 ack ms",
        "p99 ack ms",
        "peak RSS MiB",
        "CPU s / 1k ev",
        "server CPU",
    ]
    rows = []
    for result in results:
        relay, null, ratio = result["relay"], result["null"], result["ratios"]
        name = f"{result['scenario']} ({result['events_per_request']} ev/req)"
        for label, row in (("relay", relay), ("null receiver", null)):
            delivered = _n(row.get("delivered_eps")) if label == "relay" else "n/a"
            rows.append(
                [
                    name,
                    label,
                    _n(row["accepted_eps"]),
                    delivered,
                    _n(row["p50_ms"], 1),
                    _n(row["p99_ms"], 1),
                    _n(row["peak_rss_mb"], 1),
                    _n(row["cpu_s_per_1k_events"], 3),
                    f"{_n(row['server_cpu_util'] * 100)}%",
                ]
            )
            name = ""
        keys = (
            "accepted_eps",
            "delivered_eps",
            "p50_ms",
            "p99_ms",
            "peak_rss_mb",
            "cpu_s_per_1k_events",
        )
        rows.append(["", "relay / null", *(_ratio(ratio[k]) for k in keys), ""])
    return _table(header, rows)


def details_table(results: list[dict[str, Any]]) -> str:
    header = [
        "scenario",
        "requests/s relay / null",
        "relay errors",
        "accepted events",
        "caught up after (s): file / tempo / datadog",
        "load s",
        "load generator CPU relay / null",
    ]
    rows = []
    for result in results:
        relay, null = result["relay"], result["null"]
        delivered = relay["delivered"]
        caught = " / ".join(_n(delivered[s]["seconds"], 2) for s in ("file", "tempo", "datadog"))
        errors = ", ".join(f"{k}: {v}" for k, v in relay["errors"].items()) or "none"
        rate = " / ".join(_n(r["requests_ok"] / r["load_seconds"]) for r in (relay, null))
        cpu = " / ".join(f"{_n(r['loadgen_cpu_util'] * 100)}%" for r in (relay, null))
        rows.append(
            [
                result["scenario"],
                rate,
                errors,
                _n(relay["accepted_events"]),
                caught,
                f"{relay['load_seconds']:.1f}",
                cpu,
            ]
        )
    return _table(header, rows)


def targets(results: list[dict[str, Any]], soak: dict[str, Any] | None) -> list[str]:
    """The issue's targets, read against this run."""
    found = []
    by_name = {r["scenario"]: r for r in results}
    if "otlp-json" in by_name:
        ratio = by_name["otlp-json"]["ratios"]["accepted_eps"]
        verdict = "met" if ratio is not None and ratio >= 0.5 else "NOT met"
        found.append(
            f"single-span OTLP/JSON at >= 50% of the null receiver's rate: {_ratio(ratio)}"
            f" -> {verdict}"
        )
    if "otlp-proto" in by_name:
        delivered = by_name["otlp-proto"]["relay"]["delivered_eps"]
        verdict = "met" if delivered is not None and delivered >= 10_000 else "NOT met"
        found.append(
            f"100-span protobuf delivered to all sinks at >= 10,000 spans/s: {_n(delivered)}"
            f" -> {verdict}"
        )
    if soak is not None:
        rss = soak["relay"]["rss_mb"]
        found.append(
            f"memory over the soak: start {_n(rss['start_10s'], 1)} MiB, middle"
            f" {_n(rss['middle'], 1)} MiB, end {_n(rss['end'], 1)} MiB,"
            f" max {_n(rss['max'], 1)} MiB,"
            f" slope {_n(rss['slope_mb_per_min_after_20pct'], 2)} MiB/min"
        )
    return found


def soak_table(soak: dict[str, Any]) -> str:
    relay = soak["relay"]
    rss = relay["rss_mb"]
    header = [
        "scenarios",
        "load s",
        "accepted ev/s",
        "delivered ev/s",
        "RSS MiB at 10 s / middle / end",
        "max",
        "slope after 20%",
        "CPU s / 1k ev",
    ]
    row = [
        ", ".join(soak["scenarios"]),
        f"{relay['load_seconds']:.0f}",
        _n(relay["accepted_eps"]),
        _n(relay["delivered_eps"]),
        f"{_n(rss['start_10s'], 1)} / {_n(rss['middle'], 1)} / {_n(rss['end'], 1)}",
        _n(rss["max"], 1),
        f"{_n(rss['slope_mb_per_min_after_20pct'], 2)} MiB/min",
        _n(relay["cpu_s_per_1k_events"], 3),
    ]
    return _table(header, [row])


def _size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def overload_table(overload: dict[str, Any]) -> str:
    """One row per format: its largest body, and /livez while the relay took it."""
    header = [
        "format",
        "body",
        "events sent / accepted",
        "status",
        "request s",
        "/livez worst ms (s into request)",
        "/livez p99 ms",
        f"/livez probes >= {overload['goals']['livez_ms']:g} ms",
        "written s after answer",
        "peak RSS MiB",
        "relay CPU s",
    ]
    rows = []
    for row in overload["formats"]:
        body = _size(row["body_bytes"])
        if row["encoding"]:
            body += f" {row['encoding']} ({_size(row['expanded_bytes'])} decoded)"
        livez = row["livez"]
        rows.append(
            [
                row["format"],
                body,
                f"{_n(row['events_sent'])} / {_n(row['events_accepted'])}",
                str(row["status"] or row["error"]),
                _n(row["request_seconds"], 2),
                f"{_n(livez.get('worst_ms'), 1)} ({_n(livez.get('worst_at_s'), 2)})",
                _n(livez.get("p99_ms"), 1),
                f"{_n(livez.get('over_goal'))} of {_n(livez['probes'])}",
                _n(row["written_after_answer_seconds"], 2),
                _n(row["peak_rss_mb"], 1),
                _n(row["cpu_s"], 2),
            ]
        )
    return _table(header, rows)


def metrics_table(metrics: dict[str, Any]) -> str:
    exposition = metrics["exposition"]
    header = [
        "model names posted / accepted",
        "exposition bytes",
        "series",
        "model label values (folded)",
        "scrape median / worst ms",
        "/livez worst ms during scrapes",
    ]
    row = [
        f"{_n(metrics['events_sent'])} / {_n(metrics['events_accepted'])}",
        _n(exposition["bytes"]),
        _n(exposition["series"]),
        f"{_n(exposition['model_label_values'])} ({_n(exposition['models_folded'])})",
        f"{_n(metrics['scrape_p50_ms'], 1)} / {_n(metrics['scrape_worst_ms'], 1)}",
        _n(metrics["livez"].get("worst_ms"), 1),
    ]
    return _table(header, [row])


def _verdict(value: float | None, goal: float) -> str:
    return "met" if value is not None and value < goal else "NOT met"


def overload_goals(overload: dict[str, Any]) -> list[str]:
    """The issue's goals, read against this run (printed, never asserted)."""
    goals = overload["goals"]
    found = []
    for row in overload["formats"]:
        worst = row["livez"].get("worst_ms")
        found.append(
            f"/livez under {goals['livez_ms']:g} ms with the largest {row['format']} body:"
            f" worst {_n(worst, 1)} ms -> {_verdict(worst, goals['livez_ms'])}"
        )
    metrics = overload["metrics"]
    size = metrics["exposition"]["bytes"]
    worst_scrape = metrics["scrape_worst_ms"]
    livez = metrics["livez"].get("worst_ms")
    found += [
        f"/metrics under {_n(goals['metrics_bytes'])} bytes after {_n(metrics['models'])} models:"
        f" {_n(size)} -> {_verdict(size, goals['metrics_bytes'])}",
        f"/metrics under {goals['metrics_ms']:g} ms: worst {_n(worst_scrape, 1)} ms"
        f" -> {_verdict(worst_scrape, goals['metrics_ms'])}",
        f"/livez under {goals['livez_ms']:g} ms during the scrapes: worst {_n(livez, 1)} ms"
        f" -> {_verdict(livez, goals['livez_ms'])}",
    ]
    return found


def render(report: dict[str, Any]) -> str:
    info = report["machine"]
    lines = [
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB,"
        f" Python {info['python']}, {info['platform']}, load average at start"
        f" {info['load_average_at_start']}",
        f"command: {report['command']}",
        f"settings: {report['settings']}",
        "",
    ]
    if report.get("scenarios"):
        lines += [scenarios_table(report["scenarios"]), "", details_table(report["scenarios"]), ""]
    if report.get("soak"):
        lines += [soak_table(report["soak"]), ""]
    found = targets(report.get("scenarios") or [], report.get("soak"))
    if report.get("overload"):
        overload = report["overload"]
        lines += [
            f"overload: bodies just under {_size(overload['max_body_bytes'])}"
            f" (RELAY_MAX_BODY_BYTES), /livez probed every {overload['probe_interval_ms']:g} ms"
            " from a process of its own; a fresh relay per row",
            "",
            overload_table(overload),
            "",
            metrics_table(overload["metrics"]),
            "",
        ]
        found += overload_goals(overload)
    lines += [f"- {line}" for line in found]
    return "\n".join(lines)
