"""The relay's failure counters exist from its start, at 0, for every enabled sink and ingest route
and every reason they are counted under: Prometheus' ``increase()`` only sees a rise from a sample
it already has, so a counter first exported at 512 dead letters never fires the alert on them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from receiver.ingest import INGRESS
from schemas import LLMEvent
from telemetry.metrics import (
    DEAD_LETTER_REASONS,
    INGEST_REJECTION_REASONS,
    SEND_FAILURE_REASONS,
    Metrics,
)
from tests.helpers.ports import free_port
from tests.helpers.relay import ROOT, RelayProcess

Labels = frozenset[tuple[str, str]]


def scrape(relay: RelayProcess) -> dict[str, dict[Labels, float]]:
    """``/metrics`` as {sample name: {label set: value}}."""
    response = relay.request("GET", "/metrics")
    assert response.status == 200
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(response.data.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def series(**labels: str) -> Labels:
    return frozenset(labels.items())


def test_a_fresh_relay_exports_every_failure_counter_at_zero(tmp_path: Path) -> None:
    sinks = ("file", "otlp")
    env = {
        "RELAY_SINKS": ",".join(sinks),
        # Nothing listens there; nothing is sent either, since no event is posted.
        "RELAY_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces",
    }
    with RelayProcess(tmp_path / "data", env) as relay:
        samples = scrape(relay)

    expected: dict[str, set[Labels]] = {
        "relay_sink_sent_events_total": {series(sink=s) for s in sinks},
        "relay_sink_retries_total": {series(sink=s) for s in sinks},
        "relay_sink_partial_rejected_events_total": {series(sink=s) for s in sinks},
        "relay_sink_send_failures_total": {
            series(sink=s, reason=r) for s in sinks for r in SEND_FAILURE_REASONS
        },
        "relay_sink_dead_lettered_events_total": {
            series(sink=s, reason=r) for s in sinks for r in DEAD_LETTER_REASONS
        },
        "relay_items_rejected_total": {
            series(route=i.name, reason=r) for i in INGRESS for r in INGEST_REJECTION_REASONS
        },
    }
    for name, label_sets in expected.items():
        assert samples.get(name, {}) == dict.fromkeys(label_sets, 0.0), name


# -- the reasons listed are the reasons counted ---------------------------------------------------

# Where a reason is written as a literal, and which argument of the call holds it.
_REASON_ARGUMENT = {
    "_dead_letter": 1,  # (events, reason, error)
    "_split_or_dead_letter": 2,  # (events, oldest, reason, error)
    "write_and_book": 1,  # (book, reason, error, ...)
    "AttemptFailed": 0,  # (reason, message, seconds)
}


def _literal_reasons(path: Path) -> Iterator[tuple[str, str]]:
    """(call, reason) for every string literal passed as a reason in ``path``, and every string
    returned by ``_failure_reason``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            index = _REASON_ARGUMENT.get(name)
            if index is not None and len(node.args) > index:
                argument = node.args[index]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    yield name, argument.value
        elif isinstance(node, ast.FunctionDef) and node.name == "_failure_reason":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and isinstance(inner.value, ast.Constant):
                    yield "AttemptFailed", str(inner.value.value)


def test_every_reason_the_dispatcher_books_is_exported() -> None:
    """A reason added to the dispatcher and not to ``telemetry.metrics`` would again be a series
    born at its first count."""
    found = set(_literal_reasons(ROOT / "sinks" / "dispatcher.py"))
    failures = {reason for call, reason in found if call == "AttemptFailed"}
    dead_letters = {reason for call, reason in found if call != "AttemptFailed"}
    assert failures and dead_letters, "the dispatcher's reasons moved: update this reading"
    assert failures <= set(SEND_FAILURE_REASONS)
    assert dead_letters <= set(DEAD_LETTER_REASONS)


def _rejection_reasons(path: Path) -> Iterator[str]:
    """The reasons ``path`` counts refusals under: literal reasons given to
    ``items_rejected.labels(route, reason)``, and the strings ``_count_refusal`` maps to."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "labels"
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "items_rejected"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Constant)
        ):
            yield str(node.args[1].value)
        elif isinstance(node, ast.FunctionDef) and node.name == "_count_refusal":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Dict):
                    yield from (str(v.value) for v in inner.values if isinstance(v, ast.Constant))
                elif isinstance(inner, ast.Call) and getattr(inner.func, "attr", "") == "get":
                    yield from (str(a.value) for a in inner.args[1:] if isinstance(a, ast.Constant))


def test_every_reason_ingest_counts_is_exported() -> None:
    found = set(_rejection_reasons(ROOT / "receiver" / "ingest.py"))
    assert len(found) > 2, "the ingest reasons moved: update this reading"
    assert found <= set(INGEST_REJECTION_REASONS)


def test_cost_is_booked_by_source_billed_apart_from_estimated() -> None:
    """``llm_cost_usd_total{source}``: ``gateway`` for what a sender reported, ``table`` for the
    relay's price-table estimate; an unknown cost adds nothing, a test event neither."""
    metrics = Metrics()

    def call(cost: dict[str, Any], test: bool = False) -> LLMEvent:
        built = {
            "source": {"format": "native", "gateway": "g", "test": test},
            "provider": "openai",
            "upstream": "openai",
            "request_model": "gpt-4o",
            "usage": {"input_tokens": 3},
            "cost": {"currency": "USD", **cost},
            "status": "ok",
        }
        return built  # type: ignore[return-value]

    table = {"source": "table", "table": "genai-prices 0.2.3"}
    metrics.observe_events(
        [
            call({"total": 0.5, "source": "gateway"}),
            call({"total": 0.25, "source": "gateway"}),
            call({"total": 0.125, **table}),
            call({"total": 0.0625, "source": "unknown"}),  # an amount a sender sent: reported
            call({"source": "unknown"}),
            call({"total": 8.0, **table}, test=True),
        ]
    )
    text = generate_latest(metrics.registry).decode()
    costs = {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_cost_usd_total"
    }
    assert costs == {"gateway": 0.8125, "table": 0.125}
