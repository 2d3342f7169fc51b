"""The Tempo sink against a real OTLP/HTTP peer (ddapm-test-agent) and a scripted one (faults).

The agent decodes what it receives into snake_case dicts (ids base64, int64 as strings), which is
what these tests compare with: every attribute must arrive under its exact name and OTLP value
type, as a TraceQL query such as ``{ span.gen_ai.request.model = "gpt-4o" }`` needs.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from foundation.settings import EnvReader
from schemas import LLMEvent
from sinks import otlp_wire, tempo
from sinks.base import (
    MisconfiguredError,
    PayloadTooLargeError,
    PermanentError,
    RetryableError,
    SendResult,
    Sink,
)
from sinks.http import parse_retry_after
from sinks.registry import read_dispatch_settings
from sinks.tempo import SPEC, TempoSink, TempoSinkConfig
from tests.helpers.ports import free_port
from tests.helpers.scripted_server import Answer, ScriptedServer
from tests.helpers.test_agent import TestAgent
from tests.helpers.waiting import eventually

SECRET = "glc_eyJvIjoiMTIzIiwibiI6InRlc3QifQ"
BASIC_AUTH = f"123456:{SECRET}"
PROTOBUF = "application/x-protobuf"


# --- LLMEvents as the normalizers produce them --------------------------------------------------


def llm_event(**fields: Any) -> LLMEvent:
    """A minimal valid event; ``fields`` replace or add top-level fields."""
    event: dict[str, Any] = {
        "schema": "llm-event/1",
        "event_id": "evt-minimal",
        "received_at": "2026-03-01T21:20:03.000000000Z",
        "source": {"format": "native", "gateway": "unknown", "test": False},
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "start_time": "2026-03-01T21:20:00.000000000Z",
        "end_time": "2026-03-01T21:20:01.000000000Z",
        "operation": "chat",
        "status": "ok",
        "usage": {},
        "cost": {"currency": "USD", "source": "unknown"},
    }
    event.update(fields)
    return event  # type: ignore[return-value]


def openrouter_event() -> LLMEvent:
    """OpenRouter Broadcast's production span (research fixture) after normalization."""
    return llm_event(
        event_id="or-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        source={"format": "otlp-json", "gateway": "openrouter", "test": False, "tenant": "acme"},
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        parent_span_id="a3ce929d0e0e4736",
        start_time="2026-03-01T21:20:00.123456789Z",
        end_time="2026-03-01T21:20:02.473456789Z",
        duration_ms=2350.0,
        ttft_ms=420.0,
        provider="anthropic",
        upstream="anthropic",
        request_model="anthropic/claude-sonnet-4",
        response_model="anthropic/claude-4-sonnet-20250522",
        stream=True,
        usage={
            "input_tokens": 1200,
            "output_tokens": 350,
            "total_tokens": 1550,
            "cache_read_input_tokens": 1024,
            "cache_write_input_tokens": 64,
            "reasoning_output_tokens": 120,
        },
        cost={
            "total": 0.00885,
            "input": 0.0036,
            "output": 0.00525,
            "currency": "USD",
            "source": "gateway",
        },
        finish_reasons=["stop"],
        user_id="user_12345",
        session_id="session_abc",
        api_key={"name": "prod-backend", "hash": "sha256:9f86d081884c7d65"},
        attributes={
            "gen_ai.request.temperature": 0.7,
            "gen_ai.request.max_tokens": 1024,
            "openrouter.provider_name": "Anthropic",
            "trace.metadata.environment": "staging",
            "trace.tags": ["chat", "prod"],
        },
    )


def error_event() -> LLMEvent:
    """A LiteLLM call that failed upstream with a rate limit."""
    return llm_event(
        event_id="litellm-chatcmpl-err-1",
        source={"format": "litellm", "gateway": "litellm", "test": False},
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id="eee19b7ec3c1b174",
        start_time="2026-03-01T21:21:00.000000000Z",
        end_time="2026-03-01T21:21:00.250000000Z",
        operation="chat",
        provider="openai",
        upstream="azure.ai.openai",
        request_model="gpt-4o",
        status="error",
        error={
            "type": "RateLimitError",
            "message": "Rate limit reached for gpt-4o",
            "http_status": 429,
        },
        rate_limit={"requests_limit": 500, "requests_remaining": 0},
    )


def content_event() -> LLMEvent:
    """An OpenRouter call that kept its prompt and completion (RELAY_CONTENT=full)."""
    return llm_event(
        event_id="or-content-1",
        source={"format": "otlp-json", "gateway": "openrouter", "test": True, "tenant": "acme"},
        trace_id="1f2e3d4c5b6a79880f1e2d3c4b5a6978",
        span_id="0123456789abcdef",
        operation="chat",
        provider="openai",
        request_model="gpt-4o",
        usage={"input_tokens": 14, "output_tokens": 9},
        cost={"total": 1, "currency": "USD", "source": "gateway"},
        finish_reasons=["stop", "length"],
        input_messages=[
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]},
        ],
        output_messages=[{"role": "assistant", "parts": [{"type": "text", "content": "Paris."}]}],
    )


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., TempoSink]]:
    made: list[TempoSink] = []

    def make(endpoint: str, **config: Any) -> TempoSink:
        sink = TempoSink(TempoSinkConfig(endpoint=endpoint, **config))
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.close()


def traces_url(server: ScriptedServer) -> str:
    return server.url + "/v1/traces"


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1/traces"


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    """An agent-decoded attribute list as a dict, failing on duplicate keys."""
    pairs = item.get("attributes", [])
    result = {pair["key"]: pair["value"] for pair in pairs}
    assert len(result) == len(pairs), "duplicate attribute keys"
    return result


def decoded(body: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(body)


def local_spans(events: Sequence[LLMEvent]) -> list[Span]:
    request = decoded(gzip.decompress(tempo.encode_request(events)))
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def rpc_status(message: str) -> bytes:
    body: bytes = status_pb2.Status(code=3, message=message).SerializeToString()
    return body


# --- against ddapm-test-agent ------------------------------------------------------------------


async def agent_payloads(agent: TestAgent, token: str, spans: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]]:
        payloads = [p for p in agent.otlp_traces(token) if p.get("resource_spans")]
        count = sum(
            len(ss["spans"])
            for p in payloads
            for rs in p["resource_spans"]
            for ss in rs["scope_spans"]
        )
        return payloads if count >= spans else []

    return await eventually(ready, message=f"{spans} spans at the test agent")


async def test_events_arrive_as_genai_spans(
    test_agent: TestAgent, make_sink: Callable[..., TempoSink]
) -> None:
    token = test_agent.new_session()
    sink = make_sink(
        test_agent.otlp_url + "/v1/traces",
        headers={"X-Datadog-Test-Session-Token": token},
        tenant="acme-tempo",
        basic_auth=BASIC_AUTH,
    )
    await sink.start()
    assert await sink.send([openrouter_event(), error_event(), content_event()]) is None

    [payload] = await agent_payloads(test_agent, token, spans=3)
    groups = {
        attributes(rs["resource"])["service.name"]["string_value"]: rs
        for rs in payload["resource_spans"]
    }
    assert set(groups) == {"openrouter", "litellm"}
    assert attributes(groups["openrouter"]["resource"]) == {
        "service.name": {"string_value": "openrouter"},
        "tenant.id": {"string_value": "acme"},
    }
    assert attributes(groups["litellm"]["resource"]) == {
        "service.name": {"string_value": "litellm"}
    }
    for rs in groups.values():
        [scope_spans] = rs["scope_spans"]
        assert scope_spans["scope"] == {"name": "llm-broadcast-relay", "version": "0.1.0"}
        assert scope_spans["schema_url"] == "https://opentelemetry.io/schemas/1.41.0"

    routed, with_content = groups["openrouter"]["scope_spans"][0]["spans"]
    [failed] = groups["litellm"]["scope_spans"][0]["spans"]

    assert {k: v for k, v in routed.items() if k != "attributes"} == {
        "trace_id": b64("4bf92f3577b34da6a3ce929d0e0e4736"),
        "span_id": b64("00f067aa0ba902b7"),
        "parent_span_id": b64("a3ce929d0e0e4736"),
        "name": "chat anthropic/claude-sonnet-4",
        "kind": "SPAN_KIND_CLIENT",
        "start_time_unix_nano": "1772400000123456789",
        "end_time_unix_nano": "1772400002473456789",
    }
    assert attributes(routed) == {
        "gen_ai.operation.name": {"string_value": "chat"},
        "gen_ai.provider.name": {"string_value": "anthropic"},
        "gen_ai.request.model": {"string_value": "anthropic/claude-sonnet-4"},
        "gen_ai.response.model": {"string_value": "anthropic/claude-4-sonnet-20250522"},
        "gen_ai.request.stream": {"bool_value": True},
        "gen_ai.usage.input_tokens": {"int_value": "1200"},
        "gen_ai.usage.output_tokens": {"int_value": "350"},
        "gen_ai.usage.total_tokens": {"int_value": "1550"},
        "gen_ai.usage.cache_read.input_tokens": {"int_value": "1024"},
        "gen_ai.usage.cache_creation.input_tokens": {"int_value": "64"},
        "gen_ai.usage.reasoning.output_tokens": {"int_value": "120"},
        "gen_ai.response.finish_reasons": {"array_value": {"values": [{"string_value": "stop"}]}},
        "gen_ai.response.time_to_first_chunk": {"double_value": 0.42},
        "gen_ai.conversation.id": {"string_value": "session_abc"},
        "gen_ai.route.gateway": {"string_value": "openrouter"},
        "gen_ai.route.upstream": {"string_value": "anthropic"},
        "gen_ai.usage.cost": {"double_value": 0.00885},
        "gen_ai.usage.input_cost": {"double_value": 0.0036},
        "gen_ai.usage.output_cost": {"double_value": 0.00525},
        "gen_ai.route.api_key.name": {"string_value": "prod-backend"},
        "gen_ai.route.api_key.hash": {"string_value": "sha256:9f86d081884c7d65"},
        "user.id": {"string_value": "user_12345"},
        "relay.event_id": {"string_value": "or-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"},
        "relay.source.format": {"string_value": "otlp-json"},
        # request parameters and other source attributes keep their own keys
        "gen_ai.request.temperature": {"double_value": 0.7},
        "gen_ai.request.max_tokens": {"int_value": "1024"},
        "openrouter.provider_name": {"string_value": "Anthropic"},
        "trace.metadata.environment": {"string_value": "staging"},
        "trace.tags": {
            "array_value": {"values": [{"string_value": "chat"}, {"string_value": "prod"}]}
        },
    }
    assert "status" not in routed  # unset: only failures carry a status

    assert failed["name"] == "chat gpt-4o"
    assert "parent_span_id" not in failed
    assert failed["status"] == {
        "code": "STATUS_CODE_ERROR",
        "message": "Rate limit reached for gpt-4o",
    }
    failed_attributes = attributes(failed)
    assert failed_attributes["error.type"] == {"string_value": "RateLimitError"}
    assert failed_attributes["http.response.status_code"] == {"int_value": "429"}
    assert failed_attributes["gen_ai.route.upstream"] == {"string_value": "azure.ai.openai"}
    assert failed_attributes["gen_ai.route.rate_limit.requests_remaining"] == {"int_value": "0"}
    # No usage and no gateway cost: absent, never a made-up 0.
    assert not [k for k in failed_attributes if k.startswith("gen_ai.usage.")]

    content = attributes(with_content)
    event = content_event()
    assert orjson.loads(content["gen_ai.input.messages"]["string_value"]) == event["input_messages"]
    assert (
        orjson.loads(content["gen_ai.output.messages"]["string_value"]) == event["output_messages"]
    )
    assert content["gen_ai.usage.cost"] == {"double_value": 1.0}
    assert content["relay.test"] == {"bool_value": True}
    assert content["gen_ai.response.finish_reasons"] == {
        "array_value": {"values": [{"string_value": "stop"}, {"string_value": "length"}]}
    }
    assert "gen_ai.input.messages" not in attributes(routed)


async def test_tenant_and_basic_auth_headers_reach_the_peer(
    test_agent: TestAgent, make_sink: Callable[..., TempoSink]
) -> None:
    token = test_agent.new_session()
    sink = make_sink(
        test_agent.otlp_url + "/v1/traces",
        headers={"X-Datadog-Test-Session-Token": token},
        tenant="acme-tempo",
        basic_auth=BASIC_AUTH,
    )
    await sink.send([openrouter_event()])

    [request] = await eventually(lambda: test_agent.requests(token, otlp=True), message="request")
    headers = request["headers"]
    assert header(headers, "X-Scope-OrgID") == "acme-tempo"
    assert (
        header(headers, "Authorization")
        == "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode()
    )
    assert header(headers, "Content-Type") == PROTOBUF
    assert header(headers, "Content-Encoding") == "gzip"
    assert request["url"].endswith("/v1/traces")


async def test_probe_accepted_by_the_agent(
    test_agent: TestAgent, make_sink: Callable[..., TempoSink]
) -> None:
    token = test_agent.new_session()
    url = test_agent.otlp_url + "/v1/traces"
    sink = make_sink(url, headers={"X-Datadog-Test-Session-Token": token}, basic_auth=BASIC_AUTH)
    result = await sink.probe()
    assert result.ok
    assert result.message == f"Tempo: accepted an empty export at {url}"
    assert SECRET not in str(result)


# --- the request on the wire (scripted peer) -------------------------------------------------


async def test_request_is_gzip_protobuf_with_the_spans(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    sink = make_sink(traces_url(scripted_server), headers={"X-Extra": "1"})
    events = [openrouter_event(), error_event()]
    assert await sink.send(events) is None

    [received] = scripted_server.requests
    assert received.method == "POST"
    assert received.path == "/v1/traces"
    assert received.headers["Content-Type"] == PROTOBUF
    assert received.headers["Content-Encoding"] == "gzip"
    assert received.headers["X-Extra"] == "1"
    assert "X-Scope-OrgID" not in received.headers
    assert "Authorization" not in received.headers
    assert received.raw[:2] == b"\x1f\x8b"  # gzip magic: compressed on the wire
    request = decoded(received.body)
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(s.name, s.kind, s.trace_id.hex(), s.span_id.hex()) for s in spans] == [
        (
            "chat anthropic/claude-sonnet-4",
            Span.SPAN_KIND_CLIENT,
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ),
        (
            "chat gpt-4o",
            Span.SPAN_KIND_CLIENT,
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
        ),
    ]


async def test_large_batches_are_encoded_off_the_event_loop(
    scripted_server: ScriptedServer,
    make_sink: Callable[..., TempoSink],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    encode = tempo.encode_request

    def recording(events: Sequence[LLMEvent]) -> bytes:
        threads.append(threading.get_ident())
        return encode(events)

    monkeypatch.setattr(tempo, "encode_request", recording)
    sink = make_sink(traces_url(scripted_server))
    await sink.send([openrouter_event()])
    await sink.send([openrouter_event()] * tempo.THREAD_THRESHOLD * 2)
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread
    assert threads[1] != loop_thread
    assert len(local_spans([openrouter_event()] * 512)) == 512


# --- how answers are classified --------------------------------------------------------------


async def test_429_retry_after_seconds(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(Answer(429, b"slow down", {"Retry-After": "7"}, "text/plain"))
    with pytest.raises(RetryableError) as caught:
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])
    assert caught.value.retry_after == 7
    assert "429" in str(caught.value)
    assert "slow down" in str(caught.value)


async def test_retry_after_as_http_date(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    scripted_server.answer_next(Answer(503, headers={"Retry-After": when}))
    with pytest.raises(RetryableError) as caught:
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])
    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 120


def test_retry_after_parsing_edges() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now


async def test_503_storm_then_recovery(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(*[Answer(503, b"unavailable", content_type="text/plain")] * 5)
    sink = make_sink(traces_url(scripted_server))
    for _ in range(5):
        with pytest.raises(RetryableError) as caught:
            await sink.send([openrouter_event()])
        assert caught.value.retry_after is None
    assert await sink.send([openrouter_event()]) is None
    assert len(scripted_server.requests) == 6


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_errors_are_retryable(
    status: int, scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(
        Answer(status, b"<html>bad gateway</html>", content_type="text/html")
    )
    with pytest.raises(RetryableError, match=str(status)):
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])


async def test_connection_refused_is_retryable(make_sink: Callable[..., TempoSink]) -> None:
    url = closed_port_url()
    with pytest.raises(RetryableError) as caught:
        await make_sink(url).send([openrouter_event()])
    assert str(caught.value) == f"Tempo: cannot reach {url}: connection refused"
    assert caught.value.retry_after is None


async def test_hanging_peer_times_out_as_retryable(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.hold()
    started = time.monotonic()
    with pytest.raises(RetryableError, match=r"no answer within 0\.3s"):
        await make_sink(traces_url(scripted_server), timeout=0.3).send([openrouter_event()])
    assert time.monotonic() - started < 5
    assert len(scripted_server.requests) == 1


async def test_413_asks_for_a_split(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(Answer(413, rpc_status("request too large"), content_type=PROTOBUF))
    with pytest.raises(PayloadTooLargeError, match="request too large"):
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])


async def test_grafana_cloud_size_429_asks_for_a_split(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    # As grafana/tempo#3831 quotes Grafana Cloud's answer to an oversize message.
    message = "grpc: received message after decompression larger than max (15728641 vs. 15728640)"
    scripted_server.answer_next(Answer(429, rpc_status(message), content_type=PROTOBUF))
    with pytest.raises(PayloadTooLargeError, match="larger than max"):
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])


async def test_partial_success_is_counted_not_raised(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(
            rejected_spans=2, error_message="2 spans older than the ingestion window"
        )
    )
    scripted_server.answer_next(Answer(200, response.SerializeToString(), content_type=PROTOBUF))
    result = await make_sink(traces_url(scripted_server)).send(
        [openrouter_event(), error_event(), content_event()]
    )
    assert result == SendResult(rejected=2, message="2 spans older than the ingestion window")


async def test_400_keeps_the_rpc_status_message(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    message = "trace ID 00000000000000000000000000000000 is invalid"
    scripted_server.answer_next(Answer(400, rpc_status(message), content_type=PROTOBUF))
    with pytest.raises(PermanentError) as caught:
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])
    assert message in str(caught.value)
    assert caught.value.isolate  # bad data: the dispatcher bisects to find the culprit


async def test_text_error_bodies_are_kept_truncated(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(
        Answer(500, b"RATE_LIMITED: " + b"x" * 5000, content_type="text/plain")
    )
    with pytest.raises(PermanentError) as caught:
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])
    assert "RATE_LIMITED" in str(caught.value)
    assert len(str(caught.value)) < 500
    assert not caught.value.isolate  # a 5xx is not about particular events


@pytest.mark.parametrize("status", [401, 403])
async def test_bad_credentials_are_a_setting_to_fix_not_bad_events(
    status: int, scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(Answer(status, b"invalid credentials", content_type="text/plain"))
    url = traces_url(scripted_server)
    with pytest.raises(MisconfiguredError) as caught:
        await make_sink(url, basic_auth=BASIC_AUTH).send([openrouter_event()])
    text = str(caught.value)
    assert url in text
    assert "RELAY_TEMPO_BASIC_AUTH" in text
    assert SECRET not in text
    assert scripted_server.requests[0].headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    "answer",
    [
        Answer(404, b"404 page not found", content_type="text/plain"),
        Answer(308, headers={"Location": "https://tempo.example/v1/traces"}),
    ],
)
async def test_wrong_endpoint_points_at_the_setting(
    answer: Answer, scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(answer)
    with pytest.raises(MisconfiguredError, match="RELAY_TEMPO_ENDPOINT"):
        await make_sink(traces_url(scripted_server)).send([openrouter_event()])
    assert len(scripted_server.requests) == 1  # the redirect was not followed


async def test_an_empty_batch_sends_nothing(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    assert await make_sink(traces_url(scripted_server)).send([]) is None
    assert scripted_server.requests == []


# --- encoding details --------------------------------------------------------------------------


def test_mapped_fields_win_over_source_attributes_and_values_keep_their_types() -> None:
    event = llm_event(
        request_model="gpt-4o",
        attributes={
            "gen_ai.request.model": "spoofed",
            "flag": False,
            "huge": 1 << 70,
            "nested": {"a": [1, 2]},
            "mixed": [1, "a"],
            "ports": [443, 8443],
            "empty": None,
        },
    )
    [span] = local_spans([event])
    values = {kv.key: kv.value for kv in span.attributes}
    assert values["gen_ai.request.model"].string_value == "gpt-4o"
    assert values["flag"].WhichOneof("value") == "bool_value"
    assert values["huge"].string_value == str(1 << 70)
    assert orjson.loads(values["nested"].string_value) == {"a": [1, 2]}
    assert values["mixed"].string_value == '[1,"a"]'  # OTLP arrays must be homogeneous
    assert [v.int_value for v in values["ports"].array_value.values] == [443, 8443]
    assert "empty" not in values
    assert span.name == "chat gpt-4o"
    assert span.start_time_unix_nano == 1772400000000000000


def test_bodies_are_canonical_protobuf() -> None:
    """The body is written by hand (sinks.otlp_wire): protobuf itself must read it and write back
    the very same bytes, so no field is mis-tagged, mis-typed or out of order."""
    odd = llm_event(
        parent_span_id="00f067aa0ba902b7",
        attributes={
            "negative": -5,
            "zero": 0,
            "pi": 3.25,
            "empty_text": "",
            "empty_list": [],
            "long_text": "x" * 20_000,  # a length that needs a three-byte varint
            "unicode": "héllo ✓",
            "nested": [[1]],
        },
    )
    for events in (
        [openrouter_event(), error_event(), content_event(), odd],
        [llm_event(source={"format": "otlp-json", "gateway": "openrouter", "tenant": "t1"})],
    ):
        body = gzip.decompress(tempo.encode_request(events))
        assert decoded(body).SerializeToString() == body
    [span] = local_spans([odd])
    values = {kv.key: kv.value for kv in span.attributes}
    assert values["negative"].int_value == -5
    assert values["zero"].WhichOneof("value") == "int_value"
    assert values["pi"].double_value == 3.25
    assert values["empty_text"].WhichOneof("value") == "string_value"
    assert values["empty_list"].WhichOneof("value") == "array_value"
    assert values["long_text"].string_value == "x" * 20_000
    assert values["unicode"].string_value == "héllo ✓"
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"


def test_equal_values_of_other_types_keep_their_own_type() -> None:
    """Encoded attributes are remembered across spans: 1, 1.0 and True are equal in Python, and
    must still reach Tempo as an int, a double and a bool."""
    spans = local_spans([llm_event(attributes={"n": value}) for value in (1, 1.0, True, 1, "1")])
    kinds = [{kv.key: kv.value for kv in s.attributes}["n"].WhichOneof("value") for s in spans]
    assert kinds == ["int_value", "double_value", "bool_value", "int_value", "string_value"]


def test_remembered_attributes_stay_bounded() -> None:
    encoder = otlp_wire.AttributeEncoder(b"\x4a", limit=100)
    for number in range(1000):
        encoder.encode({"user.id": f"user-{number}", "gen_ai.provider.name": "openai"})
        assert len(encoder) <= 100


def test_a_span_without_a_model_is_named_by_its_operation() -> None:
    [span] = local_spans([llm_event(operation="embeddings")])
    assert span.name == "embeddings"
    assert span.parent_span_id == b""


def test_an_unusable_event_is_a_permanent_error_naming_it() -> None:
    with pytest.raises(PermanentError, match="evt-broken") as caught:
        tempo.encode_request([openrouter_event(), llm_event(event_id="evt-broken", trace_id="zz")])
    assert caught.value.isolate


# --- setup check -------------------------------------------------------------------------------


async def test_probe_reports_bad_credentials(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(Answer(401, b"authentication error", content_type="text/plain"))
    url = traces_url(scripted_server)
    result = await make_sink(url, basic_auth=BASIC_AUTH).probe()
    assert not result.ok
    assert result.message.startswith(f"Tempo: 401 from {url}: check RELAY_TEMPO_BASIC_AUTH")
    assert SECRET not in str(result)
    [received] = scripted_server.requests
    assert len(decoded(received.body).resource_spans) == 0  # an empty export, nothing stored


async def test_probe_reports_an_unreachable_endpoint(make_sink: Callable[..., TempoSink]) -> None:
    url = closed_port_url()
    result = await make_sink(url, basic_auth=BASIC_AUTH).probe()
    assert not result.ok
    assert result.message == f"Tempo: cannot reach {url}: connection refused"
    assert SECRET not in str(result)


async def test_probe_reports_other_statuses_with_the_server_message(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    scripted_server.answer_next(
        Answer(500, rpc_status("ingester unavailable"), content_type=PROTOBUF)
    )
    url = traces_url(scripted_server)
    result = await make_sink(url).probe()
    assert not result.ok
    assert result.message == f"Tempo: 500 from {url}: ingester unavailable"


# --- lifecycle and configuration --------------------------------------------------------------


async def test_start_and_close_are_idempotent(scripted_server: ScriptedServer) -> None:
    sink = TempoSink(TempoSinkConfig(endpoint=traces_url(scripted_server)))
    assert isinstance(sink, Sink)
    await sink.close()  # without start
    await sink.start()
    await sink.start()
    assert await sink.send([openrouter_event()]) is None
    await sink.close()
    await sink.close()


def test_default_config_from_only_the_endpoint(tmp_path: Path) -> None:
    env = EnvReader({"RELAY_TEMPO_ENDPOINT": "http://tempo:4318/v1/traces"})
    config = SPEC.read_config(env, tmp_path)
    assert env.problems == []
    assert config == TempoSinkConfig(endpoint="http://tempo:4318/v1/traces")
    assert isinstance(SPEC.build(config), Sink)
    assert SPEC.name == "tempo"
    assert (SPEC.defaults.batch_size, SPEC.defaults.batch_max_bytes) == (512, 4 * 1024 * 1024)
    assert SPEC.defaults.flush_interval == 1.0


def test_full_config_and_masked_description(tmp_path: Path) -> None:
    env = EnvReader(
        {
            "RELAY_TEMPO_ENDPOINT": "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/traces",
            "RELAY_TEMPO_HEADERS": "X-Team=llm,X-Api-Key=k%3Dsecret",
            "RELAY_TEMPO_TENANT": "acme",
            "RELAY_TEMPO_BASIC_AUTH": BASIC_AUTH,
            "RELAY_TEMPO_TIMEOUT": "2.5",
        }
    )
    config = TempoSinkConfig.from_env(env, tmp_path)
    assert env.problems == []
    assert config.headers == {"X-Team": "llm", "X-Api-Key": "k=secret"}
    assert (config.tenant, config.basic_auth, config.timeout) == ("acme", BASIC_AUTH, 2.5)
    described = config.describe()
    assert described["basic_auth"] == "***"
    assert described["headers"] == {"X-Team": "***", "X-Api-Key": "***"}
    assert SECRET not in repr(described)
    assert "k=secret" not in repr(described)


def test_missing_endpoint_is_a_problem(tmp_path: Path) -> None:
    env = EnvReader({"RELAY_SINKS": "tempo"})
    TempoSinkConfig.from_env(env, tmp_path)
    assert env.problems == ["RELAY_TEMPO_ENDPOINT: required when tempo is in RELAY_SINKS"]


def test_bad_settings_are_reported_once_without_secrets(tmp_path: Path) -> None:
    env = EnvReader(
        {
            "RELAY_TEMPO_ENDPOINT": "http://123456:pw@tempo:4318/v1/traces",
            "RELAY_TEMPO_BASIC_AUTH": SECRET,
            "RELAY_TEMPO_TIMEOUT": "soon",
        }
    )
    TempoSinkConfig.from_env(env, tmp_path)
    read_dispatch_settings(env, "tempo", SPEC.defaults)
    names = [problem.split(":")[0] for problem in env.problems]
    assert sorted(names) == [
        "RELAY_TEMPO_BASIC_AUTH",
        "RELAY_TEMPO_ENDPOINT",
        "RELAY_TEMPO_TIMEOUT",
    ]
    assert SECRET not in repr(env.problems)
    assert "pw" not in repr(env.problems)


async def test_concurrent_sends_are_all_delivered(
    scripted_server: ScriptedServer, make_sink: Callable[..., TempoSink]
) -> None:
    sink = make_sink(traces_url(scripted_server))
    await asyncio.gather(*(sink.send([openrouter_event()]) for _ in range(5)))
    assert len(scripted_server.requests) == 5
