"""OTLP traces, JSON and protobuf: LLM spans become LLMEvents, other spans are counted.

Protobuf bodies are built with the official ``opentelemetry.proto`` classes; OTLP/JSON bodies are
the OpenRouter fixtures or dicts written here. Every result goes through ``assert_clean`` (schema
and secrets), and expected values are read from the body each test built.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from receiver.normalizers.base import InputError, Normalized
from receiver.normalizers.common import stable_id
from receiver.normalizers.otlp import normalize_json, normalize_proto
from tests.conftest import fixture_json
from tests.helpers.otlp_values import key_values
from tests.receiver.normalizers.conftest import (
    CTX,
    RECEIVED_AT,
    assert_clean,
    bodies,
    checked,
)
from tests.receiver.normalizers.otlp_bodies import (
    END_NS,
    PARENT_ID,
    SPAN_ID,
    START_NS,
    TRACE_ID,
    json_request,
    json_span,
    proto_from_json,
)

CONNECTION_TEST, TEST_BUTTON, PRODUCTION = bodies("openrouter-otlp-example.json")
SEMCONV = fixture_json("genai-semconv-span-example.json")["body"]


def run_json(document: Any) -> Normalized:
    """``normalize_json`` on ``document`` as sent; the result is checked for schema and secrets."""
    return checked(normalize_json, document)


def run_proto(request: ExportTraceServiceRequest) -> Normalized:
    result = normalize_proto(request.SerializeToString(), CTX)
    assert_clean(result)
    return result


def rfc3339(unix_ns: int) -> str:
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def only_span(document: dict[str, Any]) -> dict[str, Any]:
    (resource_spans,) = document["resourceSpans"]
    (scope_spans,) = resource_spans["scopeSpans"]
    (span,) = scope_spans["spans"]
    span_json: dict[str, Any] = span
    return span_json


def values(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP/JSON ``[{key, value: {xValue: v}}]`` as ``{key: v}``, the value as sent."""
    return {kv["key"]: next(iter(kv["value"].values())) for kv in attributes}


def proto_request(*spans: Span, resource: dict[str, Any]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values(resource))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


# -- OpenRouter Broadcast ------------------------------------------------------------------------


def test_openrouter_chat_span_field_by_field() -> None:
    result = run_json(PRODUCTION)
    assert (len(result.events), result.rejected, result.skipped) == (1, [], {})
    (event,) = result.events
    span = only_span(PRODUCTION)
    sent = values(span["attributes"])
    resource = values(PRODUCTION["resourceSpans"][0]["resource"]["attributes"])
    start_ns, end_ns = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    assert event["event_id"] == stable_id("otlp", span["traceId"], span["spanId"])
    assert event["received_at"] == RECEIVED_AT
    assert event["source"] == {"format": "otlp-json", "gateway": "openrouter", "test": False}
    assert (event["trace_id"], event["span_id"]) == (span["traceId"], span["spanId"])
    assert "parent_span_id" not in event
    assert (event["start_time"], event["end_time"]) == (rfc3339(start_ns), rfc3339(end_ns))
    assert event["duration_ms"] == pytest.approx((end_ns - start_ns) / 1e6)
    assert event["operation"] == sent["gen_ai.operation.name"]
    # "Anthropic" and "anthropic" are one provider: as a semconv token, once
    assert (event["provider"], event["upstream"]) == ("anthropic", sent["openrouter.provider_slug"])
    assert event["request_model"] == sent["gen_ai.request.model"]
    assert event["response_model"] == sent["gen_ai.response.model"]
    assert event["usage"] == {
        "input_tokens": int(sent["gen_ai.usage.input_tokens"]),
        "output_tokens": int(sent["gen_ai.usage.output_tokens"]),
        "total_tokens": int(sent["gen_ai.usage.total_tokens"]),
        "cache_read_input_tokens": int(sent["gen_ai.usage.input_tokens.cached"]),
    }
    assert event["cost"] == {
        "total": sent["gen_ai.usage.total_cost"],
        "input": sent["gen_ai.usage.input_cost"],
        "output": sent["gen_ai.usage.output_cost"],
        "currency": "USD",
        "source": "gateway",
    }
    assert event["status"] == "ok"
    assert "error" not in event
    assert event["finish_reasons"] == ["stop"]
    assert event["user_id"] == sent["user.id"]
    assert event["session_id"] == sent["session.id"]
    assert event["api_key"] == {"name": sent["openrouter.api_key_name"]}
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Hello!"}]}
    ]
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hi! How can I help?"}]}
    ]
    attributes = event["attributes"]
    assert attributes["otlp.span.name"] == span["name"]
    assert {k: attributes[f"resource.{k}"] for k in resource} == resource
    assert attributes["gen_ai.response.id"] == resource["openrouter.trace.id"]  # completion id
    assert attributes["openrouter.finish_reason"] == sent["openrouter.finish_reason"]
    assert attributes["trace.metadata.environment"] == sent["trace.metadata.environment"]
    # what became a field is not repeated in attributes
    for taken in ("gen_ai.request.model", "gen_ai.usage.input_tokens", "user.id", "gen_ai.prompt"):
        assert taken not in attributes


def test_openrouter_test_button_span_is_flagged_and_its_numbers_typed() -> None:
    (event,) = run_json(TEST_BUTTON).events
    sent = values(only_span(TEST_BUTTON)["attributes"])
    assert event["source"] == {"format": "otlp-json", "gateway": "openrouter", "test": True}
    input_tokens = int(sent["gen_ai.usage.input_tokens"])
    output_tokens = int(sent["gen_ai.usage.output_tokens"])
    assert event["usage"] == {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,  # no total sent: the sum
        "cache_read_input_tokens": int(sent["gen_ai.usage.input_tokens.cached"]),
        "reasoning_output_tokens": int(sent["gen_ai.usage.output_tokens.reasoning"]),
    }
    assert event["cost"]["total"] == float(sent["gen_ai.usage.total_cost"])
    assert "request_model" not in event
    assert event["response_model"] == sent["gen_ai.response.model"]
    attributes = event["attributes"]
    # Request parameters OpenRouter sends as text arrive as numbers.
    assert attributes["gen_ai.request.temperature"] == float(sent["gen_ai.request.temperature"])
    assert attributes["gen_ai.request.max_tokens"] == int(sent["gen_ai.request.max_tokens"])
    assert isinstance(attributes["gen_ai.request.max_tokens"], int)
    # The completion holds only an id: no output message, the id kept; the Langfuse-style
    # copies of prompt and completion are dropped, the different trace.input is kept.
    assert "output_messages" not in event
    assert attributes["gen_ai.response.id"] == "chatcmpl-test123"
    assert sent["gen_ai.completion"] == '{"id":"chatcmpl-test123"}'
    for copied in ("gen_ai.completion", "span.input", "span.output", "trace.output"):
        assert copied not in attributes
    assert attributes["trace.input"] == sent["trace.input"]


def test_openrouter_test_connection_has_nothing_to_normalize() -> None:
    assert CONNECTION_TEST == {"resourceSpans": []}
    result = run_json(CONNECTION_TEST)
    assert (result.events, result.rejected, result.skipped) == ([], [], {})
    empty = normalize_json(b"", CTX)
    assert (empty.events, empty.rejected, empty.skipped) == ([], [], {})


# -- GenAI semantic conventions, both encodings ----------------------------------------------


def test_genai_semconv_span_gives_the_same_event_as_json_and_as_protobuf() -> None:
    from_json = run_json(SEMCONV)
    from_proto = run_proto(proto_from_json(SEMCONV))
    (json_event,) = from_json.events
    (proto_event,) = from_proto.events
    assert proto_event["source"]["format"] == "otlp-proto"
    assert json_event["source"]["format"] == "otlp-json"
    proto_event["source"]["format"] = "otlp-json"
    assert proto_event == json_event

    span = only_span(SEMCONV)
    sent = values(span["attributes"])
    event = json_event
    assert event["source"]["gateway"] == "unknown"  # service.name is the app's own
    assert (event["trace_id"], event["span_id"]) == (span["traceId"], span["spanId"])
    assert event["ttft_ms"] == pytest.approx(sent["gen_ai.response.time_to_first_chunk"] * 1000)
    assert event["stream"] is sent["gen_ai.request.stream"]
    assert event["provider"] == sent["gen_ai.provider.name"]
    assert "upstream" not in event  # not a gateway: no upstream to tell
    assert event["usage"] == {
        "input_tokens": int(sent["gen_ai.usage.input_tokens"]),
        "output_tokens": int(sent["gen_ai.usage.output_tokens"]),
        "cache_read_input_tokens": int(sent["gen_ai.usage.cache_read.input_tokens"]),
        "cache_write_input_tokens": int(sent["gen_ai.usage.cache_write.input_tokens"]),
        "reasoning_output_tokens": int(sent["gen_ai.usage.reasoning.output_tokens"]),
        "total_tokens": int(sent["gen_ai.usage.input_tokens"])
        + int(sent["gen_ai.usage.output_tokens"]),
    }
    assert event["cost"] == {"currency": "USD", "source": "unknown"}  # never an invented 0
    assert event["finish_reasons"] == [
        v["stringValue"] for v in sent["gen_ai.response.finish_reasons"]["values"]
    ]
    assert event["session_id"] == sent["gen_ai.conversation.id"]
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Hello!"}]}
    ]
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hi! How can I help?"}]}
    ]
    attributes = event["attributes"]
    assert attributes["server.port"] == int(sent["server.port"])
    assert attributes["gen_ai.request.temperature"] == sent["gen_ai.request.temperature"]
    assert attributes["gen_ai.response.id"] == sent["gen_ai.response.id"]


def test_protobuf_span_built_with_the_official_classes() -> None:
    span = Span(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        name="chat claude",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=START_NS,
        end_time_unix_nano=END_NS,
        status=Status(code=Status.STATUS_CODE_ERROR, message="rate limited upstream"),
    )
    sent = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "Google AI Studio",
        "gen_ai.request.model": "gemini-2.5-pro",
        "gen_ai.request.stream": False,
        "gen_ai.usage.input_tokens": 321,
        "gen_ai.usage.output_tokens": 0,
        "gen_ai.usage.cost": 0.0125,
        "http.response.status_code": 429,
        "gen_ai.response.finish_reasons": ["error"],
        "user.id": "customer-7",
        "app.retry": 2,
        "app.tags": ["a", "b"],
    }
    span.attributes.extend(key_values(sent))
    exception = span.events.add(name="exception", time_unix_nano=END_NS)
    exception.attributes.extend(key_values({"exception.type": "RateLimitError"}))
    result = run_proto(proto_request(span, resource={"service.name": "litellm"}))
    assert (len(result.events), result.rejected, result.skipped) == (1, [], {})
    (event,) = result.events
    assert event["source"] == {"format": "otlp-proto", "gateway": "litellm", "test": False}
    assert event["trace_id"] == TRACE_ID.hex()
    assert event["span_id"] == SPAN_ID.hex()
    assert event["parent_span_id"] == PARENT_ID.hex()
    assert (event["start_time"], event["end_time"]) == (rfc3339(START_NS), rfc3339(END_NS))
    assert event["duration_ms"] == pytest.approx((END_NS - START_NS) / 1e6)
    assert event["provider"] == "google_ai_studio"
    assert event["request_model"] == sent["gen_ai.request.model"]
    assert event["stream"] is False
    assert event["usage"] == {"input_tokens": 321, "output_tokens": 0, "total_tokens": 321}
    assert event["cost"] == {
        "total": sent["gen_ai.usage.cost"],
        "currency": "USD",
        "source": "gateway",
    }
    assert event["status"] == "error"
    assert event["error"] == {
        "type": "RateLimitError",  # from the exception event: no error.type attribute
        "message": span.status.message,
        "http_status": sent["http.response.status_code"],
    }
    assert event["finish_reasons"] == sent["gen_ai.response.finish_reasons"]
    assert event["user_id"] == sent["user.id"]
    attributes = event["attributes"]
    assert (attributes["app.retry"], attributes["app.tags"]) == (2, ["a", "b"])
    assert attributes["otlp.span.name"] == span.name
    assert attributes["resource.service.name"] == "litellm"
    assert "http.response.status_code" not in attributes


def test_error_type_attribute_makes_an_error_whatever_the_status() -> None:
    typed = json_span(
        {"gen_ai.operation.name": "chat", "error.type": "timeout", "http.status_code": "504"},
        status={"code": "STATUS_CODE_UNSET"},
    )
    bare = json_span(
        {"gen_ai.operation.name": "chat", "http.status_code": 999},
        spanId=PARENT_ID.hex(),
        status={"code": 2},
    )
    ok = json_span({"gen_ai.operation.name": "chat"}, spanId="ab" * 8, status={"code": 1})
    events = run_json(json_request(typed, bare, ok)).events
    assert [e["status"] for e in events] == ["error", "error", "ok"]
    assert events[0]["error"] == {"type": "timeout", "http_status": 504}
    # nothing says which error: the semconv fallback type; 999 is no HTTP status
    assert events[1]["error"] == {"type": "_OTHER"}
    assert "error" not in events[2]


# -- other conventions ---------------------------------------------------------------------------


def test_openinference_span() -> None:
    sent = {
        "openinference.span.kind": "LLM",
        "llm.provider": "anthropic",
        "llm.model_name": "claude-3-5-haiku",
        "llm.token_count.prompt": 12,
        "llm.token_count.completion": 5,
        "llm.token_count.total": 17,
        "llm.cost.total": 0.0001,
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Be brief.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Hi",
        "llm.output_messages.0.message.content": "Hello.",
        "session.id": "s-1",
    }
    tool = json_span({"openinference.span.kind": "TOOL", "tool.name": "search"}, spanId="cd" * 8)
    result = run_json(json_request(json_span(sent), tool))
    assert result.skipped == {"not_llm": 1}
    (event,) = result.events
    assert event["operation"] == "chat"
    assert event["provider"] == sent["llm.provider"]
    assert event["request_model"] == sent["llm.model_name"]
    assert event["usage"] == {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
    assert event["cost"]["total"] == sent["llm.cost.total"]
    assert event["session_id"] == sent["session.id"]
    assert event["input_messages"] == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
    ]
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello."}]}
    ]
    assert not any(key.startswith("llm.") for key in event["attributes"])


def test_openllmetry_span() -> None:
    sent = {
        "llm.request.type": "completion",
        "gen_ai.system": "OpenAI",
        "gen_ai.request.model": "gpt-3.5-turbo-instruct",
        "gen_ai.usage.prompt_tokens": "9",
        "gen_ai.usage.completion_tokens": "4",
        "llm.is_streaming": "true",
        "gen_ai.prompt.0.content": "Say hi",
        "gen_ai.completion.0.content": "hi",
        "gen_ai.completion.0.finish_reason": "stop",
    }
    (event,) = run_json(json_request(json_span(sent))).events
    assert event["operation"] == "text_completion"
    assert event["provider"] == "openai"
    assert event["stream"] is True
    assert event["usage"] == {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hi"}]}
    ]
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi"}], "finish_reason": "stop"}
    ]
    assert event["finish_reasons"] == ["stop"]


def test_aliases_that_say_something_else_stay_in_attributes() -> None:
    sent = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "azure.ai.openai",  # disagrees: kept
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.prompt_tokens": "10",  # agrees: dropped
        "gen_ai.usage.output_tokens": "n/a",  # unusable: the next alias counts, this is kept
        "llm.usage.completion_tokens": 3,
    }
    (event,) = run_json(json_request(json_span(sent))).events
    assert event["provider"] == "openai"
    assert event["usage"] == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}
    attributes = event["attributes"]
    assert attributes["gen_ai.system"] == sent["gen_ai.system"]
    assert attributes["gen_ai.usage.output_tokens"] == "n/a"
    for dropped in ("gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"):
        assert dropped not in attributes
    assert "llm.usage.completion_tokens" not in attributes


def test_ids_in_other_spellings() -> None:
    base64_ids = json_span(
        {"gen_ai.operation.name": "chat"},
        traceId=base64.b64encode(TRACE_ID).decode(),
        spanId=base64.b64encode(SPAN_ID).decode(),
        parentSpanId="0" * 16,
    )
    custom = json_span(
        {"gen_ai.operation.name": "chat"}, traceId="order-4711", spanId=SPAN_ID.hex().upper()
    )
    first, second = run_json(json_request(base64_ids, custom)).events
    assert (first["trace_id"], first["span_id"]) == (TRACE_ID.hex(), SPAN_ID.hex())
    assert "parent_span_id" not in first  # all zeros: a root span
    # An id that is neither hex nor base64 of the right size: a valid one derived, the original
    # kept, so the same custom id always lands in the same trace.
    assert second["trace_id"] == stable_id("trace_id", "order-4711")
    assert second["attributes"]["otlp.original_trace_id"] == "order-4711"
    assert second["span_id"] == SPAN_ID.hex()


def test_a_span_with_only_one_time_lasted_no_time() -> None:
    llm = {"gen_ai.operation.name": "chat"}
    only_end = json_span(llm, startTimeUnixNano="0")
    only_start = json_span(llm, spanId="bb" * 8, endTimeUnixNano=None)
    ended, started = run_json(json_request(only_end, only_start)).events
    assert ended["start_time"] == ended["end_time"] == rfc3339(END_NS)
    assert started["start_time"] == started["end_time"] == rfc3339(START_NS)
    assert ended["duration_ms"] == started["duration_ms"] == 0


# -- what is not an LLM call, what cannot be used ------------------------------------------------


def test_spans_that_are_not_llm_calls_are_skipped_and_counted() -> None:
    llm = json_span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"})
    others = [
        json_span({"gen_ai.operation.name": "execute_tool"}, spanId="01" * 8),
        json_span({"gen_ai.operation.name": "invoke_agent"}, spanId="02" * 8),
        json_span({"http.request.method": "POST", "url.full": "https://x"}, spanId="03" * 8),
        json_span({"openinference.span.kind": "CHAIN"}, spanId="04" * 8),
    ]
    result = run_json(json_request(*others[:2], llm, *others[2:]))
    assert [e["span_id"] for e in result.events] == [SPAN_ID.hex()]
    assert result.skipped == {"not_llm": len(others)}
    assert result.rejected == []


def test_an_unusable_span_is_rejected_and_the_rest_kept() -> None:
    llm = {"gen_ai.operation.name": "chat"}
    good = json_span(llm)
    no_trace_id = json_span(llm, traceId=None)
    backwards = json_span(llm, spanId="ee" * 8, endTimeUnixNano=str(START_NS - 1))
    no_times = json_span(llm, spanId="ff" * 8, startTimeUnixNano=None, endTimeUnixNano=None)
    result = run_json(json_request(no_trace_id, good, backwards, "not a span", no_times))
    assert [e["span_id"] for e in result.events] == [SPAN_ID.hex()]
    assert [(r.item, r.reason) for r in result.rejected] == [
        ("span 0", "missing trace_id"),
        (f"span {TRACE_ID.hex()}/{'ee' * 8}", "endTimeUnixNano is before startTimeUnixNano"),
        ("span 3", "a span is not an object"),
        (
            f"span {TRACE_ID.hex()}/{'ff' * 8}",
            "span has neither startTimeUnixNano nor endTimeUnixNano",
        ),
    ]


def test_an_unusable_protobuf_span_is_rejected_and_the_rest_kept() -> None:
    attributes = key_values({"gen_ai.operation.name": "chat"})
    short_id = Span(trace_id=TRACE_ID[:4], span_id=SPAN_ID, name="cut", end_time_unix_nano=END_NS)
    good = Span(trace_id=TRACE_ID, span_id=SPAN_ID, end_time_unix_nano=END_NS)
    for span in (short_id, good):
        span.attributes.extend(attributes)
    result = run_proto(proto_request(short_id, good, resource={}))
    assert [e["trace_id"] for e in result.events] == [TRACE_ID.hex()]
    assert [(r.item, r.reason) for r in result.rejected] == [
        ("span 0", "span 'cut': trace_id must be 16 bytes and span_id 8 bytes")
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceSpans": [', "invalid OTLP JSON: "),
        (b"[1, 2]", "OTLP JSON must be an object with a resourceSpans array"),
        (b'{"resourceSpans": {"spans": []}}', "resourceSpans must be an array"),
    ],
)
def test_an_unreadable_json_body_is_an_input_error(body: bytes, message: str) -> None:
    with pytest.raises(InputError) as refused:
        normalize_json(body, CTX)
    assert str(refused.value).startswith(message)


def test_an_unreadable_protobuf_body_is_an_input_error() -> None:
    body = proto_request(
        Span(trace_id=TRACE_ID, span_id=SPAN_ID, end_time_unix_nano=END_NS), resource={}
    ).SerializeToString()
    with pytest.raises(InputError) as refused:
        normalize_proto(body[:-3], CTX)  # cut inside the span
    assert str(refused.value).startswith("invalid OTLP protobuf: ")


def test_an_odd_openinference_kind_costs_only_its_span() -> None:
    odd = json_span({"openinference.span.kind": ["LLM"]}, spanId="aa" * 8)
    result = run_json(json_request(odd, json_span({"gen_ai.operation.name": "chat"})))
    assert [e["span_id"] for e in result.events] == [SPAN_ID.hex()]
