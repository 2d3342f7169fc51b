"""LLMEvents as OpenTelemetry GenAI spans (``sinks.otlp_spans``), as a real OTLP/HTTP peer
(ddapm-test-agent) receives them and as protobuf itself reads them back.

The agent decodes what it receives into snake_case dicts (ids base64, int64 as strings), which is
what these tests compare with: every attribute must arrive under its exact name and OTLP value
type, as a TraceQL query such as ``{ span.gen_ai.request.model = "gpt-4o" }`` needs.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from foundation.settings import EnvReader
from schemas import LLMEvent
from sinks import otlp_spans, otlp_wire
from sinks.base import Batch, PermanentError
from sinks.otlp import OtlpSink
from sinks.otlp_config import read_preset
from sinks.otlp_presets import TEMPO
from sinks.registry import sink_specs
from tests.helpers.test_agent import TestAgent
from tests.helpers.waiting import eventually

BASIC_AUTH = "123456:glc_eyJvIjoiMTIzIiwibiI6InRlc3QifQ"


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
    request = decoded(otlp_spans.encode_request(events))
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


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


async def test_events_arrive_as_genai_spans(test_agent: TestAgent) -> None:
    token = test_agent.new_session()
    env = EnvReader(
        {
            "RELAY_TEMPO_ENDPOINT": test_agent.otlp_url + "/v1/traces",
            "RELAY_TEMPO_HEADERS": f"X-Datadog-Test-Session-Token={token}",
            "RELAY_TEMPO_TENANT": "acme-tempo",
            "RELAY_TEMPO_BASIC_AUTH": BASIC_AUTH,
        }
    )
    sink = OtlpSink(read_preset(env, sink_specs()["tempo"].defaults, TEMPO))
    await sink.start()
    try:
        events = Batch.of([openrouter_event(), error_event(), content_event()])
        assert await sink.send(events) is None
    finally:
        await sink.close()

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
        "llm.token_count.total": {"int_value": "1550"},
        "llm.token_count.completion_details.reasoning": {"int_value": "120"},
        "gen_ai.response.finish_reasons": {"array_value": {"values": [{"string_value": "stop"}]}},
        "gen_ai.response.time_to_first_chunk": {"double_value": 0.42},
        "gen_ai.conversation.id": {"string_value": "session_abc"},
        "gen_ai.route.gateway": {"string_value": "openrouter"},
        "gen_ai.route.upstream": {"string_value": "anthropic"},
        "gen_ai.usage.cost": {"double_value": 0.00885},
        "gen_ai.usage.input_cost": {"double_value": 0.0036},
        "gen_ai.usage.output_cost": {"double_value": 0.00525},
        # the same cost under OpenInference's names, for the stores that read those
        "llm.cost.total": {"double_value": 0.00885},
        "llm.cost.prompt": {"double_value": 0.0036},
        "llm.cost.completion": {"double_value": 0.00525},
        # reported by the gateway (billed), not the relay's estimate
        "gen_ai.usage.cost_source": {"string_value": "gateway"},
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
    # Two finish reasons for one message do not say which is its own: "" (not reported).
    assert orjson.loads(content["gen_ai.output.messages"]["string_value"]) == [
        {**message, "finish_reason": ""} for message in event["output_messages"]
    ]
    assert content["gen_ai.usage.cost"] == {"double_value": 1.0}
    assert content["relay.test"] == {"bool_value": True}
    assert content["gen_ai.response.finish_reasons"] == {
        "array_value": {"values": [{"string_value": "stop"}, {"string_value": "length"}]}
    }
    assert "gen_ai.input.messages" not in attributes(routed)


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


def test_a_cost_says_where_it_comes_from() -> None:
    """Billed (``gateway``) or the relay's estimate from a price table (``table``, with the
    table's version), so that a TraceQL query can tell them apart; nothing when unknown."""
    table = {
        "total": 6.3e-06,
        "input": 2.1e-06,
        "output": 4.2e-06,
        "currency": "USD",
        "source": "table",
        "table": "genai-prices 0.2.3",
    }
    events = [llm_event(cost=table), openrouter_event(), error_event()]
    estimated, billed, unknown = (
        {kv.key: kv.value for kv in span.attributes} for span in local_spans(events)
    )
    assert estimated["gen_ai.usage.cost_source"].string_value == "table"
    assert estimated["gen_ai.usage.cost_table"].string_value == "genai-prices 0.2.3"
    assert estimated["gen_ai.usage.cost"].double_value == 6.3e-06
    assert estimated["llm.cost.total"].double_value == 6.3e-06
    assert billed["gen_ai.usage.cost_source"].string_value == "gateway"
    assert "gen_ai.usage.cost_table" not in billed
    assert not [key for key in unknown if "cost" in key]


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
        body = otlp_spans.encode_request(events)
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
        otlp_spans.encode_request(
            [openrouter_event(), llm_event(event_id="evt-broken", trace_id="zz")]
        )
    assert caught.value.isolate


def test_resource_attributes_can_replace_the_relays_own() -> None:
    body = otlp_spans.encode_request([openrouter_event()], {"service.name": "ml-app", "x": True})
    (resource_spans,) = decoded(body).resource_spans
    values = {kv.key: kv.value for kv in resource_spans.resource.attributes}
    assert values["service.name"].string_value == "ml-app"
    assert values["tenant.id"].string_value == "acme"
    assert values["x"].bool_value is True
