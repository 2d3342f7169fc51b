"""Sender-chosen label values are bounded: past the budget, events are booked under ``other``
and counted, so that 20,000 model names cannot become hundreds of thousands of series."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas import LLMEvent
from telemetry.label_budget import FOLDED, LABEL_VALUES_MAX
from telemetry.metrics import Metrics


def event(model: str, error_type: str | None = None) -> LLMEvent:
    built: dict[str, Any] = {
        "source": {"format": "native", "gateway": "g", "test": False},
        "operation": "chat",
        "request_model": model,
        "usage": {"input_tokens": 3},
        "cost": {"total": 0.5, "currency": "USD", "source": "gateway"},
        "status": "ok",
    }
    if error_type is not None:
        built["status"] = "error"
        built["error"] = {"type": error_type}
    return built  # type: ignore[return-value]


def samples(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    text = generate_latest(metrics.registry).decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_models_past_the_budget_are_other_and_counted_and_nothing_is_lost() -> None:
    metrics = Metrics()
    limit = LABEL_VALUES_MAX["model"]
    extra = 37
    metrics.observe_events([event(f"model-{n}") for n in range(limit + extra)])
    metrics.observe_events([event("model-0"), event("another-new-one")])
    requests = samples(metrics, "llm_requests_total")
    models = {labels["model"] for labels, _ in requests}
    assert len(models) == limit + 1 and FOLDED in models
    assert "model-0" in models  # a value seen before the budget ran out keeps its own series
    assert sum(value for _, value in requests) == limit + extra + 2  # every event counted
    folded = {
        labels["label"]: value
        for labels, value in samples(metrics, "relay_metric_label_values_folded_total")
    }
    assert folded["model"] == extra + 1
    assert folded["provider"] == 0  # exported at 0 from the start, like every failure counter
    cost = sum(value for _, value in samples(metrics, "llm_cost_usd_total"))
    assert cost == 0.5 * (limit + extra + 2)


def test_error_types_are_bounded_too() -> None:
    metrics = Metrics()
    metrics.observe_events([event("m", error_type=f"Error{n}") for n in range(500)])
    errors = samples(metrics, "llm_errors_total")
    assert len({labels["error_type"] for labels, _ in errors}) <= 51
    assert sum(value for _, value in errors) == 500
