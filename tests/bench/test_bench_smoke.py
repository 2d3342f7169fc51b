"""``python -m bench --quick``: every scenario for about two seconds, to keep the harness working.

No speed is asserted: only that the run completes and the report is whole and sane (every figure
present, something accepted, and every sink received exactly what the relay acknowledged).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

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
        timeout=150,
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
