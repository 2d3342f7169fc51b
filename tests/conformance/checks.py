"""The field-by-field comparison of one LLM call's three records (see ``reported``).

``misplaced`` lists every field the sender reported that the relay's event lost or put elsewhere;
``dropped`` every attribute of the sender's span found neither in a field nor in ``attributes``.
Used on live senders and on their captured bodies replayed (``test_otel_senders``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from foundation.times import rfc3339_ns
from tests.conformance.reported import Call, Reported, usage_reported

# Span events that mark the first token of a stream, by sender.
FIRST_TOKEN_EVENTS = ("First Token Stream Event", "gen_ai.content.completion.chunk")


def misplaced(call: Call) -> Iterator[str]:
    """Every reported field the event lost or put elsewhere, as a readable line."""
    yield from _ids_and_times(call)
    yield from _what_was_called(call)
    yield from _usage(call)
    yield from _status(call)
    yield from _content(call)


def _check(field: str, actual: Any, expected: Any) -> Iterator[str]:
    if actual != expected:
        yield f"{field}: {actual!r}, expected {expected!r}"


def _ids_and_times(call: Call) -> Iterator[str]:
    span, event = call.span, call.event
    yield from _check("trace_id", event.get("trace_id"), span["trace_id"])
    yield from _check("start_time", event.get("start_time"), rfc3339_ns(span["start_ns"]))
    yield from _check("end_time", event.get("end_time"), rfc3339_ns(span["end_ns"]))
    if call.scenario == "stream":
        first = call.reported.first_event_ns(*FIRST_TOKEN_EVENTS)
        if first is not None:
            yield from _check("ttft_ms", event.get("ttft_ms"), (first - span["start_ns"]) / 1e6)
        elif call.reported.keys_with("time_to_first"):
            yield from _check("ttft_ms present", "ttft_ms" in event, True)


def _what_was_called(call: Call) -> Iterator[str]:
    exchange, reported, event = call.exchange, call.reported, call.event
    operation = "embeddings" if exchange.path.endswith("/embeddings") else "chat"
    yield from _check("operation", event.get("operation"), operation)
    requested = exchange.request.get("model")
    if reported.has(requested):
        yield from _check("request_model", event.get("request_model"), requested)
    answered = exchange.response.get("model")
    if answered and reported.has(answered):
        yield from _check("response_model", event.get("response_model"), answered)
    streamed = bool(exchange.request.get("stream"))
    if reported.keys_with("stream") and (streamed or not reported.has(True, "stream")):
        yield from _check("stream", event.get("stream"), streamed)
    user = exchange.request.get("user")
    if user and reported.has(user):
        yield from _check("user_id", event.get("user_id"), user)
    for key in reported.keys_with("cost"):
        if key.endswith(("total_cost", "cost.total")):
            value = call.span["attributes"][key]
            yield from _check("cost.total", event.get("cost", {}).get("total"), value)
            yield from _check("cost.source", event.get("cost", {}).get("source"), "gateway")


def _usage(call: Call) -> Iterator[str]:
    expected = usage_reported(call.exchange, call.reported)
    usage = call.event.get("usage", {})
    for field, count in expected.items():
        yield from _check(f"usage.{field}", usage.get(field), count)
    for field, count in usage.items():
        if field == "total_tokens" and count == usage.get("input_tokens", 0) + usage.get(
            "output_tokens", 0
        ):
            continue  # the relay adds it up when the sender did not
        if field not in expected and not call.reported.has(count, "token"):
            yield f"usage.{field}: {count!r}, not reported by the sender"


def _status(call: Call) -> Iterator[str]:
    event = call.event
    if call.exchange.status < 400:
        yield from _check("status", event.get("status"), "ok")
        reason = (
            call.exchange.response["choices"][0]["finish_reason"]
            if "choices" in (call.exchange.response)
            else None
        )
        if reason and call.reported.keys_with("finish_reason"):
            spelled = {reason, reason.removesuffix("s")}  # semconv spells ``tool_call``
            reasons = event.get("finish_reasons") or []
            if len(reasons) != 1 or reasons[0] not in spelled:
                yield f"finish_reasons: {reasons!r}, expected one of {sorted(spelled)}"
        return
    yield from _check("status", event.get("status"), "error")
    message = call.exchange.response["error"]["message"]
    yield from _check(
        "error.message has the provider's message",
        message in str(event.get("error", {}).get("message")),
        True,
    )
    yield from _check("usage on a failed call", event.get("usage", {}), {})
    yield from _check("cost on a failed call", event.get("cost", {}).get("source"), "unknown")


def _content(call: Call) -> Iterator[str]:
    exchange, event = call.exchange, call.event
    if exchange.path.endswith("/embeddings"):
        inputs = exchange.request["input"]
        texts = [inputs] if isinstance(inputs, str) else inputs
    else:
        texts = [m["content"] for m in exchange.request["messages"]]
    got = [p.get("content") for m in event.get("input_messages", []) for p in m["parts"]]
    if call.reported.has(texts[-1]):
        yield from _check("input_messages texts", got, texts)
    if "choices" not in exchange.response or exchange.status >= 400:
        yield from _check("output_messages", event.get("output_messages"), None)
        return
    message = exchange.response["choices"][0]["message"]
    outputs = event.get("output_messages") or []
    parts = [p for m in outputs for p in m["parts"]]
    if message.get("content") and call.reported.has(message["content"]):
        yield from _check("output text", parts, [{"type": "text", "content": message["content"]}])
    for tool_call in message.get("tool_calls") or []:
        if call.reported.has(tool_call["id"]):
            function = tool_call["function"]
            expected = {
                "type": "tool_call",
                "id": tool_call["id"],
                "name": function["name"],
                "arguments": orjson.loads(function["arguments"]),
            }
            yield from _check("tool call", [_as_json(p) for p in parts], [expected])


def _as_json(part: dict[str, Any]) -> dict[str, Any]:
    """A tool call part with its arguments decoded, as senders send either."""
    arguments = part.get("arguments")
    if isinstance(arguments, str):
        try:
            return {**part, "arguments": orjson.loads(arguments)}
        except orjson.JSONDecodeError:
            return part
    return part


def dropped(call: Call) -> list[str]:
    """Every attribute of the sender's span the event has in no field and not in ``attributes``."""
    problems = []
    kept = call.event.get("attributes", {})
    everything = orjson.dumps(call.event).decode()
    for key, value in call.span["attributes"].items():
        if key in kept or _dropped_on_purpose(call.scenario, key):
            continue
        leaves = Reported({"attributes": {key: value}, "events": []}).pairs
        if not all(_found(leaf, everything) for _, leaf in leaves):
            problems.append(f"{call.scenario}: {key}={str(value)[:80]!r}")
    return problems


def _found(leaf: Any, fields: str) -> bool:
    if leaf is None or leaf == "" or isinstance(leaf, bool) or leaf in ("True", "False"):
        return True  # booleans (LiteLLM spells them as strings) are checked field by field
    return orjson.dumps(leaf).decode().strip('"') in fields or str(leaf) in fields


def _dropped_on_purpose(scenario: str, key: str) -> bool:
    """Embedding vectors, and the response body that repeats them: numbers no dashboard reads,
    often kilobytes per input."""
    return key.endswith(".embedding.vector") or (scenario, key) == ("embeddings", "output.value")
