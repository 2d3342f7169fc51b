"""What each real sender reports, each in its LLMEvent field (``otlp`` and its alias tables).

Attribute names, value types and span shapes are those the senders exported in the conformance
suite (LiteLLM's ``otel`` callback, OpenInference, OpenLLMetry, the OpenAI SDK) or OpenRouter's
captured deliveries, reduced to what each case needs.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver.normalizers.base import Normalized
from receiver.normalizers.otlp import normalize_json, normalize_proto
from tests.helpers.otlp_values import key_values
from tests.receiver.normalizers.conftest import CTX, assert_clean, checked
from tests.receiver.normalizers.otlp_bodies import (
    SPAN_ID,
    START_NS,
    TRACE_ID,
    json_request,
    json_span,
    proto_from_json,
)


def run(*spans: Any) -> Normalized:
    return checked(normalize_json, json_request(*spans))


def test_litellm_call_types_are_llm_operations_and_the_raw_request_is_not_a_call() -> None:
    chat = {"gen_ai.operation.name": "acompletion", "gen_ai.request.model": "gpt-4o-mini"}
    embedding = {"gen_ai.operation.name": "aembedding", "gen_ai.request.model": "e-3"}
    raw = {"llm.openai.model": "gpt-4o-mini", "llm.openai.messages": "[{'role': 'user'}]"}
    result = run(
        json_span(chat),
        json_span(embedding, spanId="ab" * 8),
        json_span(raw, spanId="cd" * 8, name="raw_gen_ai_request"),
    )
    assert [e["operation"] for e in result.events] == ["chat", "embeddings"]
    assert [e["attributes"]["litellm.call_type"] for e in result.events] == [
        "acompletion",
        "aembedding",
    ]
    assert result.skipped == {"not_llm": 1}


def test_litellm_cost_and_the_counts_only_its_usage_object_has() -> None:
    sent = {
        "gen_ai.operation.name": "acompletion",
        "gen_ai.usage.input_tokens": 16,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.cost.total_cost": 6.45e-06,
        "gen_ai.cost.input_cost": 2.25e-06,
        "gen_ai.cost.output_cost": 4.2e-06,
        "gen_ai.cost.reasoning_cost": 1.8e-06,
        "llm.is_streaming": "False",
        "metadata.usage_object": "{'completion_tokens': 7, 'prompt_tokens': 16, "
        "'completion_tokens_details': {'reasoning_tokens': 3}, "
        "'prompt_tokens_details': {'cached_tokens': 2}}",
    }
    (event,) = run(json_span(sent)).events
    assert event["cost"] == {
        "total": 6.45e-06,
        "input": 2.25e-06,
        "output": 4.2e-06,
        "currency": "USD",
        "source": "gateway",
    }
    assert event["usage"]["reasoning_output_tokens"] == 3
    assert event["usage"]["cache_read_input_tokens"] == 2
    assert event["stream"] is False
    assert event["attributes"]["gen_ai.cost.reasoning_cost"] == 1.8e-06  # no field: kept


def test_openinference_requested_and_answering_models_and_parameters() -> None:
    sent = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini-2026-11-01",
        "llm.invocation_parameters": '{"model": "gpt-4o-mini", "stream": true, "user": "u-7"}',
    }
    (event,) = run(json_span(sent)).events
    assert event["request_model"] == "gpt-4o-mini"
    assert event["response_model"] == "gpt-4o-mini-2026-11-01"
    assert event["stream"] is True
    assert event["user_id"] == "u-7"
    assert "llm.invocation_parameters" in event["attributes"]  # temperature and the like


def test_openinference_error_span_has_its_requested_model() -> None:
    sent = {
        "openinference.span.kind": "LLM",
        "llm.invocation_parameters": '{"model": "gpt-fail-model"}',
    }
    (event,) = run(json_span(sent, status={"code": 2, "message": "failed"})).events
    assert event["request_model"] == "gpt-fail-model"
    assert "response_model" not in event


def first_token_span(name: str, after_ns: int) -> dict[str, Any]:
    events = [
        {"name": name, "timeUnixNano": str(START_NS + after_ns + extra)}
        for extra in (5_000_000, 0, 9_000_000)  # a sender's events, in any order
    ]
    return json_span({"gen_ai.operation.name": "chat"}, events=events)


def test_time_to_first_token_from_the_first_token_events_in_json_and_protobuf() -> None:
    for name in ("First Token Stream Event", "gen_ai.content.completion.chunk"):
        document = json_request(first_token_span(name, 12_500_000))
        (from_json,) = checked(normalize_json, document).events
        proto = normalize_proto(proto_from_json(document).SerializeToString(), CTX)
        assert_clean(proto)
        (from_proto,) = proto.events
        assert from_json["ttft_ms"] == from_proto["ttft_ms"] == 12.5, name


def test_an_attribute_time_to_first_token_wins_over_the_events() -> None:
    span = first_token_span("gen_ai.content.completion.chunk", 12_500_000)
    span["attributes"].append(
        {"key": "gen_ai.response.time_to_first_chunk", "value": {"doubleValue": 0.25}}
    )
    (event,) = run(span).events
    assert event["ttft_ms"] == 250.0


def test_openllmetry_reasoning_streaming_and_end_user() -> None:
    sent = {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.reasoning_tokens": 3,
        "gen_ai.is_streaming": True,
        "gen_ai.user": "u-7",
    }
    (event,) = run(json_span(sent)).events
    assert event["usage"]["reasoning_output_tokens"] == 3
    assert event["stream"] is True
    assert event["user_id"] == "u-7"


def test_the_openai_sdk_error_text_gives_the_http_status() -> None:
    message = "Error code: 400 - The model `gpt-fail-model` does not exist."
    span = json_span({"gen_ai.operation.name": "chat"}, status={"code": 2, "message": message})
    (event,) = run(span).events
    assert event["error"]["http_status"] == 400
    other = json_span({"gen_ai.operation.name": "chat"}, status={"code": 2, "message": "HTTP 999"})
    (event,) = run(other).events
    assert "http_status" not in event["error"]


def test_openrouter_attempt_and_generation_children_are_not_calls() -> None:
    root = {
        "span.type": "generation",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.usage.input_tokens": 10,
        "trace.metadata.openrouter.provider_slug": "novita/fp8",
        "trace.metadata.openrouter.provider_name": "Novita",
    }
    child = {"span.type": "span", "gen_ai.operation.name": "chat"}
    result = run(
        json_span(root),
        json_span(child, spanId="ab" * 8, name="provider attempt 1: Novita"),
        json_span(child, spanId="cd" * 8, name="generation"),
    )
    (event,) = result.events
    assert result.skipped == {"not_llm": 2}
    assert event["provider"] == "anthropic"
    assert event["upstream"] == "novita"
    assert event["attributes"]["trace.metadata.openrouter.provider_slug"] == "novita/fp8"


def test_openrouter_upstream_from_the_provider_name_without_a_slug() -> None:
    sent = {"gen_ai.operation.name": "chat", "openrouter.provider_name": "Google AI Studio"}
    (event,) = run(json_span(sent)).events
    assert event["upstream"] == "google_ai_studio"


def test_a_protobuf_parent_id_of_the_wrong_length_is_kept_aside_not_as_a_parent() -> None:
    span = Span(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=b"\x01\x02\x03\x04",
        name="chat",
        start_time_unix_nano=START_NS,
        end_time_unix_nano=START_NS + 1,
    )
    span.attributes.extend(key_values({"gen_ai.operation.name": "chat"}))
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    result = normalize_proto(request.SerializeToString(), CTX)
    assert_clean(result)  # schema-valid
    (event,) = result.events
    assert "parent_span_id" not in event
    assert event["attributes"]["otlp.original_parent_span_id"] == "01020304"
