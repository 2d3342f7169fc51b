"""POST/PUT /v1/traces end to end: real OTLP senders in, LLMEvents in the file sink out."""

from __future__ import annotations

import gzip
import os
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import jsonschema
import orjson
import pytest
import urllib3
import zstandard
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from receiver.ingest import OFF_LOOP_BYTES
from schemas import json_schema
from tests.conftest import fixture_json
from tests.helpers.payloads import otlp_json_spans, otlp_span
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import at_least, wait_until

VALIDATOR = jsonschema.Draft202012Validator(json_schema())
JSON = {"Content-Type": "application/json"}


def events_for(relay: RelayProcess, trace_id: str, count: int = 1) -> list[dict[str, Any]]:
    found = wait_until(
        at_least(count, lambda: [e for e in relay.events() if e["trace_id"] == trace_id]),
        message=f"{count} event(s) of trace {trace_id} in the file sink",
    )
    for event in found:
        VALIDATOR.validate(event)
    return found


def otlp_json_span(trace_id: str, span_id: str, **attributes: Any) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": "1772400000000000000",
        "endTimeUnixNano": "1772400001000000000",
        "attributes": [{"key": k, "value": {"stringValue": str(v)}} for k, v in attributes.items()],
    }


def otlp_json(*spans: dict[str, Any], service: str = "openrouter") -> bytes:
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeSpans": [{"spans": list(spans)}],
                }
            ]
        }
    )


def test_sdk_exporter_spans_arrive_with_every_field(relay: RelayProcess) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "my-llm-app"}))
    exporter = OTLPSpanExporter(endpoint=relay.url + "/v1/traces", compression=Compression.Gzip)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    start = 1_772_400_000_123_456_789
    with tracer.start_as_current_span("app request") as parent:
        span = tracer.start_span("chat gpt-4o", kind=SpanKind.CLIENT, start_time=start)
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 350,
                "gen_ai.usage.cache_read.input_tokens": 1024,
                "gen_ai.usage.reasoning.output_tokens": 64,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.request.temperature": 0.2,
                "gen_ai.conversation.id": "conv-1",
                "user.id": "user-7",
                "gen_ai.usage.total_cost": 0.0123,
            }
        )
        span.end(end_time=start + 2_500_000_000)
        failed = tracer.start_span("chat claude", kind=SpanKind.CLIENT, start_time=start)
        failed.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4",
                "error.type": "rate_limit_exceeded",
            }
        )
        failed.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
        failed.end(end_time=start + 100_000_000)
    provider.shutdown()

    trace_id = format(parent.get_span_context().trace_id, "032x")
    events = {e["request_model"]: e for e in events_for(relay, trace_id, 2)}
    ok = events["gpt-4o"]
    assert ok["span_id"] == format(span.get_span_context().span_id, "016x")
    assert ok["parent_span_id"] == format(parent.get_span_context().span_id, "016x")
    assert ok["source"] == {
        "format": "otlp-proto",
        "gateway": "unknown",
        "test": False,
        "tenant": None,
    }
    assert ok["start_time"] == "2026-03-01T21:20:00.123456789Z"
    assert ok["end_time"] == "2026-03-01T21:20:02.623456789Z"
    assert ok["duration_ms"] == 2500.0
    assert (ok["operation"], ok["provider"], ok["response_model"]) == (
        "chat",
        "openai",
        "gpt-4o-2024-08-06",
    )
    assert ok["usage"] == {
        "input_tokens": 1200,
        "output_tokens": 350,
        "total_tokens": 1550,
        "cache_read_input_tokens": 1024,
        "reasoning_output_tokens": 64,
    }
    assert ok["cost"] == {"total": 0.0123, "currency": "USD", "source": "gateway"}
    assert ok["status"] == "ok" and ok["finish_reasons"] == ["stop"]
    assert (ok["session_id"], ok["user_id"]) == ("conv-1", "user-7")
    assert ok["attributes"]["gen_ai.request.temperature"] == 0.2
    assert ok["attributes"]["resource.service.name"] == "my-llm-app"
    assert ok["event_id"] and ok["received_at"].endswith("Z")

    error = events["claude-sonnet-4"]
    assert error["status"] == "error" and error["provider"] == "anthropic"
    assert error["error"] == {"type": "rate_limit_exceeded", "message": "429 Too Many Requests"}
    assert error["cost"] == {"currency": "USD", "source": "unknown"}
    # The parent span is an application span, not an LLM call: skipped, not stored.
    assert not [
        e
        for e in relay.events()
        if e["span_id"] == format(parent.get_span_context().span_id, "016x")
    ]


@pytest.mark.parametrize(
    "label",
    ["send-test-trace-button", "production-chat-request-with-user-session-and-trace-metadata"],
)
def test_openrouter_fixture_replayed_byte_for_byte(relay: RelayProcess, label: str) -> None:
    request = next(
        r["request"]
        for r in fixture_json("openrouter-otlp-example.json")["requests"]
        if r["_label"] == label
    )
    body = orjson.dumps(request["body"])
    headers = {k: v for k, v in request["headers"].items() if k != "Authorization"}
    response = relay.request(request["method"], request["path"], body, headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert orjson.loads(response.data) == {}
    span = request["body"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    (event,) = events_for(relay, span["traceId"])
    assert event["source"]["gateway"] == "openrouter"
    if label == "send-test-trace-button":
        assert event["source"]["test"] is True
        assert event["response_model"] == "openai/gpt-4-turbo"
        assert event["usage"] == {
            "input_tokens": 50,
            "output_tokens": 100,
            "total_tokens": 150,
            "cache_read_input_tokens": 20,
            "reasoning_output_tokens": 10,
        }
        assert event["cost"] == {
            "total": 0.02,
            "input": 0.005,
            "output": 0.015,
            "currency": "USD",
            "source": "gateway",
        }
        assert event["input_messages"] == [
            {
                "role": "user",
                "parts": [{"type": "text", "content": "What is the capital of France?"}],
            }
        ]
        assert event["attributes"]["testId"] == "0dc588ef-d837-4089-9420-b697a94922e6"
        assert event["attributes"]["gen_ai.request.max_tokens"] == 150
        assert event["api_key"] == {"name": "Test API Key"}
    else:
        assert event["source"]["test"] is False
        assert (event["provider"], event["upstream"]) == ("anthropic", "anthropic")
        assert event["request_model"] == "anthropic/claude-sonnet-4"
        assert event["usage"]["cache_read_input_tokens"] == 1024
        assert event["cost"]["total"] == 0.00885
        assert (event["user_id"], event["session_id"]) == ("user_12345", "session_abc")
        assert event["duration_ms"] == 2350.0
        assert event["output_messages"][0]["parts"][0]["content"] == "Hi! How can I help?"
        assert event["attributes"]["trace.metadata.environment"] == "staging"
        assert event["attributes"]["openrouter.finish_reason"] == "end_turn"
        assert (
            event["attributes"]["resource.openrouter.trace.id"] == "gen-1772400000-AbCdEfGhIjKlMnOp"
        )


@pytest.mark.parametrize("body", [b"", b"{}", b'{"resourceSpans":[]}'])
def test_openrouter_test_connection_answers_200_and_stores_nothing(
    relay: RelayProcess, body: bytes
) -> None:
    before = (
        relay.get_json("/v1/status")["sinks"]["file"]["sent"]
        + relay.get_json("/v1/status")["sinks"]["file"]["backlog"]
    )
    response = relay.request("POST", "/v1/traces", body, {**JSON, "X-Test-Connection": "true"})
    assert response.status == 200
    status = relay.get_json("/v1/status")["sinks"]["file"]
    assert status["sent"] + status["backlog"] == before


def test_put_is_accepted_like_post(relay: RelayProcess) -> None:
    trace_id = os.urandom(16).hex()
    body = otlp_json(otlp_json_span(trace_id, os.urandom(8).hex(), **{"gen_ai.request.model": "m"}))
    assert relay.request("PUT", "/v1/traces", body, JSON).status == 200
    assert events_for(relay, trace_id)[0]["request_model"] == "m"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
def test_compressed_bodies(relay: RelayProcess, encoding: str) -> None:
    trace_id = os.urandom(16).hex()
    raw = otlp_json(
        otlp_json_span(trace_id, os.urandom(8).hex(), **{"gen_ai.request.model": encoding})
    )
    compress: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "zstd": zstandard.compress,
    }
    body = compress[encoding](raw)
    response = relay.request("POST", "/v1/traces", body, {**JSON, "Content-Encoding": encoding})
    assert response.status == 200
    assert events_for(relay, trace_id)[0]["request_model"] == encoding


def test_protobuf_answer_is_protobuf_with_partial_success(relay: RelayProcess) -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    good = spans.add(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="chat m",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
    )
    good.attributes.add(key="gen_ai.request.model").value.string_value = "m"
    bad = spans.add(trace_id=b"short", span_id=os.urandom(8), name="chat m")
    bad.attributes.add(key="gen_ai.request.model").value.string_value = "m"
    spans.add(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="GET /users",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
    )
    response = relay.request(
        "POST",
        "/v1/traces",
        request.SerializeToString(),
        {"Content-Type": "application/x-protobuf"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.data)
    assert answer.partial_success.rejected_spans == 1
    assert "trace_id must be 16 bytes" in answer.partial_success.error_message
    assert events_for(relay, good.trace_id.hex())[0]["request_model"] == "m"


def test_partial_success_in_json(relay: RelayProcess) -> None:
    trace_id = os.urandom(16).hex()
    good = otlp_json_span(trace_id, os.urandom(8).hex(), **{"gen_ai.request.model": "m"})
    bad = otlp_json_span(trace_id, os.urandom(8).hex(), **{"gen_ai.request.model": "m"})
    bad["startTimeUnixNano"] = "not a time"
    response = relay.request("POST", "/v1/traces", otlp_json(good, bad), JSON)
    assert response.status == 200
    answer = orjson.loads(response.data)
    assert answer["partialSuccess"]["rejectedSpans"] == "1"
    assert "startTimeUnixNano" in answer["partialSuccess"]["errorMessage"]
    assert len(events_for(relay, trace_id)) == 1


def test_variants_of_senders_are_all_understood(relay: RelayProcess) -> None:
    trace_id = os.urandom(16).hex()
    openinference = otlp_json_span(
        trace_id,
        os.urandom(8).hex(),
        **{
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.system": "openai",
            "llm.token_count.prompt": "10",
            "llm.token_count.completion": "5",
            "llm.token_count.prompt_details.cache_read": "4",
            "llm.cost.total": "0.001",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "hi",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "hello",
            "session.id": "s1",
        },
    )
    legacy = otlp_json_span(
        trace_id,
        os.urandom(8).hex(),
        **{
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet",
            "gen_ai.usage.prompt_tokens": "7",
            "gen_ai.usage.completion_tokens": "3",
            "gen_ai.usage.cache_creation_input_tokens": "2",
            "trace.metadata.openrouter.provider_slug": "amazon-bedrock",
            "trace.metadata.openrouter.api_key_name": "legacy-key",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "q",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "a",
        },
    )
    legacy["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": 7}})
    relay.request(
        "POST", "/v1/traces", otlp_json(openinference, legacy, service="unknown-svc"), JSON
    )
    events = {e["span_id"]: e for e in events_for(relay, trace_id, 2)}
    oi = events[openinference["spanId"]]
    assert (oi["operation"], oi["provider"], oi["request_model"]) == (
        "chat",
        "openai",
        "gpt-4o-mini",
    )
    assert oi["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "cache_read_input_tokens": 4,
    }
    assert oi["cost"]["total"] == 0.001 and oi["session_id"] == "s1"
    assert oi["input_messages"][0]["parts"][0]["content"] == "hi"
    assert oi["output_messages"][0]["parts"][0]["content"] == "hello"
    old = events[legacy["spanId"]]
    assert old["usage"]["input_tokens"] == 7 and old["usage"]["cache_write_input_tokens"] == 2
    assert old["upstream"] == "amazon-bedrock" and old["api_key"] == {"name": "legacy-key"}
    assert old["source"]["gateway"] == "openrouter"
    assert old["input_messages"] == [{"role": "user", "parts": [{"type": "text", "content": "q"}]}]


def test_a_body_normalized_off_the_event_loop_is_stored_whole(relay: RelayProcess) -> None:
    """A body over ``OFF_LOOP_BYTES`` goes through a worker thread: every span is stored, as
    inline."""
    spans = [otlp_span(index=n) for n in range(1500)]
    body = otlp_json(*spans)
    assert len(body) > OFF_LOOP_BYTES
    answer = relay.request("POST", "/v1/traces", body, {"Content-Type": "application/json"})
    assert answer.status == 200, answer.data
    wanted = {span["spanId"] for span in spans}
    wait_until(
        lambda: wanted <= {e["span_id"] for e in relay.events()}, message="every span stored"
    )


def test_a_heavy_body_leaves_livez_answering_within_a_probe_timeout(relay: RelayProcess) -> None:
    """While a 4 MiB batch is read, normalized, stored and counted, ``/livez`` keeps answering
    within a Kubernetes liveness probe's default timeout (one second): a heavy request from one
    sender must not get the relay restarted, nor hold every other sender's requests."""
    body = otlp_json_spans(14_000)
    assert len(body) > 4 * 1024 * 1024 > OFF_LOOP_BYTES
    probes: list[float] = []
    failures: list[str] = []
    done = threading.Event()

    def probe() -> None:
        http = urllib3.PoolManager(retries=False)
        while not done.is_set() and len(probes) < 10_000:
            started = time.monotonic()
            try:
                status = http.request("GET", relay.url + "/livez", timeout=1.0).status
            except urllib3.exceptions.HTTPError as error:
                failures.append(type(error).__name__)
                continue
            probes.append(time.monotonic() - started)
            if status != 200:
                failures.append(str(status))
            done.wait(0.02)  # a probe every 20 ms, as a poller's interval

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        answer = relay.request(
            "POST", "/v1/traces", body, {"Content-Type": "application/json"}, timeout=60
        )
    finally:
        done.set()
        prober.join()
    assert answer.status == 200, answer.data[:300]
    assert not failures, failures
    assert len(probes) >= 10, "the request was too quick to show anything"


def test_a_json_body_without_resource_spans_is_answered_and_counted_not_ignored(
    relay: RelayProcess,
) -> None:
    """A body that is valid OTLP only because unknown fields are ignored (a fixture's envelope
    posted by mistake) gets a partial success that says why nothing was read, and a count."""
    before = relay.metric("relay_items_rejected_total", route="otlp", reason="invalid_item")
    envelope = orjson.dumps({"_format": "fixture", "requests": [{"request": {}}]})
    answer = relay.request("POST", "/v1/traces", envelope, JSON)
    assert answer.status == 200
    partial = orjson.loads(answer.data)["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "no resourceSpans" in partial["errorMessage"] and "requests" in partial["errorMessage"]
    after = relay.metric("relay_items_rejected_total", route="otlp", reason="invalid_item")
    assert after == before + 1
