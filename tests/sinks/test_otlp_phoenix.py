"""End to end with a real OTLP store: traces and events posted to the relay are read back from
Arize Phoenix, through the generic sink started from the phoenix preset and through the phoenix
sink itself. Phoenix starts once per session (``phoenix`` fixture); each case has its project.

What is checked is what Phoenix itself derives from the GenAI span (its OpenInference view: span
kind, ``llm.model_name``, token counts, ``llm.input_messages.*`` and ``llm.output_messages.*``),
the way its UI shows a call: a GenAI output message list it cannot validate is dropped whole, and
the model's answer with it.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import fixture_json
from tests.helpers.payloads import native_event
from tests.helpers.phoenix import Phoenix, phoenix_messages
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import at_least, wait_until


def openrouter_trace() -> tuple[bytes, dict[str, Any]]:
    """OpenRouter Broadcast's production-style request (research fixture), with fresh ids and
    times so that each run is its own trace; and the span as posted."""
    (request,) = [
        r["request"]
        for r in fixture_json("openrouter-otlp-example.json")["requests"]
        if r["_label"].startswith("production-chat-request")
    ]
    body = copy.deepcopy(request["body"])
    (span,) = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    now = time.time_ns()
    span.update(
        traceId=os.urandom(16).hex(),
        spanId=os.urandom(8).hex(),
        startTimeUnixNano=str(now - 2_350_000_000),
        endTimeUnixNano=str(now),
    )
    return orjson.dumps(body), span


def posted_value(span: dict[str, Any], key: str) -> Any:
    (value,) = [a["value"] for a in span["attributes"] if a["key"] == key]
    (kind,) = value
    return int(value[kind]) if kind == "intValue" else value[kind]


def relay_env(sink: str, phoenix: Phoenix, project: str) -> dict[str, str]:
    """The sink under test pointed at Phoenix, and the file sink, to read the relay's events."""
    prefix = f"RELAY_{sink.upper()}_"
    env = {
        "RELAY_SINKS": f"{sink},file",
        prefix + "ENDPOINT": phoenix.traces_url,
        prefix + "PROJECT": project,  # sent as x-project-name
        prefix + "FLUSH_INTERVAL": "0.05",
    }
    if sink == "otlp":
        env["RELAY_OTLP_PRESET"] = "phoenix"
    return env


def stored_spans(phoenix: Phoenix, project: str, count: int) -> list[dict[str, Any]]:
    # Phoenix answers before it stores (a background task): poll until the spans are there.
    return wait_until(
        at_least(count, lambda: phoenix.spans(project)),
        timeout=30,
        message=f"{count} spans in {project}",
    )


def texts(message: dict[str, Any]) -> str:
    return "".join(part["content"] for part in message["parts"] if part["type"] == "text")


@pytest.mark.parametrize("sink", ["otlp", "phoenix"])
def test_an_openrouter_trace_is_read_back_from_phoenix(
    phoenix: Phoenix, tmp_path: Path, sink: str
) -> None:
    project = f"relay-{sink}"
    body, posted = openrouter_trace()
    with RelayProcess(tmp_path / "data", relay_env(sink, phoenix, project)) as relay:
        answer = relay.request("POST", "/v1/traces", body, {"Content-Type": "application/json"})
        assert answer.status == 200, answer.data
        (stored,) = stored_spans(phoenix, project, 1)
        (event,) = wait_until(relay.events, message="the relay's event in its file")
        assert relay.get_json("/v1/status")["sinks"][sink]["sent"] == 1

    assert stored["context"] == {"trace_id": posted["traceId"], "span_id": posted["spanId"]}
    attributes = stored["attributes"]
    for key in ("gen_ai.request.model", "gen_ai.response.model"):
        assert attributes[key] == posted_value(posted, key) == "anthropic/claude-sonnet-4"
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        assert attributes[key] == posted_value(posted, key)
    # Phoenix understood the GenAI span as an LLM call, with its model and token counts.
    assert stored["span_kind"] == "LLM"
    assert attributes["llm.model_name"] == "anthropic/claude-sonnet-4"
    assert attributes["llm.token_count.prompt"] == posted_value(posted, "gen_ai.usage.input_tokens")
    assert attributes["llm.token_count.completion"] == posted_value(
        posted, "gen_ai.usage.output_tokens"
    )
    assert attributes["gen_ai.route.gateway"] == "openrouter"
    # ... with the prompt and the model's answer, as OpenRouter reported them.
    [prompt] = event["input_messages"]
    [completion] = event["output_messages"]
    [finish_reason] = event["finish_reasons"]
    assert phoenix_messages(attributes, "input") == [
        {"role": prompt["role"], "content": texts(prompt)}
    ]
    assert phoenix_messages(attributes, "output") == [
        {"role": "assistant", "content": texts(completion), "finish_reason": finish_reason}
    ]
    assert finish_reason == posted_value(posted, "gen_ai.response.finish_reason")
    # The gateway's cost, under the name OpenInference gives it.
    assert attributes["llm.cost.total"] == event["cost"]["total"]
    assert event["cost"]["total"] == posted_value(posted, "gen_ai.usage.total_cost")


# --- events of every output shape, through /v1/events -------------------------------------------


def question(label: str, **fields: Any) -> dict[str, Any]:
    """A chat as a gateway of our own would post it, asking a question of its own."""
    asked = {
        "provider": "openai",
        "request_model": "gpt-4o-mini",
        "usage": {"input_tokens": 31, "output_tokens": 12},
        "input_messages": [
            {"role": "system", "parts": [{"type": "text", "content": "Answer in one line."}]},
            {"role": "user", "parts": [{"type": "text", "content": f"Question {label}?"}]},
        ],
    }
    return native_event(f"phoenix-{label}", 1_500_000_000, **(asked | fields))


def text_answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "parts": [{"type": "text", "content": text}]}


# label -> (event fields, the finish reason Phoenix should show per output message; None: none)
CASES: dict[str, tuple[dict[str, Any], list[str | None]]] = {
    "reported": (
        {
            "output_messages": [text_answer("Paris.")],
            "finish_reasons": ["stop"],
            "cost": {
                "total": 0.0123,
                "input": 0.002,
                "output": 0.0103,
                "currency": "USD",
                "source": "gateway",
            },
        },
        ["stop"],
    ),
    # No finish reason reported: the answer still shows, with no made-up reason.
    "unreported": ({"output_messages": [text_answer("Lyon.")]}, [None]),
    "tool-call": (
        {
            "output_messages": [
                {
                    "role": "assistant",
                    "parts": [
                        {
                            "type": "tool_call",
                            "id": "call_7",
                            "name": "get_weather",
                            "arguments": {"city": "Paris", "unit": "C"},
                        }
                    ],
                }
            ],
            "finish_reasons": ["tool_calls"],
            "cost": {"total": 0.0004, "currency": "USD", "source": "gateway"},
        },
        ["tool_calls"],
    ),
    "two-choices": (
        {
            "output_messages": [text_answer("Nice."), text_answer("Marseille is the")],
            "finish_reasons": ["stop", "length"],
        },
        ["stop", "length"],
    ),
}


def test_every_output_shape_shows_in_phoenix(phoenix: Phoenix, tmp_path: Path) -> None:
    project = "relay-output-shapes"
    posted = {label: question(label, **fields) for label, (fields, _) in CASES.items()}
    with RelayProcess(tmp_path / "data", relay_env("phoenix", phoenix, project)) as relay:
        answer = relay.request(
            "POST",
            "/v1/events",
            orjson.dumps(list(posted.values())),
            {"Content-Type": "application/json"},
        )
        assert orjson.loads(answer.data)["accepted"] == len(CASES), answer.data
        spans = stored_spans(phoenix, project, len(CASES))
        events = wait_until(at_least(len(CASES), relay.events), message="the events in the file")
    by_event = {span["attributes"]["relay.event_id"]: span for span in spans}
    # The cost as the relay stored it: the gateway's, or the price table's for a call it did not
    # price (cost.source "table", receiver.pricing).
    costs = {event["event_id"]: event["cost"] for event in events}

    for label, (_, reasons) in CASES.items():
        event = posted[label]
        span = by_event[event["event_id"]]
        attributes = span["attributes"]
        assert span["span_kind"] == "LLM", label
        assert attributes["llm.model_name"] == event["request_model"], label
        assert attributes["llm.token_count.prompt"] == event["usage"]["input_tokens"], label
        assert attributes["llm.token_count.completion"] == event["usage"]["output_tokens"], label
        assert phoenix_messages(attributes, "input") == [
            {"role": m["role"], "content": texts(m)} for m in event["input_messages"]
        ], label
        assert phoenix_messages(attributes, "output") == [
            phoenix_output(message, reason)
            for message, reason in zip(event["output_messages"], reasons, strict=True)
        ], label
        # The gateway's cost when it reported one, else the table's, absent when neither (never
        # a made-up 0).
        cost = costs[event["event_id"]]
        assert cost["source"] == ("gateway" if "cost" in CASES[label][0] else "table"), label
        assert attributes.get("llm.cost.total") == cost.get("total"), label
        assert attributes.get("llm.cost.prompt") == cost.get("input"), label
        assert attributes.get("llm.cost.completion") == cost.get("output"), label


def phoenix_output(message: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """How Phoenix flattens a posted output message: its text, or each tool call's id, name and
    arguments, and the finish reason when there is one."""
    shown: dict[str, Any] = {"role": message["role"]}
    if text := texts(message):
        shown["content"] = text
    calls = [part for part in message["parts"] if part["type"] == "tool_call"]
    for index, call in enumerate(calls):
        prefix = f"tool_calls.{index}.tool_call."
        shown[prefix + "id"] = call["id"]
        shown[prefix + "function.name"] = call["name"]
        shown[prefix + "function.arguments"] = call["arguments"]
    if reason is not None:
        shown["finish_reason"] = reason
    return shown
