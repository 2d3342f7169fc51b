"""Real OpenTelemetry senders through the running relay: every field they report, in its place.

Each sender (``otel_clients.SENDERS``: the OpenAI SDK with the official, OpenInference and
OpenLLMetry instrumentations, LiteLLM's ``otel`` callback) makes five calls against the fake LLM
(chat, streaming with usage, an error, embeddings, a tool call) and exports its spans to a relay
with the file sink. For each call the test holds the fake's record, the span the sender exported
and the relay's event, and checks every field the sender reported (see ``reported``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from foundation.times import rfc3339_ns
from tests.conformance.otel_clients import SENDERS, is_call_span
from tests.conformance.reported import Call, Reported, usage_reported
from tests.conformance.scenarios import SCENARIOS, prompt
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.relay import ROOT, RelayProcess
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

# Span events that mark the first token of a stream, by sender.
FIRST_TOKEN_EVENTS = ("First Token Stream Event", "gen_ai.content.completion.chunk")


@dataclass
class SenderRun:
    sender: str
    spans: list[dict[str, Any]]
    events: list[dict[str, Any]]
    calls: dict[str, Call]
    skipped: int  # spans the relay counted as not LLM calls


@pytest.fixture(scope="module", params=sorted(SENDERS))
def sender_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SenderRun]:
    sender: str = request.param
    data = tmp_path_factory.mktemp(sender)
    nonce = uuid.uuid4().hex[:10]
    with FakeLLM() as llm, RelayProcess(data / "relay") as relay:
        out = data / "spans.json"
        done = subprocess.run(
            [sys.executable, "-m", "tests.conformance.otel_clients", sender,
             "--llm", llm.url, "--relay", relay.url, "--nonce", nonce, "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        spans: list[dict[str, Any]] = orjson.loads(out.read_bytes())
        with contextlib.suppress(AssertionError):  # a span unaccounted for fails below
            wait_until(
                lambda: len(relay.events()) + skipped_spans(relay) >= len(spans),
                message=f"every span {sender} exported stored or skipped",
            )
        events = relay.events()
        calls = {}
        for span in spans:
            scenario = _scenario(span, nonce)
            matching = [e for e in events if e.get("span_id") == span["span_id"]]
            if scenario and matching:
                exchange = llm.matching(prompt(nonce, scenario))[0]
                calls[scenario] = Call(scenario, exchange, span, matching[0])
        yield SenderRun(sender, spans, events, calls, skipped_spans(relay))


def skipped_spans(relay: RelayProcess) -> int:
    """The spans the relay skipped as no LLM call, from its metrics."""
    text = relay.request("GET", "/metrics").data.decode()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "relay_items_skipped_total" and sample.labels["reason"] == "not_llm"
        )
    )


def _scenario(span: dict[str, Any], nonce: str) -> str | None:
    """The scenario whose prompt a span carries (a child span may quote it too: the LLM span is
    the one with a model)."""
    if not is_call_span(span):
        return None
    text = orjson.dumps(span["attributes"]).decode()
    found = next((s for s in SCENARIOS if prompt(nonce, s) in text), None)
    if found is None and "embedding" in text:  # a sender that keeps no content
        return "embeddings"
    return found


def test_one_event_per_call_and_none_for_other_spans(sender_run: SenderRun) -> None:
    assert sorted(sender_run.calls) == sorted(SCENARIOS)
    assert len(sender_run.events) == len(SCENARIOS), [
        e.get("attributes", {}).get("otlp.span.name") for e in sender_run.events
    ]
    others = [span for span in sender_run.spans if not is_call_span(span)]
    assert sender_run.skipped == len(others), [span["name"] for span in others]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_reported_field_in_its_place(sender_run: SenderRun, scenario: str) -> None:
    call = sender_run.calls.get(scenario)
    assert call is not None, f"no event for the {scenario} call"
    problems = list(_misplaced(call))
    assert not problems, "\n".join(problems)


def _misplaced(call: Call) -> Iterator[str]:
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


def test_nothing_reported_is_dropped(sender_run: SenderRun) -> None:
    """Every attribute of an LLM span is in a field or in ``attributes``: nothing vanishes."""
    problems = []
    for call in sender_run.calls.values():
        kept = call.event.get("attributes", {})
        everything = orjson.dumps(call.event).decode()
        for key, value in call.span["attributes"].items():
            if key in kept or _dropped_on_purpose(call.scenario, key):
                continue
            if not all(
                _found(leaf, everything)
                for _, leaf in Reported({"attributes": {key: value}, "events": []}).pairs
            ):
                problems.append(f"{call.scenario}: {key}={str(value)[:80]!r}")
    assert not problems, "\n".join(problems)


def _found(leaf: Any, fields: str) -> bool:
    if leaf is None or leaf == "" or isinstance(leaf, bool) or leaf in ("True", "False"):
        return True  # booleans (LiteLLM spells them as strings) are checked field by field
    return orjson.dumps(leaf).decode().strip('"') in fields or str(leaf) in fields


def _dropped_on_purpose(scenario: str, key: str) -> bool:
    """Embedding vectors, and the response body that repeats them: numbers no dashboard reads,
    often kilobytes per input."""
    return key.endswith(".embedding.vector") or (scenario, key) == ("embeddings", "output.value")
