"""Otoroshi data-exporter events: LLMUsageAudit becomes LLMEvents, the rest is counted."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from receiver.normalizers.base import InputError, Normalized
from receiver.normalizers.common import derived_trace_ids, key_hash, stable_id
from receiver.normalizers.otoroshi import normalize
from tests.receiver.normalizers.conftest import CTX, RECEIVED_AT, bodies, checked, ndjson, wire

BATCH, EMBEDDING = bodies("otoroshi-llmusageaudit-example.json")
BLOCKING, STREAMING, GUARDRAIL = BATCH


def run(inputs: Any, *secrets: str) -> Normalized:
    """The normalizer on ``inputs`` as sent; every result is checked for schema and secrets."""
    return checked(normalize, inputs, secrets)


def variant(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def test_blocking_chat_success_field_by_field() -> None:
    result = run(BATCH, "a3b1c2d4e5f6g7h8")  # clientId authenticates
    assert (len(result.events), result.rejected, result.skipped) == (3, [], {})
    event = result.events[0]
    event_id = stable_id("otoroshi", "1905616593920983819")
    assert event["event_id"] == event_id
    assert event["received_at"] == RECEIVED_AT
    assert event["source"] == {"format": "otoroshi", "gateway": "otoroshi", "test": False}
    assert (event["trace_id"], event["span_id"]) == derived_trace_ids(event_id)
    # @timestamp 1743169375292 ms is the end; duration 415 ms before it is the start
    assert event["end_time"] == "2025-03-28T13:42:55.292000000Z"
    assert event["start_time"] == "2025-03-28T13:42:54.877000000Z"
    assert event["duration_ms"] == 415.0
    assert (event["operation"], event["stream"]) == ("chat", False)
    assert (event["provider"], event["upstream"]) == ("openai", "openai")
    assert (event["request_model"], event["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini")
    assert event["usage"] == {
        "input_tokens": 11,
        "output_tokens": 18,
        "reasoning_output_tokens": 0,
        "total_tokens": 29,
    }
    assert event["cost"] == {
        "currency": "USD",
        "source": "gateway",
        "total": 0.00001245,
        "input": 0.00000165,
        "output": 0.0000108,
    }
    assert event["status"] == "ok"
    assert "error" not in event
    assert event["rate_limit"] == {
        "requests_limit": 10000,
        "requests_remaining": 9999,
        "tokens_limit": 200000,
        "tokens_remaining": 199993,
    }
    assert event["api_key"] == {"name": "billing-service", "hash": key_hash("a3b1c2d4e5f6g7h8")}
    assert "user_id" not in event
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "tell me a joke"}]}
    ]
    answer = "Why did the scarecrow win an award?\n\nBecause he was outstanding in his field!"
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": answer}]}
    ]
    attributes = event["attributes"]
    assert attributes["otoroshi.id"] == "1905616593920983819"
    assert attributes["otoroshi.request_id"] == "1905616593920983810"
    assert attributes["otoroshi.consumed_using"] == "chat/completion/blocking"
    assert attributes["otoroshi.route.name"] == "test"
    assert attributes["otoroshi.route.domains"] == ["test.oto.tools"]
    assert attributes["otoroshi.provider.id"] == "provider_10bbc76d-7cd8-4cb7-b760-61e749a1b691"
    assert attributes["otoroshi.provider.name"] == "OpenAI clean"
    assert attributes["server.address"] == "api.openai.com"
    assert attributes["otoroshi.env"] == "prod"
    assert attributes["otoroshi.instance.name"] == "otoroshi-1"
    assert attributes["otoroshi.cluster.mode"] == "Off"
    assert attributes["otoroshi.apikey.metadata.team"] == "billing"
    assert attributes["otoroshi.apikey.tags"] == ["team-billing"]
    assert attributes["otoroshi.costs.reasoning_cost"] == 0
    assert not any("secret" in key.lower() or "token" in key.lower() for key in attributes)


def test_streaming_success_keeps_stream_chunks_and_user_without_token() -> None:
    event = run(BATCH).events[1]
    assert event["event_id"] == stable_id("otoroshi", "1905616600000000001")
    assert (event["operation"], event["stream"]) == ("chat", True)
    assert (event["provider"], event["upstream"]) == ("anthropic", "anthropic")
    assert event["response_model"] == "claude-sonnet-4-20250514"
    assert event["duration_ms"] == 1830.0
    assert event["start_time"] == "2025-03-28T13:42:58.270000000Z"
    assert event["usage"] == {
        "input_tokens": 25,
        "output_tokens": 6,
        "reasoning_output_tokens": 0,
        "total_tokens": 31,
    }
    assert event["cost"] == {
        "currency": "USD",
        "source": "gateway",
        "total": 0.000165,
        "input": 0.000075,
        "output": 0.00009,
    }
    assert "rate_limit" not in event  # every value was -1: unknown, not zero
    assert event["finish_reasons"] == ["stop"]
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hi there!"}]}
    ]
    assert [m["role"] for m in event["input_messages"]] == ["system", "user"]
    assert event["user_id"] == "jane@example.com"
    assert "api_key" not in event
    attributes = event["attributes"]
    assert attributes["otoroshi.stream.chunks"] == 3
    assert attributes["otoroshi.user.name"] == "Jane Doe"
    assert attributes["otoroshi.user.realm"] == "oidc"
    assert attributes["otoroshi.user.auth_config_id"] == "auth_mod_oidc"


def test_streaming_without_aggregated_output_is_rebuilt_from_chunks() -> None:
    chunks_only = variant(STREAMING, output=None, usage=None)
    result = run([chunks_only])
    event = result.events[0]
    assert event["stream"] is True
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hi there!"}]}
    ]
    assert event["usage"]["input_tokens"] == 25  # from the last chunk that carried usage
    assert event["finish_reasons"] == ["stop"]


def test_guardrail_denial_is_an_error_with_the_configured_model() -> None:
    event = run(BATCH).events[2]
    assert event["status"] == "error"
    assert event["error"] == {
        "type": "guardrail_denied",
        "message": "request blocked by prompt injection guardrail",
    }
    assert event["attributes"]["gateway.guardrail_denied"] is True
    assert event["attributes"]["otoroshi.error.phase"] == "before"
    # error events have no model, usage, duration or costs
    assert event["request_model"] == "gpt-4o-mini"
    assert "response_model" not in event
    assert event["usage"] == {}
    assert event["cost"] == {"currency": "USD", "source": "unknown"}
    assert event["start_time"] == event["end_time"] == "2025-03-28T13:43:10.500000000Z"
    assert "duration_ms" not in event
    assert "output_messages" not in event


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"exception": "connection reset"}, {"type": "exception", "message": "connection reset"}),
        (
            {
                "error": {"message": "Rate limit reached", "type": "requests", "code": "rl"},
                "status": 429,
            },
            {"type": "requests", "message": "Rate limit reached", "http_status": 429},
        ),
        ("upstream timed out", {"type": "error", "message": "upstream timed out"}),
    ],
)
def test_provider_errors(error: Any, expected: dict[str, Any]) -> None:
    failed = variant(GUARDRAIL, error=error)
    result = run([failed])
    assert result.events[0]["status"] == "error"
    assert result.events[0]["error"] == expected
    assert "gateway.guardrail_denied" not in result.events[0]["attributes"]


def test_gateway_cache_hit() -> None:
    metadata = {
        "rate_limit": BLOCKING["output"]["metadata"]["rate_limit"],
        "usage": {"prompt_tokens": 0, "generation_tokens": 0, "reasoning_tokens": 0},
        "cache": {"status": "Hit", "key": "c0ffee", "ttl": 300, "age": 12},
    }
    output = {"generations": BLOCKING["output"]["generations"], "metadata": metadata}
    hit = variant(BLOCKING, usage=None, model=None, duration=None, costs=None, output=output)
    result = run([hit])
    event = result.events[0]
    assert event["attributes"]["gateway.cache_hit"] is True
    assert event["attributes"]["otoroshi.cache.status"] == "Hit"
    assert event["attributes"]["otoroshi.cache.age"] == 12
    assert event["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "reasoning_output_tokens": 0,
        "total_tokens": 0,
    }
    assert event["cost"] == {"currency": "USD", "source": "unknown"}
    assert event["request_model"] == "gpt-4o-mini"  # from provider_details.options
    assert event["status"] == "ok"


def test_embedding_event() -> None:
    result = run(EMBEDDING)
    event = result.events[0]
    assert event["operation"] == "embeddings"
    assert "stream" not in event
    assert event["request_model"] == event["response_model"] == "text-embedding-3-small"
    assert event["usage"] == {"input_tokens": 2, "total_tokens": 2}
    assert event["cost"]["total"] == 0.00000004
    assert event["duration_ms"] == 212.0
    assert event["input_messages"][0]["parts"] == [{"type": "text", "content": "hello world"}]
    assert "output_messages" not in event  # vectors are not messages


def test_other_event_kinds_are_counted_and_skipped() -> None:
    gateway = {"@id": "1", "@timestamp": 1743169375292, "@type": "GatewayEvent", "ai": []}
    alert = {"@id": "2", "@timestamp": 1743169375292, "@type": "AlertEvent", "alert": "X"}
    mcp = {"@id": "3", "@timestamp": 1743169375292, "@type": "AuditEvent", "audit": "McpAudit"}
    result = run([gateway, BLOCKING, alert, mcp, gateway])
    assert len(result.events) == 1
    assert result.rejected == []
    assert result.skipped == {"GatewayEvent": 2, "AlertEvent": 1, "McpAudit": 1}


def test_projection_without_envelope_is_still_an_llm_event() -> None:
    projected = variant(BLOCKING, audit=None, **{"@type": None})
    assert len(run([projected]).events) == 1


def test_resent_events_keep_their_event_id() -> None:
    first = run(BATCH)
    # Otoroshi re-queues a failed batch: the same events come back, possibly in another order
    again = run([GUARDRAIL, BLOCKING])
    assert again.events[1]["event_id"] == first.events[0]["event_id"]
    assert again.events[0]["event_id"] == first.events[2]["event_id"]
    assert again.events[1]["trace_id"] == first.events[0]["trace_id"]
    duplicated = run([BLOCKING, BLOCKING])
    assert duplicated.events[0]["event_id"] == duplicated.events[1]["event_id"]
    assert len({e["event_id"] for e in first.events}) == 3


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(ndjson(BATCH), id="ndjson"),
        pytest.param(ndjson(BATCH, b"\n\n"), id="http-exporter-nd_stringify"),
        pytest.param(wire(BATCH).replace(b"},{", b"},\n{"), id="array-with-newlines"),
    ],
)
def test_ndjson_gives_the_same_events_as_the_array(body: bytes) -> None:
    assert normalize(body, CTX).events == run(BATCH).events


def test_single_object() -> None:
    result = run(STREAMING)
    assert result.events == run(BATCH).events[1:2]


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"[{", b'{"@id": "1"', b"42", b'"LLMUsageAudit"', b"{}\n{oops}"]
)
def test_malformed_body_raises_input_error(body: bytes) -> None:
    with pytest.raises(InputError):
        normalize(body, CTX)


def test_malformed_body_error_does_not_quote_secrets() -> None:
    body = wire(BATCH)[:-40]
    with pytest.raises(InputError) as caught:
        normalize(body, CTX)
    for secret in ("REDACT-ME", "clientSecret"):
        assert secret not in str(caught.value)


def test_one_unusable_event_rejects_only_that_event() -> None:
    no_id = variant(BLOCKING, **{"@id": None})
    bad_time = variant(BLOCKING, **{"@id": "1905616593920983999", "@timestamp": "yesterday"})
    huge_time = variant(BLOCKING, **{"@id": "1905616593920983998", "@timestamp": "1e999999999"})
    batch = [BLOCKING, "not an event", no_id, bad_time, huge_time, STREAMING]
    result = run(batch)
    assert [e["attributes"]["otoroshi.id"] for e in result.events] == [
        "1905616593920983819",
        "1905616600000000001",
    ]
    assert [(r.item, r.reason) for r in result.rejected] == [
        ("[1]", "expected an Otoroshi event object"),
        ("[2]", "LLMUsageAudit without @id: no stable event_id can be derived"),
        ("1905616593920983999", "@timestamp is missing or not epoch milliseconds"),
        ("1905616593920983998", "@timestamp is missing or not epoch milliseconds"),
    ]


def test_numeric_strings_and_minus_one_counts() -> None:
    odd = variant(
        BLOCKING,
        **{"@timestamp": "1743169375292", "@id": 1905616593920983819},
        duration="415",
        usage={"prompt_tokens": "11", "generation_tokens": -1, "reasoning_tokens": -1},
        rate_limit={"requests_limit": 100, "requests_remaining": -1},
    )
    event = run([odd]).events[0]
    assert event["event_id"] == stable_id("otoroshi", "1905616593920983819")
    assert event["start_time"] == "2025-03-28T13:42:54.877000000Z"
    assert event["usage"] == {"input_tokens": 11}  # -1: the provider did not say
    assert event["rate_limit"] == {"requests_limit": 100}


def test_provider_kind_uses_semconv_names() -> None:
    azure = variant(BLOCKING, provider_kind="azure-openai")
    event = run([azure]).events[0]
    assert (event["provider"], event["upstream"]) == ("azure.ai.openai", "azure.ai.openai")
    assert event["attributes"]["otoroshi.provider_kind"] == "azure-openai"


def test_costs_in_another_currency_are_not_passed_off_as_usd() -> None:
    costs = dict(BLOCKING["costs"], currency="euro")
    euro = variant(BLOCKING, costs=costs, output=dict(BLOCKING["output"], metadata={}))
    event = run([euro]).events[0]
    assert event["cost"] == {"currency": "USD", "source": "unknown"}
    assert event["attributes"]["otoroshi.costs.currency"] == "euro"
    assert event["attributes"]["otoroshi.costs.total_cost"] == 0.00001245


def test_impacts_budgets_and_consumer_rate_limit_kept_as_attributes() -> None:
    impacts = {
        "energy": {"value": {"min": 0.0001, "max": 0.0003, "avg": 0.0002}, "unit": "kWh"},
        "gwp": {"value": {"min": 0.00005, "max": 0.0001, "avg": 0.000075}, "unit": "kgCO2eq"},
        "warnings": [],
    }
    budgets = [{"budget_id": "budget_team", "consumption": {"remaining": {"dollars": 9.5}}}]
    consumer = {"max_tokens": 1000, "window_millis": 60000, "consumed_tokens": 29}
    rich = variant(BLOCKING, impacts=impacts, budgets=budgets, consumer_rate_limit=consumer)
    attributes = run([rich]).events[0]["attributes"]
    assert attributes["otoroshi.impacts.energy.value.avg"] == 0.0002
    assert attributes["otoroshi.impacts.gwp.unit"] == "kgCO2eq"
    assert attributes["otoroshi.budgets.0.budget_id"] == "budget_team"
    assert attributes["otoroshi.budgets.0.consumption.remaining.dollars"] == 9.5
    assert attributes["otoroshi.consumer_rate_limit.consumed_tokens"] == 29


def test_realistic_secrets_never_reach_an_event() -> None:
    provider_key = "sk-proj-4f9c2a71b8e04d6a9c3e5b7d1f2a8c6e"
    client_secret = "qk3vN8xZ2pL7mR4tW9yB6cF1hJ5sD0gA"
    user_token = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJl"
    leaky = copy.deepcopy(STREAMING)
    leaky["apikey"] = copy.deepcopy(BLOCKING["apikey"])
    leaky["apikey"]["clientSecret"] = client_secret
    leaky["apikey"]["rotation"] = {"enabled": True, "nextSecret": "n3xt-" + client_secret}
    leaky["apikey"]["metadata"] = {"team": "billing", "authorization": "Bearer abcdef123456"}
    leaky["user"]["token"] = user_token
    leaky["user"]["profile"] = {"access_token": user_token}
    leaky["provider_details"]["connection"] = {"base_url": "https://api.x", "token": provider_key}
    leaky["route"]["plugins"] = [{"config": {"apikey": client_secret}}]
    said = f"key {provider_key}, client {client_secret}, next n3xt-{client_secret}, {user_token}"
    leaky["error"] = {"error": {"message": f"Incorrect API key provided: {said}", "type": "auth"}}
    result = run([leaky], provider_key, client_secret, user_token)
    event = result.events[0]
    assert event["error"]["message"] == (
        "Incorrect API key provided: key [REDACTED], client [REDACTED], next [REDACTED], [REDACTED]"
    )
    assert event["attributes"]["otoroshi.apikey.metadata.team"] == "billing"
    assert "otoroshi.apikey.metadata.authorization" not in event["attributes"]


def test_secret_quoted_in_an_unusual_place_is_swept() -> None:
    token = "vault-less-provider-token-93ab"  # no recognisable shape: only the sweep catches it
    leaky = copy.deepcopy(GUARDRAIL)
    leaky["provider_details"]["connection"] = {"token": token}
    leaky["error"] = {"error": "bad_request", "error_description": f"token {token} refused"}
    result = run([leaky], token)
    assert result.events[0]["error"]["message"] == "token [REDACTED] refused"
