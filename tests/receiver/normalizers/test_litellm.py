"""LiteLLM generic_api callback: the current StandardLoggingPayload becomes LLMEvents.

The reconstructed example covers fields a proxy fills (keys, teams, rate limits); what LiteLLM
1.110.2 really posted from the SDK (``litellm-generic-api-<format>-captured.json``) covers the
rest. The legacy v1 payload has its own module, ``test_litellm_v1``.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from receiver.normalizers.base import InputError, Normalized
from receiver.normalizers.common import derived_trace_ids, key_hash, stable_id
from receiver.normalizers.litellm import normalize
from tests.conftest import fixture_json
from tests.receiver.normalizers.conftest import (
    CTX,
    RECEIVED_AT,
    assert_clean,
    bodies,
    checked,
    ndjson,
)

BATCH, _ = bodies("litellm-standard-logging-payload-example.json")
SUCCESS, FAILURE = BATCH
KEY_HASH = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
FORMATS = ("json_array", "ndjson", "single")


def captured_posts(fmt: str) -> list[dict[str, Any]]:
    return list(fixture_json(f"litellm-generic-api-{fmt}-captured.json")["posts"])


def payloads_in(post: dict[str, Any]) -> list[dict[str, Any]]:
    lines = post["body"].split("\n") if post["log_format"] == "ndjson" else [post["body"]]
    decoded = [orjson.loads(line) for line in lines if line]
    return decoded[0] if post["log_format"] == "json_array" else decoded


def captured(fmt: str, scenario: str) -> dict[str, Any]:
    """The payload LiteLLM posted for one conformance scenario (prompt tagged ``:scenario]``)."""
    every = [p for post in captured_posts(fmt) for p in payloads_in(post)]
    (payload,) = [p for p in every if f":{scenario}]" in orjson.dumps(p["messages"]).decode()]
    return payload


def run(inputs: Any, *secrets: str) -> Normalized:
    """The normalizer on ``inputs`` as sent; every result is checked for schema and secrets."""
    return checked(normalize, inputs, secrets)


def variant(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def test_streaming_success_field_by_field() -> None:
    result = run(BATCH)
    assert (len(result.events), result.rejected, result.skipped) == (2, [], {})
    event = result.events[0]
    assert event["event_id"] == stable_id("litellm", "4b1f6a2c-0d9e-4c7a-8b3f-1e2d3c4b5a69")
    assert event["received_at"] == RECEIVED_AT
    assert event["source"] == {"format": "litellm", "gateway": "litellm", "test": False}
    # LiteLLM's trace_id is a UUID, i.e. 32 hex digits: the retries of one request share it
    assert event["trace_id"] == "9f0d3c6e6a434f1b9d0e2c1a5b7e8f90"
    assert event["span_id"] == derived_trace_ids(event["event_id"])[1]
    assert "parent_span_id" not in event
    assert event["start_time"] == "2025-01-24T09:20:46.847371000Z"
    assert event["end_time"] == "2025-01-24T09:20:46.851954000Z"
    assert event["duration_ms"] == pytest.approx(4.583)
    assert event["ttft_ms"] == pytest.approx(1.63)
    assert (event["operation"], event["stream"]) == ("chat", True)
    assert (event["provider"], event["upstream"]) == ("openai", "openai")
    assert (event["request_model"], event["response_model"]) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert event["usage"] == {
        "input_tokens": 10,
        "output_tokens": 20,
        "total_tokens": 30,
        "cache_read_input_tokens": 0,
        "reasoning_output_tokens": 0,
    }
    assert event["cost"] == {
        "total": 0.000225,
        "input": 0.000025,
        "output": 0.0002,
        "currency": "USD",
        "source": "gateway",
    }
    assert event["status"] == "ok"
    assert "error" not in event
    assert event["rate_limit"] == {
        "requests_limit": 10000,
        "requests_remaining": 9999,
        "tokens_limit": 30000000,
        "tokens_remaining": 29999970,
    }
    # LiteLLM's sha256(key) cut the way key_hash() cuts it: one key, one hash, any gateway
    assert event["api_key"] == {"name": "billing-service-key", "hash": "sha256:" + KEY_HASH[:16]}
    assert event["user_id"] == "customer-981"
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Hello, world!"}]}
    ]
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}
    ]
    assert event["finish_reasons"] == ["stop"]
    attributes = event["attributes"]
    assert attributes["litellm.team_id"] == "team-7f3a"
    assert attributes["litellm.team_alias"] == "billing"
    assert attributes["litellm.user_id"] == "internal-user-42"
    assert attributes["litellm.end_user_id"] == "customer-981"
    assert attributes["litellm.model_group"] == "gpt-4o"
    assert attributes["litellm.call_type"] == "acompletion"
    assert attributes["litellm.requester_metadata.feature"] == "invoice-summary"
    assert attributes["litellm.request_tags"] == ["prod"]
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.response.id"] == "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f"
    assert attributes["server.address"] == "api.openai.com"
    assert attributes["client.address"] == "10.0.0.4"
    assert attributes["litellm.guardrail_status"] == "not_run"
    assert "gateway.cache_hit" not in attributes  # cache_hit null: the cache was not consulted
    assert not any("hash" in key for key in attributes)


def test_failure_field_by_field() -> None:
    event = run(BATCH).events[1]
    assert event["event_id"] == stable_id("litellm", "0e6f2b8a-6c1d-4f0e-9a7b-3d2c1b0a9f88")
    assert event["status"] == "error"
    assert event["error"] == {
        "type": "RateLimitError",
        "message": "AnthropicException - rate_limit_error",
        "http_status": 429,
    }
    assert (event["provider"], event["upstream"]) == ("anthropic", "anthropic")
    assert event["request_model"] == "claude-sonnet-4-20250514"
    assert "response_model" not in event
    assert event["stream"] is False
    assert "ttft_ms" not in event
    assert event["duration_ms"] == pytest.approx(412.876)
    # LiteLLM's 0 tokens and $0 for a call that got no answer are placeholders, not figures
    assert event["usage"] == {}
    assert event["cost"] == {"currency": "USD", "source": "unknown"}
    assert event["user_id"] == "internal-user-42"  # no end user: the key's owner
    assert event["attributes"]["litellm.error.rate_limit_type"] == "tokens"
    assert event["attributes"]["litellm.model_group"] == "claude-sonnet"
    assert event["attributes"]["server.address"] == "api.anthropic.com"
    assert not any("traceback" in key for key in event["attributes"])


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param("1737710446.847371", "1737710446.851954", id="numeric-strings"),
        pytest.param("2025-01-24 09:20:46.847371", "2025-01-24 09:20:46.851954", id="naive"),
        pytest.param("2025-01-24T09:20:46.847371Z", "2025-01-24T10:20:46.851954+01:00", id="iso"),
    ],
)
def test_time_variants(start: str, end: str) -> None:
    timed = variant(SUCCESS, startTime=start, endTime=end, completionStartTime=None)
    event = run([timed]).events[0]
    assert event["start_time"] == "2025-01-24T09:20:46.847371000Z"
    assert event["end_time"] == "2025-01-24T09:20:46.851954000Z"
    assert event["duration_ms"] == pytest.approx(4.583)
    assert "ttft_ms" not in event


def test_call_id_generation_of_field_names() -> None:
    renamed = variant(SUCCESS, litellm_call_id=None, call_id=SUCCESS["litellm_call_id"])
    assert run([renamed]).events == run([SUCCESS]).events[:1]


def test_duplicates_keep_their_event_id() -> None:
    events = run([SUCCESS, FAILURE, SUCCESS]).events
    assert events[0]["event_id"] == events[2]["event_id"] != events[1]["event_id"]


def test_cached_reasoning_and_cache_creation_tokens_from_the_usage_object() -> None:
    response = copy.deepcopy(SUCCESS["response"])
    response["usage"].update(
        prompt_tokens_details={"cached_tokens": 6},
        completion_tokens_details={"reasoning_tokens": 12},
        cache_creation_input_tokens=3,
    )
    cached = variant(SUCCESS, response=response, metadata={"usage_object": None})
    usage = run([cached]).events[0]["usage"]
    assert usage == {
        "input_tokens": 10,
        "output_tokens": 20,
        "total_tokens": 30,
        "cache_read_input_tokens": 6,
        "cache_write_input_tokens": 3,
        "reasoning_output_tokens": 12,
    }


def test_response_cache_hit() -> None:
    hit = variant(SUCCESS, cache_hit=True, response_cost=0.0, saved_cache_cost=0.000225)
    hit["cost_breakdown"] = None
    event = run([hit]).events[0]
    assert event["attributes"]["gateway.cache_hit"] is True
    assert event["attributes"]["litellm.saved_cache_cost"] == 0.000225
    assert event["cost"] == {"total": 0.0, "currency": "USD", "source": "gateway"}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"response_cost": None, "cost_breakdown": None}, id="no-figure"),
        pytest.param({"response_cost_failure_debug_info": {"error_str": "no price"}}, id="debug"),
    ],
)
def test_cost_without_a_gateway_figure_is_unknown(changes: dict[str, Any]) -> None:
    unpriced = variant(SUCCESS, **changes)
    unpriced["hidden_params"]["response_cost"] = None
    event = run([unpriced]).events[0]
    assert event["cost"] == {"currency": "USD", "source": "unknown"}


def test_upstream_from_api_base_host_when_no_provider() -> None:
    routed = variant(SUCCESS, custom_llm_provider=None, api_base="https://vllm.internal:8000/v1")
    routed["hidden_params"]["api_base"] = None
    event = run([routed]).events[0]
    assert "provider" not in event
    assert event["upstream"] == "vllm.internal"
    assert event["attributes"]["server.address"] == "vllm.internal"


def test_provider_uses_semconv_names() -> None:
    event = run([variant(SUCCESS, custom_llm_provider="vertex_ai")]).events[0]
    assert (event["provider"], event["upstream"]) == ("gcp.vertex_ai", "gcp.vertex_ai")


def test_callers_traceparent_wins() -> None:
    metadata = copy.deepcopy(SUCCESS["metadata"])
    metadata["requester_metadata"]["traceparent"] = (
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    )
    event = run([variant(SUCCESS, metadata=metadata)]).events[0]
    assert event["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event["parent_span_id"] == "00f067aa0ba902b7"


def test_custom_trace_id_still_groups_a_request() -> None:
    first = variant(SUCCESS, trace_id="session-42")
    second = variant(FAILURE, trace_id="session-42")
    events = run([first, second]).events
    assert events[0]["trace_id"] == events[1]["trace_id"]
    assert events[0]["span_id"] != events[1]["span_id"]


def test_guardrail_intervention_failure() -> None:
    blocked = variant(
        FAILURE,
        status_fields={"llm_api_status": "failure", "guardrail_status": "guardrail_intervened"},
        guardrail_information=[
            {
                "guardrail_name": "pii-block",
                "guardrail_mode": "pre_call",
                "guardrail_status": "guardrail_intervened",
                "guardrail_request": {"messages": "my card is 4111..."},
            }
        ],
        error_information={"error_class": "GuardrailRaisedException", "error_code": "400"},
    )
    event = run([blocked]).events[0]
    assert event["error"]["type"] == "GuardrailRaisedException"
    assert event["error"]["http_status"] == 400
    assert event["attributes"]["gateway.guardrail_denied"] is True
    assert event["attributes"]["litellm.guardrails.0.guardrail_name"] == "pii-block"
    assert "4111" not in str(event["attributes"])  # guardrail bodies are content


def test_responses_api_and_anthropic_messages_outputs() -> None:
    responses = variant(
        SUCCESS,
        litellm_call_id="r-1",
        call_type="aresponses",
        response={
            "id": "resp_1",
            "model": "gpt-4o",
            "output": [
                {"type": "reasoning", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "hello"}],
                },
            ],
        },
    )
    anthropic = variant(
        SUCCESS,
        litellm_call_id="a-1",
        call_type="anthropic_messages",
        messages={"role": "user", "content": "hi"},
        response={
            "role": "assistant",
            "content": [{"type": "text", "text": "hey"}],
            "stop_reason": "end_turn",
        },
    )
    first, second = run([responses, anthropic]).events
    assert first["operation"] == second["operation"] == "chat"
    assert first["output_messages"][0]["parts"] == [{"type": "text", "content": "hello"}]
    assert second["output_messages"][0]["parts"] == [{"type": "text", "content": "hey"}]
    assert second["finish_reasons"] == ["end_turn"]
    assert second["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    ]


def test_embedding_call() -> None:
    embedding = variant(
        SUCCESS,
        call_type="aembedding",
        stream=False,
        messages="hello world",
        response={
            "object": "list",
            "data": [{"embedding": [0.1]}],
            "model": "text-embedding-3-small",
        },
    )
    event = run([embedding]).events[0]
    assert event["operation"] == "embeddings"
    assert "output_messages" not in event


@pytest.mark.parametrize(
    "body",
    [pytest.param(ndjson(BATCH), id="ndjson"), pytest.param(ndjson(BATCH, b"\r\n"), id="crlf")],
)
def test_ndjson_gives_the_same_events_as_the_array(body: bytes) -> None:
    assert normalize(body, CTX).events == run(BATCH).events


def test_single_object() -> None:
    assert run(FAILURE).events == run(BATCH).events[1:]


@pytest.mark.parametrize("body", [b"", b"[", b"null", b"{'id': 'python repr'}", b"{}\n[1,"])
def test_malformed_body_raises_input_error(body: bytes) -> None:
    with pytest.raises(InputError):
        normalize(body, CTX)


def test_one_unusable_payload_rejects_only_that_payload() -> None:
    no_ids = variant(SUCCESS, id=None, litellm_call_id=None, trace_id=None)
    no_times = variant(FAILURE, litellm_call_id="c-3", startTime=None, endTime="tomorrow")
    batch = [SUCCESS, 5, no_ids, no_times, FAILURE]
    result = run(batch)
    assert [e["attributes"]["litellm.call_id"] for e in result.events] == [
        SUCCESS["litellm_call_id"],
        FAILURE["litellm_call_id"],
    ]
    assert [(r.item, r.reason) for r in result.rejected] == [
        ("[1]", "expected a StandardLoggingPayload object"),
        ("[2]", "payload without litellm_call_id, call_id or id"),
        ("c-3", "startTime and endTime are both missing or unreadable"),
    ]


def test_secrets_never_reach_an_event() -> None:
    raw_key = "sk-live-9a8b7c6d5e4f3a2b1c0d"
    metadata = copy.deepcopy(SUCCESS["metadata"])
    metadata["user_api_key_hash"] = raw_key  # an old proxy that did not hash the key
    metadata["requester_custom_headers"] = {"x-api-key": raw_key, "x-request-source": "batch"}
    metadata["headers"] = {"authorization": f"Bearer {raw_key}", "x-trace": "t"}
    leaky = variant(
        FAILURE,
        metadata=metadata,
        model_parameters={"api_key": raw_key, "max_tokens": 5},
        error_str=f"litellm.AuthenticationError: Incorrect API key provided: {raw_key}",
        error_information={
            "error_class": "AuthenticationError",
            "error_code": "401",
            "error_message": f"invalid x-api-key: {raw_key}",
            "traceback": f"  File 'x.py', api_key={raw_key}",
        },
    )
    result = run([leaky], raw_key)
    event = result.events[0]
    assert event["api_key"]["hash"] == key_hash(raw_key)
    assert event["error"]["http_status"] == 401
    assert "[REDACTED]" in event["error"]["message"]
    assert event["attributes"]["litellm.requester_custom_headers.x-request-source"] == "batch"
    assert event["attributes"]["gen_ai.request.max_tokens"] == 5


def test_rate_limit_header_variants_and_exhaustion() -> None:
    headers = {
        "llm_provider-x-ratelimit-limit-requests": "500",
        "llm_provider-x-ratelimit-remaining-requests": "0",
        "x_ratelimit_reset_requests": "12ms",
        "x_ratelimit_remaining_tokens": -1,
    }
    limited = copy.deepcopy(SUCCESS)
    limited["hidden_params"]["additional_headers"] = headers
    event = run([limited]).events[0]
    assert event["rate_limit"] == {"requests_limit": 500, "requests_remaining": 0}
    assert event["attributes"]["litellm.ratelimit.reset_requests"] == "12ms"


# -- what LiteLLM 1.110.2 really posted ---------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_captured_posts_give_one_event_per_payload(fmt: str) -> None:
    for post in captured_posts(fmt):
        result = normalize(post["body"].encode(), CTX)
        assert_clean(result, payloads_in(post))
        assert (len(result.events), result.rejected) == (len(payloads_in(post)), [])


def test_session_id_sent_at_the_top_level() -> None:
    # with litellm.request_correlation_in_logs (the ndjson capture) LiteLLM fills session_id
    chat = captured("ndjson", "chat")
    assert chat["session_id"]
    assert run([chat]).events[0]["session_id"] == chat["session_id"]


def test_session_id_sent_as_the_trace_id() -> None:
    # by default LiteLLM leaves session_id empty and sends the caller's session as trace_id
    chat, tool = captured("json_array", "chat"), captured("json_array", "tool")
    assert chat["session_id"] == tool["session_id"] == ""
    chat_event, tool_event = run([chat, tool]).events
    assert chat_event["session_id"] == chat["trace_id"]
    assert "session_id" not in tool_event  # a trace id LiteLLM generated is no session
    assert tool_event["trace_id"] == tool["trace_id"].replace("-", "")


def test_sdk_callers_user_is_the_user_id() -> None:
    # the SDK keeps a call's user= only among the model parameters
    chat = captured("json_array", "chat")
    assert chat["end_user"] is None
    assert run([chat]).events[0]["user_id"] == chat["model_parameters"]["user"]
    # a proxy's end user still comes first; the key's owner only when neither is known
    end_user = run([variant(chat, end_user="proxy-end-user")]).events[0]
    assert end_user["user_id"] == "proxy-end-user"
    owned = variant(chat, model_parameters={"temperature": 0.2})
    owned["metadata"]["user_api_key_user_id"] = "key-owner"
    assert run([owned]).events[0]["user_id"] == "key-owner"


def test_failed_call_has_no_usage_and_an_unknown_cost() -> None:
    failed = captured("json_array", "error")
    assert (failed["prompt_tokens"], failed["response_cost"]) == (0, 0.0)  # LiteLLM's placeholders
    event = run([failed]).events[0]
    assert event["status"] == "error"
    assert event["usage"] == {}
    assert event["cost"] == {"currency": "USD", "source": "unknown"}
    # error_code holds OpenAI's own code: the status is normalized_error's ("400_INVALID_REQUEST")
    info = failed["error_information"]
    assert event["error"] == {
        "type": info["error_class"],
        "message": info["error_message"],
        "http_status": 400,
    }
    assert event["attributes"]["litellm.error.code"] == info["error_code"] == "model_not_found"
    assert "response_model" not in event and "output_messages" not in event


def test_failed_call_keeps_the_usage_and_cost_it_did_report() -> None:
    failed = variant(captured("json_array", "error"), prompt_tokens=12, total_tokens=12)
    failed["response_cost"] = 0.00001
    event = run([failed]).events[0]
    assert event["usage"] == {"input_tokens": 12, "output_tokens": 0, "total_tokens": 12}
    assert event["cost"] == {"total": 0.00001, "currency": "USD", "source": "gateway"}
