"""Table cost through the running relay: what real senders posted, the file sink's events and the
relay's metrics.

Calls whose sender reported no cost (OpenLLMetry's and the OpenAI v2 instrumentation's captured
spans, an Otoroshi audit without ``costs``) end in the file sink with ``cost.source == "table"``,
the table's version, and the figure genai-prices gives for the usage the sender reported (computed
here from the captured span, not from the relay's event). A gateway's own cost (OpenRouter,
Otoroshi) is untouched; a model the table lacks, a LiteLLM failure (LiteLLM reports its 0 tokens
as placeholders: no usage) and ``RELAY_COST_TABLE=false`` leave the cost unknown; ``/metrics``
books billed and estimated spend under ``source="gateway"`` and ``source="table"``.
"""

from __future__ import annotations

import base64
import copy
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import genai_prices
import jsonschema
import orjson
import pytest
from genai_prices import Usage, calc_price
from prometheus_client.parser import text_string_to_metric_families

from schemas import json_schema
from tests.conftest import fixture_json
from tests.helpers.payloads import otlp_json, otlp_span
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
VALIDATOR = jsonschema.Draft202012Validator(json_schema())
TABLE = f"genai-prices {genai_prices.__version__}"
UNKNOWN = {"currency": "USD", "source": "unknown"}
# The names each OTLP sender reports usage under, and genai-prices' names for them.
SPAN_USAGE = {
    "input_tokens": ("gen_ai.usage.input_tokens",),
    "output_tokens": ("gen_ai.usage.output_tokens",),
    "cache_read_tokens": ("gen_ai.usage.cache_read.input_tokens",),
    "output_reasoning_tokens": ("gen_ai.usage.reasoning_tokens",),  # OpenLLMetry's name
}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("relay")) as process:
        yield process


def replay_captured(relay: RelayProcess, sender: str) -> dict[str, Any]:
    """Post a sender's captured OTLP bodies; its spans, as it reported them, by span id."""
    captured = fixture_json(f"otlp-{sender}-captured.json")
    for body in captured["bodies"]:
        answer = relay.request("POST", "/v1/traces", base64.b64decode(body), PROTOBUF)
        assert answer.status == 200, answer.data
    return {span["span_id"]: span for span in captured["spans"]}


def events_of(relay: RelayProcess, span_ids: set[str]) -> dict[str, dict[str, Any]]:
    def found() -> dict[str, dict[str, Any]] | None:
        events = {e["span_id"]: e for e in relay.events() if e["span_id"] in span_ids}
        return events if len(events) == len(span_ids) else None

    return wait_until(found, message=f"events of spans {sorted(span_ids)}")


def stored_by(relay: RelayProcess, attribute: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The file sink's events whose ``attribute`` is one of ``ids``, once all are there."""

    def found() -> dict[str, dict[str, Any]] | None:
        events = {e["attributes"].get(attribute): e for e in relay.events()}
        return {i: events[i] for i in ids} if ids <= events.keys() else None

    return wait_until(found, message=f"events with {attribute} in {sorted(ids)}")


def table_price(span: dict[str, Any]) -> float:
    """genai-prices' total for the usage a span reported: its answering model, else (a snapshot
    the table does not know) its requested one, on its provider's price list, at its start."""
    attributes = span["attributes"]
    counts = {
        name: next((attributes[key] for key in keys if key in attributes), None)
        for name, keys in SPAN_USAGE.items()
    }
    started = datetime.fromtimestamp(span["start_ns"] / 1e9, UTC)
    provider = attributes["gen_ai.provider.name"]
    for model in (attributes.get("gen_ai.response.model"), attributes["gen_ai.request.model"]):
        try:
            price = calc_price(
                Usage(**counts), model, provider_id=provider, genai_request_timestamp=started
            )
        except LookupError:
            continue
        return float(price.total_price)
    raise AssertionError(f"genai-prices has no price for {attributes}")


@pytest.mark.parametrize("sender", ["openllmetry", "openai-v2"])
def test_an_otlp_span_without_cost_gets_the_tables_price(relay: RelayProcess, sender: str) -> None:
    spans = replay_captured(relay, sender)
    events = events_of(relay, set(spans))
    priced = 0
    for span_id, event in events.items():
        VALIDATOR.validate(event)
        span = spans[span_id]
        assert not any("cost" in key for key in span["attributes"]), "the sender reported a cost"
        if event["status"] == "error":  # no usage: nothing to price
            assert event["usage"] == {} and event["cost"] == UNKNOWN
            continue
        assert event["cost"]["source"] == "table", event
        assert event["cost"]["table"] == TABLE
        assert event["cost"]["total"] == table_price(span)
        assert event["cost"]["input"] + event["cost"]["output"] == pytest.approx(
            event["cost"]["total"]
        )
        priced += 1
    assert priced == 4  # chat, stream, embeddings, tool call


def otoroshi_audits() -> list[dict[str, Any]]:
    body = fixture_json("otoroshi-llmusageaudit-example.json")["requests"][0]["request"]["body"]
    audits: list[dict[str, Any]] = copy.deepcopy(body)
    for audit in audits:
        audit["@id"] = uuid.uuid4().hex  # this test's events only
    return audits


def test_a_gateways_own_cost_is_untouched(relay: RelayProcess) -> None:
    trace_id = os.urandom(16).hex()
    request = fixture_json("openrouter-otlp-example.json")["requests"][-1]["request"]
    body = copy.deepcopy(request["body"])
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = trace_id
    reported = {
        a["key"]: a["value"]["doubleValue"] for a in span["attributes"] if "cost" in a["key"]
    }
    answer = relay.request("POST", "/v1/traces", orjson.dumps(body), JSON)
    assert answer.status == 200, answer.data
    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert event["cost"] == {
        "total": reported["gen_ai.usage.total_cost"],
        "input": reported["gen_ai.usage.input_cost"],
        "output": reported["gen_ai.usage.output_cost"],
        "currency": "USD",
        "source": "gateway",
    }

    audits = otoroshi_audits()
    answer = relay.request("POST", "/v1/webhooks/otoroshi", orjson.dumps(audits), JSON)
    assert answer.status == 200, answer.data
    ids = {audit["@id"]: audit for audit in audits}
    for at_id, event in stored_by(relay, "otoroshi.id", set(ids)).items():
        costs = ids[at_id].get("costs")
        if costs:
            assert event["cost"]["source"] == "gateway"
            assert event["cost"]["total"] == costs["total_cost"]
            assert "table" not in event["cost"]


def test_an_otoroshi_audit_without_costs_is_priced_from_the_table(relay: RelayProcess) -> None:
    (audit, *_) = otoroshi_audits()
    del audit["costs"]  # an Otoroshi provider with no prices configured
    del audit["output"]["metadata"]["costs"]
    answer = relay.request("POST", "/v1/webhooks/otoroshi", orjson.dumps([audit]), JSON)
    assert answer.status == 200, answer.data
    (event,) = wait_until(
        lambda: [e for e in relay.events() if e["attributes"].get("otoroshi.id") == audit["@id"]]
    )
    VALIDATOR.validate(event)
    usage = event["usage"]
    started = datetime.fromisoformat(event["start_time"].replace("Z", "+00:00"))
    price = calc_price(
        Usage(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"]),
        audit["model"],
        provider_id=audit["provider_kind"],
        genai_request_timestamp=started,
    )
    assert event["cost"]["source"] == "table" and event["cost"]["table"] == TABLE
    assert event["cost"]["total"] == float(price.total_price)


def litellm_failure(**counts: int) -> dict[str, Any]:
    """LiteLLM 1.110.2's failure payload as captured (``json_array``), counts as given."""
    for post in fixture_json("litellm-generic-api-json_array-captured.json")["posts"]:
        for item in orjson.loads(post["body"]):
            if item["status"] == "failure":
                call_id = os.urandom(8).hex()
                failure: dict[str, Any] = item | counts
                return failure | {"id": call_id, "litellm_call_id": call_id}
    raise AssertionError("no failure in the LiteLLM capture")


def test_a_litellm_failure_is_priced_only_when_it_carries_usage(relay: RelayProcess) -> None:
    """LiteLLM reports every failure with 0 tokens and $0, placeholders the relay drops: no
    usage, so nothing to price and the cost stays unknown. A failure with counts (LiteLLM puts
    them in the same fields) is priced like any call."""
    as_sent = litellm_failure()
    assert (as_sent["prompt_tokens"], as_sent["response_cost"]) == (0, 0.0)
    counted = litellm_failure(prompt_tokens=1500, completion_tokens=40, total_tokens=1540)
    counted["model"] = "gpt-4o-mini"  # the captured failure asked for a model that never was
    answer = relay.request("POST", "/v1/webhooks/litellm", orjson.dumps([as_sent, counted]), JSON)
    assert answer.status == 200 and orjson.loads(answer.data)["accepted"] == 2, answer.data
    ids = {as_sent["litellm_call_id"], counted["litellm_call_id"]}
    events = stored_by(relay, "litellm.call_id", ids)
    unpriced, priced = events[as_sent["litellm_call_id"]], events[counted["litellm_call_id"]]
    assert unpriced["status"] == "error" and unpriced["usage"] == {}
    assert unpriced["cost"] == UNKNOWN
    assert priced["status"] == "error" and priced["usage"]["input_tokens"] == 1500
    started = datetime.fromtimestamp(counted["startTime"], UTC)
    price = calc_price(
        Usage(input_tokens=1500, output_tokens=40),
        "gpt-4o-mini",
        provider_id="openai",
        genai_request_timestamp=started,
    )
    assert priced["cost"]["source"] == "table"
    assert priced["cost"]["total"] == float(price.total_price)


def test_a_model_the_table_lacks_keeps_an_unknown_cost(relay: RelayProcess) -> None:
    usage = {"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": "1200"}
    span = otlp_span("llm-broadcast-relay-no-such-model", attributes=usage)
    answer = relay.request("POST", "/v1/traces", otlp_json([span], "my-app"), JSON)
    assert answer.status == 200, answer.data
    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == span["traceId"]])
    assert event["usage"]["input_tokens"] == 1200
    assert event["cost"] == UNKNOWN


def test_cost_table_false_leaves_every_cost_unknown(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {"RELAY_COST_TABLE": "false"}
    with RelayProcess(tmp_path_factory.mktemp("no-table"), env) as relay:
        spans = replay_captured(relay, "openllmetry")
        events = events_of(relay, set(spans))
        (config,) = relay.log_records("config")
    assert config["cost_table"] is False
    assert [e["cost"] for e in events.values()] == [UNKNOWN] * len(spans)
    assert any(e["usage"].get("input_tokens") for e in events.values())


def cost_series(relay: RelayProcess) -> dict[tuple[str, str, str], float]:
    """llm_cost_usd_total by (gateway, model, source)."""
    text = relay.request("GET", "/metrics").data.decode()
    return {
        (s.labels["gateway"], s.labels["model"], s.labels["source"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "llm_cost_usd_total"
    }


def test_metrics_tell_billed_from_estimated_spend(tmp_path_factory: pytest.TempPathFactory) -> None:
    with RelayProcess(tmp_path_factory.mktemp("metrics")) as relay:
        spans = replay_captured(relay, "openllmetry")
        events = events_of(relay, set(spans))
        request = fixture_json("openrouter-otlp-example.json")["requests"][-1]["request"]
        answer = relay.request("POST", "/v1/traces", orjson.dumps(request["body"]), JSON)
        assert answer.status == 200, answer.data
        wait_until(lambda: [e for e in relay.events() if e["source"]["gateway"] == "openrouter"])
        series = cost_series(relay)
    estimated: dict[tuple[str, str, str], float] = {}
    for event in events.values():
        if "total" in event["cost"]:
            key = (event["source"]["gateway"], event["request_model"], "table")
            estimated[key] = estimated.get(key, 0.0) + event["cost"]["total"]
    assert estimated and all(series[key] == pytest.approx(sum_) for key, sum_ in estimated.items())
    (billed,) = [  # what OpenRouter reported for the call
        attribute["value"]["doubleValue"]
        for resource in request["body"]["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
        for attribute in span["attributes"]
        if attribute["key"] == "gen_ai.usage.total_cost"
    ]
    assert series[("openrouter", "anthropic/claude-sonnet-4", "gateway")] == pytest.approx(billed)
    assert set(series) == {*estimated, ("openrouter", "anthropic/claude-sonnet-4", "gateway")}
