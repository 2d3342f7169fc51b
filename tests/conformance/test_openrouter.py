"""OpenRouter Broadcast through the running relay: one event per request, whatever the span tree.

No OpenRouter client runs here, so the deliveries are built in the shape of real ones: OTLP/JSON,
one ``resourceSpans`` per span, a root ``LLM Generation`` span carrying the call (integers as
``intValue``, costs and timings as ``doubleValue``, ``gen_ai.prompt`` / ``gen_ai.completion`` as
JSON wrappers, ``trace.metadata.openrouter.*``), ``provider attempt N: <Provider>`` and
``generation`` children with ``span.type: span``; the destination test span and the "Send Trace"
sample. Shapes as in sanitized captures of 2026-09 (github.com/empathic/toolpath,
test-fixtures/otel/openrouter) and OpenRouter's Broadcast docs; every value below is this file's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

START_NS = 1_790_606_294_318_000_000
PROMPT: dict[str, Any] = {
    "messages": [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {"role": "user", "content": "Count the words in notes.txt"},
        {
            "role": "assistant",
            "content": "Reading it.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "notes.txt"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "one two three"},
    ]
}
COMPLETION: dict[str, Any] = {
    "completion": "Three words.",
    "reasoning": "The file holds three words.",
    "toolCalls": [
        {
            "id": "toolu_02",
            "index": 0,
            "type": "function",
            "function": {"name": "done", "arguments": '{"count": 3}'},
        }
    ],
    "rawRequest": {"model": "<omitted>", "stream": "<omitted>", "session_id": "s-42"},
}


def value(item: Any) -> dict[str, Any]:
    if isinstance(item, bool):
        return {"boolValue": item}
    if isinstance(item, int):
        return {"intValue": item}
    if isinstance(item, float):
        return {"doubleValue": item}
    return {"stringValue": item}


def span(
    trace_id: str,
    span_id: str,
    name: str,
    attributes: dict[str, Any],
    parent: str | None = None,
    status: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One span in its own ``resourceSpans``, as OpenRouter sends each."""
    body: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 3 if parent is None else 2,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(START_NS + 3_723_000_000),
        "status": status or {"code": 1},
        "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()],
    }
    if parent:
        body["parentSpanId"] = parent
    if events:
        body["events"] = events
    return {
        "resource": {
            "attributes": [
                {"key": "service.name", "value": {"stringValue": "openrouter"}},
                {"key": "openrouter.trace.id", "value": {"stringValue": f"gen-{trace_id[:8]}"}},
            ]
        },
        "scopeSpans": [{"scope": {"name": "openrouter"}, "spans": [body]}],
    }


def generation_attributes() -> dict[str, Any]:
    return {
        "trace.name": "OpenRouter Request",
        "span.type": "generation",
        "span.level": "DEFAULT",
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "anthropic/claude-haiku-4.5",
        "gen_ai.response.model": "anthropic/claude-haiku-4.5",
        "gen_ai.usage.input_tokens": 2489,
        "gen_ai.usage.output_tokens": 569,
        "gen_ai.usage.total_tokens": 3058,
        "gen_ai.usage.input_tokens.cached": 1024,
        "gen_ai.usage.input_tokens.cache_write": 300,
        "gen_ai.usage.output_tokens.reasoning": 145,
        "gen_ai.usage.input_cost": 0.002489,
        "gen_ai.usage.output_cost": 0.002845,
        "gen_ai.usage.total_cost": 0.005334,
        "gen_ai.prompt": orjson.dumps(PROMPT).decode(),
        "gen_ai.completion": orjson.dumps(COMPLETION).decode(),
        "gen_ai.response.finish_reasons": '["tool_calls"]',
        "gen_ai.response.finish_reason": "tool_calls",
        "session.id": "s-42",
        "user.id": "end-user-9",
        "trace.metadata.openrouter.api_key_name": "ci key",
        "trace.metadata.openrouter.first_token_ms": 996.0,
        "trace.metadata.openrouter.provider_name": "Novita",
        "trace.metadata.openrouter.provider_slug": "novita/fp8",
        "trace.metadata.openrouter.finish_reason": "tool_use",
        "span.metadata.openrouter_generation.usage": 0.005334,
        "span.metadata.openrouter_generation.usage_cache": -0.0009,
        "span.metadata.openrouter_generation.is_byok": False,
        "span.metadata.openrouter_generation.external_user": "end-user-9",
    }


def request_trace(trace_id: str) -> list[dict[str, Any]]:
    """One request: the generation, a failed and a served provider attempt, the stream span."""
    root = trace_id[:16]
    attempt: dict[str, Any] = {"span.type": "span", "gen_ai.operation.name": "chat"}
    return [
        span(trace_id, root, "LLM Generation", generation_attributes()),
        span(
            trace_id,
            uuid.uuid4().hex[:16],
            "provider attempt 1: DeepInfra",
            {**attempt, "span.metadata.status_code": 429, "span.metadata.attempt_index": 0},
            parent=root,
        ),
        span(
            trace_id,
            uuid.uuid4().hex[:16],
            "provider attempt 2: Novita",
            {**attempt, "span.metadata.status_code": 200, "span.metadata.attempt_index": 1},
            parent=root,
        ),
        span(trace_id, uuid.uuid4().hex[:16], "generation", attempt, parent=root),
    ]


def error_trace(trace_id: str) -> list[dict[str, Any]]:
    attributes = {
        k: v
        for k, v in generation_attributes().items()
        if not k.startswith(("gen_ai.usage.", "gen_ai.response.finish"))
    }
    attributes["span.level"] = "ERROR"
    attributes["gen_ai.completion"] = orjson.dumps({"completion": None}).decode()
    message = "Provider returned error"
    exception = {
        "name": "exception",
        "timeUnixNano": str(START_NS + 1_000_000),
        "attributes": [
            {"key": "exception.type", "value": {"stringValue": "Error"}},
            {"key": "exception.message", "value": {"stringValue": message}},
        ],
    }
    status = {"code": 2, "message": message}
    return [
        span(
            trace_id, trace_id[:16], "LLM Generation", attributes, status=status, events=[exception]
        )
    ]


def send_trace_sample(trace_id: str) -> list[dict[str, Any]]:
    """The dashboard's "Send Trace" button: one ordinary-looking span, marked by its source."""
    attributes = {
        **generation_attributes(),
        "trace.name": "Test Trace - OpenRouter Observability",
        "source": "observability-test-button",
        "span.metadata.test": "true",
    }
    return [span(trace_id, trace_id[:16], "generation", attributes)]


CONNECTION_TEST = [span("0" * 31 + "1", "0" * 15 + "1", "openrouter-connection-test", {})]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(Path(tmp_path_factory.mktemp("openrouter"))) as running:
        yield running


def post(relay: RelayProcess, resource_spans: list[dict[str, Any]]) -> int:
    body = orjson.dumps({"resourceSpans": resource_spans})
    headers = {"Content-Type": "application/json"}
    return relay.request("POST", "/v1/traces", body=body, headers=headers).status


def llm_samples(relay: RelayProcess, name: str) -> dict[str, float]:
    text = relay.request("GET", "/metrics").data.decode()
    return {
        sample.labels.get("type", sample.labels.get("status", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_one_event_per_request_and_attempts_do_not_double_the_numbers(
    relay: RelayProcess,
) -> None:
    tokens_before = llm_samples(relay, "llm_tokens_total").get("input", 0.0)
    requests_before = sum(llm_samples(relay, "llm_requests_total").values())
    trace_id = uuid.uuid4().hex
    assert post(relay, request_trace(trace_id)) == 200
    events = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert len(events) == 1
    (event,) = events
    root = generation_attributes()
    assert event["span_id"] == trace_id[:16]
    assert event["usage"] == {
        "input_tokens": root["gen_ai.usage.input_tokens"],
        "output_tokens": root["gen_ai.usage.output_tokens"],
        "total_tokens": root["gen_ai.usage.total_tokens"],
        "cache_read_input_tokens": root["gen_ai.usage.input_tokens.cached"],
        "cache_write_input_tokens": root["gen_ai.usage.input_tokens.cache_write"],
        "reasoning_output_tokens": root["gen_ai.usage.output_tokens.reasoning"],
    }
    tokens = llm_samples(relay, "llm_tokens_total")["input"] - tokens_before
    assert tokens == root["gen_ai.usage.input_tokens"]
    assert sum(llm_samples(relay, "llm_requests_total").values()) - requests_before == 1


def test_the_generation_span_field_by_field(relay: RelayProcess) -> None:
    trace_id = uuid.uuid4().hex
    assert post(relay, request_trace(trace_id)) == 200
    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    root = generation_attributes()
    assert event["source"]["gateway"] == "openrouter"
    assert event["source"]["test"] is False
    assert event["provider"] == root["gen_ai.provider.name"]  # the model's author
    assert event["upstream"] == "novita"  # who served it; the deployment stays in attributes
    kept = event["attributes"]
    assert kept["trace.metadata.openrouter.provider_slug"] == "novita/fp8"
    assert kept["trace.metadata.openrouter.provider_name"] == "Novita"
    assert event["request_model"] == root["gen_ai.request.model"]
    assert event["cost"] == {
        "total": root["gen_ai.usage.total_cost"],
        "input": root["gen_ai.usage.input_cost"],
        "output": root["gen_ai.usage.output_cost"],
        "currency": "USD",
        "source": "gateway",
    }
    assert event["ttft_ms"] == root["trace.metadata.openrouter.first_token_ms"]
    assert event["session_id"] == root["session.id"]
    assert event["user_id"] == root["user.id"]
    assert event["api_key"]["name"] == root["trace.metadata.openrouter.api_key_name"]
    assert event["finish_reasons"] == ["tool_calls"]
    for key in (
        "span.metadata.openrouter_generation.usage",
        "span.metadata.openrouter_generation.usage_cache",
        "span.metadata.openrouter_generation.is_byok",
        "trace.metadata.openrouter.finish_reason",
    ):
        assert kept[key] == root[key], key


def test_prompt_and_completion_wrappers_become_messages(relay: RelayProcess) -> None:
    trace_id = uuid.uuid4().hex
    assert post(relay, request_trace(trace_id)) == 200
    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    system, user, assistant, tool = PROMPT["messages"]
    assert event["input_messages"] == [
        {"role": "system", "parts": [{"type": "text", "content": system["content"][0]["text"]}]},
        {"role": "user", "parts": [{"type": "text", "content": user["content"]}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": assistant["content"]},
                {
                    "type": "tool_call",
                    "id": "toolu_01",
                    "name": "read",
                    "arguments": orjson.loads(assistant["tool_calls"][0]["function"]["arguments"]),
                },
            ],
        },
        {
            "role": "tool",
            "parts": [
                {"type": "tool_call_response", "id": "toolu_01", "response": tool["content"]}
            ],
        },
    ]
    call = COMPLETION["toolCalls"][0]
    assert event["output_messages"] == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": COMPLETION["reasoning"]},
                {"type": "text", "content": COMPLETION["completion"]},
                {
                    "type": "tool_call",
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": orjson.loads(call["function"]["arguments"]),
                },
            ],
        }
    ]
    assert event["attributes"]["gen_ai.completion.raw_request"] == COMPLETION["rawRequest"]


def test_a_failed_generation_is_an_error_without_numbers(relay: RelayProcess) -> None:
    trace_id = uuid.uuid4().hex
    assert post(relay, error_trace(trace_id)) == 200
    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert event["status"] == "error"
    assert event["error"]["message"] == "Provider returned error"
    assert event["usage"] == {}
    assert event["cost"] == {"currency": "USD", "source": "unknown"}
    assert "output_messages" not in event


def test_send_trace_sample_is_a_test_and_connection_test_no_event(relay: RelayProcess) -> None:
    sample_trace = uuid.uuid4().hex
    assert post(relay, CONNECTION_TEST) == 200
    assert post(relay, send_trace_sample(sample_trace)) == 200
    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == sample_trace])
    assert event["source"]["test"] is True
    assert not [e for e in relay.events() if e["trace_id"] == "0" * 31 + "1"]
