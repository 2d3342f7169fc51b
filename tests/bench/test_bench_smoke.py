"""``python -m bench --quick``: every scenario for about two seconds, then the overload figures
with 2 MiB bodies and 2,000 model names, to keep the harness working.

No speed is asserted: only that the run completes and the report is whole and sane (every figure
present, something accepted, and every sink received exactly what the relay acknowledged; each
largest body answered 2xx with all its events accepted and written).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.hostile import FORMATS
from bench.payloads import SCENARIOS
from bench.runner import RATIO_FIGURES, SINKS

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("accepted_eps", "p50_ms", "p99_ms", "peak_rss_mb", "cpu_s_per_1k_events")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def test_the_report_names_the_machine_and_the_command(report: dict[str, Any]) -> None:
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["cpu_model"] and machine["python"]
    assert report["command"].startswith("python -m bench")
    assert [s["scenario"] for s in report["scenarios"]] == list(SCENARIOS)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_figure_is_present(report: dict[str, Any], scenario: str) -> None:
    result = next(s for s in report["scenarios"] if s["scenario"] == scenario)
    for target in ("relay", "null"):
        for figure in FIGURES:
            value = result[target][figure]
            assert isinstance(value, int | float) and value > 0, (target, figure, value)
    assert result["relay"]["delivered_eps"] > 0
    for figure in RATIO_FIGURES:
        assert result["ratios"][figure] is not None and result["ratios"][figure] > 0, figure


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_sink_received_what_was_accepted(report: dict[str, Any], scenario: str) -> None:
    relay = next(s for s in report["scenarios"] if s["scenario"] == scenario)["relay"]
    accepted = relay["accepted_events"]
    assert accepted > 0
    assert accepted == relay["requests_ok"] * SCENARIOS[scenario].events_per_request
    assert relay["errors"] == {} and relay["unanswered"] == 0
    for sink in SINKS:
        assert relay["delivered"][sink]["events"] == accepted, sink
        assert relay["delivered"][sink]["seconds"] is not None, sink
        state = relay["relay_status"][sink]
        assert state["dead_lettered"] == 0, (sink, state)
    assert relay["delivered_complete"]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_the_overload_figures_cover_every_format(report: dict[str, Any]) -> None:
    overload = report["overload"]
    assert [row["format"] for row in overload["formats"]] == list(FORMATS)
    assert overload["max_body_bytes"] == 2 * 1024 * 1024


@pytest.mark.parametrize("name", FORMATS)
def test_each_largest_body_is_accepted_whole(report: dict[str, Any], name: str) -> None:
    overload = report["overload"]
    row = next(r for r in overload["formats"] if r["format"] == name)
    assert row["status"] == 200 and row["error"] is None, row
    assert overload["max_body_bytes"] / 2 < row["expanded_bytes"] <= overload["max_body_bytes"]
    assert row["events_sent"] > 0
    assert row["events_accepted"] == row["events_sent"]
    assert row["events_written"] == row["events_accepted"]
    for figure in ("request_seconds", "written_after_answer_seconds", "peak_rss_mb", "cpu_s"):
        assert _positive(row[figure]), (figure, row[figure])
    livez = row["livez"]
    assert livez["probes"] > 0 and livez["failed"] == 0, livez
    for figure in ("worst_ms", "p99_ms", "p50_ms", "worst_during_request_ms"):
        assert _positive(livez[figure]), (figure, livez)


def test_the_metrics_figures_after_many_models(report: dict[str, Any]) -> None:
    metrics = report["overload"]["metrics"]
    assert metrics["events_sent"] == metrics["models"] == 2_000
    assert metrics["events_accepted"] == metrics["models"] and metrics["all_written"]
    assert set(metrics["statuses"]) == {"200"}
    assert metrics["scrapes_ok"] == metrics["scrapes"] > 0
    assert _positive(metrics["scrape_p50_ms"]) and _positive(metrics["scrape_worst_ms"])
    exposition = metrics["exposition"]
    assert _positive(exposition["bytes"]) and _positive(exposition["series"])
    # Every model name is booked somewhere: under its own label value or folded into "other".
    assert 0 < exposition["model_label_values"] <= metrics["models"] + 1
    assert exposition["model_label_values"] + (exposition["models_folded"] or 0) >= 2_000
    assert metrics["livez"]["probes"] > 0 and _positive(metrics["livez"]["worst_ms"])
