"""The Datadog LLM Observability sink against real and scripted peers on loopback.

Agent mode goes to ddapm-test-agent, Datadog's own test agent, and is read back from it. Agentless
mode goes to a scripted intake that enforces the documented v1 schema (``datadog_intake``). The key
probe goes through datadog-api-client to a scripted ``/api/v1/validate``.
"""

from __future__ import annotations

import copy
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from foundation.settings import EnvReader
from foundation.times import rfc3339_ns
from schemas import LLMEvent
from sinks.base import (
    Batch,
    MisconfiguredError,
    PayloadTooLargeError,
    PermanentError,
    RetryableError,
    SinkError,
)
from sinks.datadog import SPEC, DatadogSink
from sinks.datadog_config import DatadogSinkConfig
from sinks.datadog_format import DROPPED, TRACER_VERSION
from sinks.otlp import OtlpSink
from tests.conftest import fixture_json
from tests.helpers.ports import free_port
from tests.helpers.scripted_server import Answer, Received, ScriptedServer, json_error
from tests.helpers.test_agent import TestAgent
from tests.helpers.waiting import eventually
from tests.sinks import datadog_intake

API_KEY = "0123456789abcdef0123456789abcdef"
ML_APP = "support-bot"
SECOND = 1_000_000_000


# --- realistic events -------------------------------------------------------------------------


def openrouter_chat(start_ns: int) -> LLMEvent:
    """An OpenRouter Broadcast chat: cached prompt, gateway cost, session, no content (privacy)."""
    return {
        "schema": "llm-event/1",
        "event_id": "5f0c2e8a7b9d4c31a2e6f8b0c4d2a917",
        "received_at": rfc3339_ns(start_ns + 2 * SECOND),
        "source": {"format": "otlp-json", "gateway": "openrouter", "test": False, "tenant": "acme"},
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "53995c3f42cd8ad8",
        "start_time": rfc3339_ns(start_ns),
        "end_time": rfc3339_ns(start_ns + 1_834_000_123),
        "duration_ms": 1834.000123,
        "ttft_ms": 412.0,
        "operation": "chat",
        "provider": "openai",
        "upstream": "OpenAI",
        "request_model": "openai/gpt-4o-mini",
        "response_model": "openai/gpt-4o-mini-2024-07-18",
        "stream": True,
        "usage": {
            "input_tokens": 1200,
            "output_tokens": 85,
            "total_tokens": 1285,
            "cache_read_input_tokens": 1024,
            "reasoning_output_tokens": 0,
        },
        "cost": {
            "total": 0.000231,
            "input": 0.00018,
            "output": 0.000051,
            "currency": "USD",
            "source": "gateway",
        },
        "status": "ok",
        "finish_reasons": ["stop"],
        "user_id": "user-8812",
        "session_id": "conv-7f3a9c",
        "api_key": {"name": "prod-backend", "hash": "sha256:9f86d081884c7d65"},
        "attributes": {
            "gen_ai.request.temperature": "0.2",
            "gen_ai.request.max_tokens": "256",
            "openrouter.provider_name": "OpenAI",
        },
    }


def litellm_rate_limited(start_ns: int) -> LLMEvent:
    """A LiteLLM call the upstream refused with 429: no usage, no cost."""
    return {
        "schema": "llm-event/1",
        "event_id": "litellm-9b8f3c2d",
        "received_at": rfc3339_ns(start_ns + SECOND),
        "source": {"format": "litellm", "gateway": "litellm", "test": False},
        "trace_id": "a3ce929d0e0e47364bf92f3577b34da6",
        "span_id": "b7ad6b7169203331",
        "start_time": rfc3339_ns(start_ns),
        "end_time": rfc3339_ns(start_ns + 312_500_000),
        "duration_ms": 312.5,
        "operation": "chat",
        "provider": "anthropic",
        "request_model": "claude-3-5-sonnet-20241022",
        "usage": {},
        "cost": {"currency": "USD", "source": "unknown"},
        "status": "error",
        "error": {
            "type": "RateLimitError",
            "message": "litellm.RateLimitError: AnthropicException - rate_limit_error",
            "http_status": 429,
        },
    }


def otoroshi_with_content(start_ns: int, text: str = "What is the weather in Paris?") -> LLMEvent:
    """An Otoroshi audit event with prompt and completion, an image part and a tool call."""
    return {
        "schema": "llm-event/1",
        "event_id": "otoroshi-1f2e3d4c",
        "received_at": rfc3339_ns(start_ns + SECOND),
        "source": {"format": "otoroshi", "gateway": "otoroshi", "test": True, "tenant": "team-b"},
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "e457b5a2e4d86bd1",
        "start_time": rfc3339_ns(start_ns),
        "end_time": rfc3339_ns(start_ns + 950_000_000),
        "operation": "chat",
        "provider": "mistral",
        "request_model": "mistral-large-latest",
        "usage": {"input_tokens": 31, "output_tokens": 12},
        "cost": {"currency": "USD", "source": "unknown"},
        "status": "ok",
        "input_messages": [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {
                "role": "user",
                "parts": [
                    {"type": "text", "content": text},
                    {"type": "image", "content": "https://example.invalid/paris.png"},
                ],
            },
        ],
        "output_messages": [
            {
                "role": "assistant",
                "parts": [
                    {"type": "text", "content": "Let me check."},
                    {
                        "type": "tool_call",
                        "id": "call_1",
                        "name": "get_weather",
                        "arguments": {"city": "Paris"},
                    },
                ],
            }
        ],
    }


def recent() -> int:
    return time.time_ns() - 60 * SECOND


# --- helpers ----------------------------------------------------------------------------------


def read_config(environ: dict[str, str]) -> tuple[DatadogSinkConfig, list[str]]:
    """As the relay reads it: the dispatch settings (and their timeout) first."""
    env = EnvReader(environ)
    config = DatadogSinkConfig.from_env(env, Path("data"), SPEC.dispatch_settings(env))
    return config, env.problems


def make_config(**environ: str) -> DatadogSinkConfig:
    config, problems = read_config({"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": ML_APP, **environ})
    assert problems == []
    return config


Started = Callable[[DatadogSinkConfig], Awaitable[DatadogSink]]


@pytest.fixture
async def sinks() -> AsyncIterator[Started]:
    """Builds and starts sinks as the relay does; closes them after the test."""
    built: list[DatadogSink] = []

    async def build(config: DatadogSinkConfig) -> DatadogSink:
        built.append(DatadogSink(config))
        await built[-1].start()
        return built[-1]

    yield build
    for sink in built:
        await sink.close()


@pytest.fixture
def intake(scripted_server: ScriptedServer) -> ScriptedServer:
    return datadog_intake.install(scripted_server, API_KEY)


def agentless(server: ScriptedServer, **environ: str) -> DatadogSinkConfig:
    return make_config(RELAY_DATADOG_URL=server.url, DD_SITE="datadoghq.eu", **environ)


def sent_body(server: ScriptedServer) -> Any:
    (request,) = server.requests
    return orjson.loads(request.body)


# --- agent mode, against ddapm-test-agent ----------------------------------------------------


def expected_chat_span_v2(start_ns: int) -> dict[str, Any]:
    return {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "67667974448284343",
        "parent_id": "undefined",
        "name": "chat openai/gpt-4o-mini",
        "start_ns": start_ns,
        "duration": 1_834_000_123,
        "status": "ok",
        "meta": {
            "span": {"kind": "llm"},
            "model_name": "openai/gpt-4o-mini-2024-07-18",
            "model_provider": "openai",
            "metadata": {
                "temperature": 0.2,
                "max_tokens": 256,
                "operation": "chat",
                "request_model": "openai/gpt-4o-mini",
                "response_model": "openai/gpt-4o-mini-2024-07-18",
                "gateway": "openrouter",
                "upstream": "OpenAI",
                "stream": True,
                "finish_reasons": "stop",
                "cost_usd": 0.000231,
                "cost_input_usd": 0.00018,
                "cost_output_usd": 0.000051,
                "cost_source": "gateway",
                "user_id": "user-8812",
                "api_key_name": "prod-backend",
                "event_id": "5f0c2e8a7b9d4c31a2e6f8b0c4d2a917",
                "otel_span_id": "00f067aa0ba902b7",
                "otel_parent_span_id": "53995c3f42cd8ad8",
            },
        },
        "metrics": {
            "input_tokens": 1200,
            "output_tokens": 85,
            "total_tokens": 1285,
            "cache_read_input_tokens": 1024,
            "reasoning_output_tokens": 0,
            "time_to_first_token": 0.412,
            # the gateway's bill, under ddtrace's cost keys (USD)
            "total_cost": 0.000231,
            "input_cost": 0.00018,
            "output_cost": 0.000051,
        },
        "tags": sorted(
            [
                "ml_app:support-bot",
                "env:staging",
                "version:2.3.1",
                "team:ml-platform",
                "service:openrouter",
                "gateway:openrouter",
                "provider:openai",
                "upstream:OpenAI",
                "request_model:openai/gpt-4o-mini",
                "response_model:openai/gpt-4o-mini-2024-07-18",
                "operation:chat",
                "tenant:acme",
                "session_id:conv-7f3a9c",
                "error:0",
            ]
        ),
        "session_id": "conv-7f3a9c",
        "_dd": {
            "apm_trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "sample_rate": "1",
            "sampling_decision": "1",
            "span_id": "67667974448284343",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        },
    }


async def test_agent_mode_posts_the_tracer_format_to_the_evp_proxy(
    test_agent: TestAgent, sinks: Started
) -> None:
    token = test_agent.new_session()
    config = make_config(
        RELAY_DATADOG_MODE="agent",
        DD_AGENT_URL=test_agent.apm_url,
        RELAY_DATADOG_HEADERS=f"X-Datadog-Test-Session-Token={token}",
        DD_ENV="staging",
        DD_VERSION="2.3.1",
        DD_TAGS="team:ml-platform",
    )
    sink = await sinks(config)
    start = recent()
    events = [openrouter_chat(start), litellm_rate_limited(start), otoroshi_with_content(start)]

    assert await sink.send(Batch.of(events)) is None

    (stored,) = await eventually(lambda: test_agent.requests(token), message="the agent's copy")
    assert stored["method"] == "POST"
    assert stored["url"].endswith("/evp_proxy/v2/api/v2/llmobs")
    headers = {k.lower(): v for k, v in stored["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-datadog-evp-subdomain"] == "llmobs-intake"
    assert headers["user-agent"].startswith("llm-broadcast-relay/")
    assert "dd-api-key" not in headers  # the Agent adds its own key

    envelopes = orjson.loads(stored["body"])
    assert [len(e["spans"]) for e in envelopes] == [1, 1, 1]  # one span per envelope, as ddtrace
    for envelope in envelopes:
        assert {k: v for k, v in envelope.items() if k != "spans"} == {
            "_dd.stage": "raw",
            "_dd.tracer_version": TRACER_VERSION,
            "event_type": "span",
        }
    chat, failed, with_content = (e["spans"][0] for e in envelopes)
    assert chat == expected_chat_span_v2(start)

    assert failed["status"] == "error"
    assert failed["duration"] == 312_500_000
    assert failed["meta"]["error"] == {
        "type": "RateLimitError",
        "message": "litellm.RateLimitError: AnthropicException - rate_limit_error",
        "stack": "",
    }
    assert failed["meta"]["model_name"] == "claude-3-5-sonnet-20241022"
    assert failed["meta"]["model_provider"] == "anthropic"
    assert failed["meta"]["metadata"]["http_status"] == 429
    assert failed["meta"]["metadata"]["cost_source"] == "unknown"
    assert "cost_usd" not in failed["meta"]["metadata"]  # unknown cost is never a silent 0
    assert failed["metrics"] == {}
    assert "error:1" in failed["tags"] and "error_type:RateLimitError" in failed["tags"]
    assert "session_id" not in failed
    assert "input" not in failed["meta"] and "output" not in failed["meta"]

    assert with_content["meta"]["input"] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the weather in Paris?\n[image]"},
        ]
    }
    assert with_content["meta"]["output"] == {
        "messages": [
            {
                "role": "assistant",
                "content": 'Let me check.\n[tool_call get_weather] {"city":"Paris"}',
            }
        ]
    }
    assert with_content["metrics"] == {"input_tokens": 31, "output_tokens": 12, "total_tokens": 43}
    assert "relay_test:true" in with_content["tags"] and "tenant:team-b" in with_content["tags"]


async def test_agent_mode_has_the_shape_ddtrace_sends(
    test_agent: TestAgent, sinks: Started
) -> None:
    """Field for field, what a real ddtrace 4.16 sent through the same agent path."""
    captured = fixture_json("datadog-llmobs-ddtrace-v2-captured.json")["body"]
    tracer_llm_span = captured[1]["spans"][0]
    token = test_agent.new_session()
    config = make_config(
        RELAY_DATADOG_MODE="agent",
        DD_AGENT_URL=test_agent.apm_url,
        RELAY_DATADOG_HEADERS=f"X-Datadog-Test-Session-Token={token}",
    )
    sink = await sinks(config)
    await sink.send(Batch.of([otoroshi_with_content(recent()) | {"session_id": "sess-42"}]))

    (stored,) = await eventually(lambda: test_agent.requests(token), message="the agent's copy")
    (envelope,) = orjson.loads(stored["body"])
    assert envelope.keys() == captured[1].keys()
    span = envelope["spans"][0]
    assert span.keys() == tracer_llm_span.keys()
    assert span["meta"].keys() == tracer_llm_span["meta"].keys()
    assert span["_dd"].keys() == tracer_llm_span["_dd"].keys()
    assert (
        span["meta"]["input"]["messages"][0].keys()
        == tracer_llm_span["meta"]["input"]["messages"][0].keys()
    )
    assert "ml_app:support-bot" in span["tags"] and span["tags"] == sorted(span["tags"])
    for key in ("trace_id", "span_id", "parent_id", "start_ns", "duration"):
        assert type(span[key]) is type(tracer_llm_span[key]), key


# --- agentless mode, against the strict scripted intake ---------------------------------------


async def test_agentless_body_passes_the_strict_intake(
    intake: ScriptedServer, sinks: Started
) -> None:
    sink = await sinks(agentless(intake, DD_ENV="prod", DD_SERVICE="chat-gateway"))
    start = recent()
    events = [openrouter_chat(start), litellm_rate_limited(start), otoroshi_with_content(start)]

    assert await sink.send(Batch.of(events)) is None

    (request,) = intake.requests
    assert request.method == "POST"
    assert request.path == "/api/intake/llm-obs/v1/trace/spans"
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    body = orjson.loads(request.body)
    attributes = body["data"]["attributes"]
    assert body["data"]["type"] == "span"
    assert attributes["ml_app"] == ML_APP
    assert attributes["tags"] == ["env:prod", "service:chat-gateway"]
    chat, failed, with_content = attributes["spans"]

    expected = expected_chat_span_v2(start)
    del expected["_dd"]
    meta = expected["meta"]
    del meta["span"], meta["model_name"], meta["model_provider"]
    expected["meta"] = {
        "kind": "llm",
        "metadata": meta["metadata"]
        | {"model_name": "openai/gpt-4o-mini-2024-07-18", "model_provider": "openai"},
    }
    expected["tags"] = [  # per-span tags; the service comes from DD_SERVICE, at body level
        "gateway:openrouter",
        "provider:openai",
        "upstream:OpenAI",
        "request_model:openai/gpt-4o-mini",
        "response_model:openai/gpt-4o-mini-2024-07-18",
        "operation:chat",
        "tenant:acme",
        "session_id:conv-7f3a9c",
        "error:0",
    ]
    assert chat == expected
    assert failed["meta"]["error"] == {
        "type": "RateLimitError",
        "message": "litellm.RateLimitError: AnthropicException - rate_limit_error",
    }
    assert failed["status"] == "error"
    assert with_content["meta"]["input"]["messages"][1] == {
        "role": "user",
        "content": "What is the weather in Paris?\n[image]",
    }


async def test_a_span_too_big_alone_is_truncated_with_a_marker(
    intake: ScriptedServer, sinks: Started
) -> None:
    huge = "The quick brown fox jumps over the lazy dog. " * 70_000  # 3.1 MB of prompt
    sink = await sinks(agentless(intake))
    await sink.send(Batch.of([otoroshi_with_content(recent(), text=huge)]))

    (request,) = intake.requests  # accepted by the strict intake: under its 1 MB span limit
    assert len(request.body) < 1_000_000
    (span,) = orjson.loads(request.body)["data"]["attributes"]["spans"]
    content = span["meta"]["input"]["messages"][1]["content"]
    assert content.startswith("The quick brown fox")
    assert "characters over Datadog's span size limit]" in content
    assert span["meta"]["input"]["messages"][0]["content"] == "Be brief."  # short ones stay whole
    assert span["meta"]["metadata"]["content_truncated"] is True
    assert span["metrics"]["input_tokens"] == 31  # everything but content survives


async def test_content_dropped_when_truncation_cannot_fit(
    intake: ScriptedServer, sinks: Started
) -> None:
    event = otoroshi_with_content(recent())
    event["input_messages"] = [
        {"role": "user", "parts": [{"type": "text", "content": "x" * 300}]}
    ] * 400
    sink = await sinks(agentless(intake, RELAY_DATADOG_MAX_SPAN_BYTES="8192"))
    await sink.send(Batch.of([event]))

    (span,) = sent_body(intake)["data"]["attributes"]["spans"]
    assert span["meta"]["input"] == {"value": DROPPED}
    assert span["meta"]["output"] == {"value": DROPPED}
    assert span["meta"]["metadata"]["content_truncated"] is True


async def test_odd_values_never_break_encoding(intake: ScriptedServer, sinks: Started) -> None:
    event = otoroshi_with_content(recent())
    event["attributes"] = {"gen_ai.request.seed": 2**70, "gen_ai.request.top_p": "nan"}
    event["output_messages"][0]["parts"][1]["arguments"] = {"big": 2**70}
    event["user_id"] = "000123"
    sink = await sinks(agentless(intake))
    # JSON holds no integer over 64 bits, so neither could the spool; the encoder copes anyway.
    await sink.send(Batch([event], [b"{}"]))

    (span,) = sent_body(intake)["data"]["attributes"]["spans"]
    metadata = span["meta"]["metadata"]
    assert (metadata["seed"], metadata["top_p"], metadata["user_id"]) == (
        str(2**70),
        "nan",
        "000123",
    )
    assert str(2**70) in span["meta"]["output"]["messages"][0]["content"]


async def test_a_table_cost_is_sent_and_says_so(intake: ScriptedServer, sinks: Started) -> None:
    """The relay's estimate (``cost.source = "table"``) goes out as the cost, like a gateway's,
    with ``cost_source`` and the table's version in the metadata to tell them apart."""
    event = otoroshi_with_content(recent())
    event["cost"] = {
        "total": 0.000174,
        "input": 0.000062,
        "output": 0.000112,
        "currency": "USD",
        "source": "table",
        "table": "genai-prices 0.2.3",
    }
    sink = await sinks(agentless(intake))
    await sink.send(Batch([event], [b"{}"]))

    (span,) = sent_body(intake)["data"]["attributes"]["spans"]
    metadata = span["meta"]["metadata"]
    assert (metadata["cost_source"], metadata["cost_table"]) == ("table", "genai-prices 0.2.3")
    assert metadata["cost_usd"] == 0.000174
    costs = {k: v for k, v in span["metrics"].items() if k.endswith("_cost")}
    assert costs == {"total_cost": 0.000174, "input_cost": 0.000062, "output_cost": 0.000112}


async def test_a_batch_over_the_payload_limit_is_refused_for_splitting(
    intake: ScriptedServer, sinks: Started
) -> None:
    sink = await sinks(agentless(intake, RELAY_DATADOG_MAX_PAYLOAD_BYTES="65536"))
    events = [otoroshi_with_content(recent(), text=f"{i} " + "y" * 30_000) for i in range(3)]

    with pytest.raises(PayloadTooLargeError, match="over the 65536-byte limit"):
        await sink.send(Batch.of(events))
    assert intake.requests == []

    for event in events:  # each half of a split fits
        await sink.send(Batch.of([event]))
    assert len(intake.requests) == 3


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("answer", "error_class", "message"),
    [
        (
            json_error(429, "Too many requests", **{"Retry-After": "7"}),
            RetryableError,
            "answered 429: Too many requests",
        ),
        (
            Answer(status=503, body=b"upstream connect error"),
            RetryableError,
            "answered 503: upstream connect error",
        ),
        (Answer(status=500), RetryableError, "answered 500"),
        (Answer(status=408), RetryableError, "answered 408"),
        (Answer(status=501), PermanentError, "answered 501"),
        (
            json_error(413, "Request entity too large"),
            PayloadTooLargeError,
            "answered 413: Request entity too large",
        ),
        (
            json_error(400, "spans[0].meta.kind: invalid value"),
            PermanentError,
            "answered 400: spans[0].meta.kind: invalid value",
        ),
        (
            json_error(403, "Forbidden"),
            MisconfiguredError,
            "answered 403: Forbidden; DD_API_KEY was rejected for site datadoghq.eu",
        ),
        (
            Answer(status=404, body=b"404 page not found"),
            MisconfiguredError,
            "check RELAY_DATADOG_URL and DD_SITE",
        ),
    ],
)
async def test_answers_are_classified(
    intake: ScriptedServer,
    sinks: Started,
    answer: Answer,
    error_class: type[SinkError],
    message: str,
) -> None:
    intake.answer_next(answer)
    sink = await sinks(agentless(intake))
    with pytest.raises(error_class) as raised:
        await sink.send(Batch.of([openrouter_chat(recent())]))

    assert message in str(raised.value)
    assert API_KEY not in str(raised.value)
    assert len(intake.requests) == 1
    if answer.status == 429:
        assert isinstance(raised.value, RetryableError) and raised.value.retry_after == 7.0
    if isinstance(raised.value, PermanentError):
        # Only bad data is bisected; a 5xx that is not retried refuses any batch alike.
        assert raised.value.isolate is (answer.status == 400)


async def test_retry_after_as_an_http_date(intake: ScriptedServer, sinks: Started) -> None:
    intake.answer_next(Answer(status=429, headers={"Retry-After": http_date(30)}))
    sink = await sinks(agentless(intake))
    with pytest.raises(RetryableError) as raised:
        await sink.send(Batch.of([openrouter_chat(recent())]))
    assert raised.value.retry_after is not None and 25 <= raised.value.retry_after <= 31


async def test_a_wrong_key_is_refused_by_the_intake_as_forbidden(
    intake: ScriptedServer, sinks: Started
) -> None:
    config = agentless(intake, DD_API_KEY="ffffffffffffffffffffffffffffffff")
    sink = await sinks(config)
    with pytest.raises(MisconfiguredError) as raised:
        await sink.send(Batch.of([openrouter_chat(recent())]))
    assert "DD_API_KEY" in str(raised.value) and "ffff" not in str(raised.value)


async def test_unreachable_intake_is_retryable(
    sinks: Started,
) -> None:
    port = free_port()  # nothing listens there
    config = make_config(RELAY_DATADOG_URL=f"http://127.0.0.1:{port}")
    sink = await sinks(config)
    with pytest.raises(RetryableError, match=f"Datadog: cannot reach 127.0.0.1:{port}: "):
        await sink.send(Batch.of([openrouter_chat(recent())]))


async def test_a_hanging_intake_times_out_as_retryable(
    intake: ScriptedServer, sinks: Started
) -> None:
    intake.hold()
    config = agentless(intake, RELAY_DATADOG_TIMEOUT="0.3")
    sink = await sinks(config)
    with pytest.raises(RetryableError, match=r"no answer within 0\.3s"):
        await sink.send(Batch.of([openrouter_chat(recent())]))


# --- the live probe ---------------------------------------------------------------------------


async def test_probe_accepts_a_valid_key(scripted_server: ScriptedServer, sinks: Started) -> None:
    scripted_server.answer_next(Answer(status=200, body=b'{"valid": true}'))
    sink = await sinks(agentless(scripted_server))
    result = await sink.probe()

    assert result.ok, result.message
    assert result.message.startswith("Datadog: API key valid for site datadoghq.eu")
    (request,) = scripted_server.requests
    assert (request.method, request.path) == ("GET", "/api/v1/validate")
    assert request.headers["DD-API-KEY"] == API_KEY


async def test_probe_reports_a_rejected_key(
    scripted_server: ScriptedServer, sinks: Started
) -> None:
    scripted_server.answer_next(json_error(403, "Forbidden"))
    sink = await sinks(agentless(scripted_server))
    result = await sink.probe()

    assert not result.ok
    assert result.message == "Datadog: API key rejected for site datadoghq.eu"


async def test_probe_says_what_a_send_would_of_other_answers(
    scripted_server: ScriptedServer, sinks: Started
) -> None:
    scripted_server.answer_next(Answer(status=404, body=b"404 page not found"))
    sink = await sinks(agentless(scripted_server))
    result = await sink.probe()
    assert not result.ok
    host = scripted_server.url.removeprefix("http://")
    assert result.message == (
        f"Datadog: {host} answered 404 to the key check: 404 page not found; "
        "check RELAY_DATADOG_URL and DD_SITE"
    )

    scripted_server.answer_next(Answer(status=404))
    agent = await sinks(make_config(RELAY_DATADOG_MODE="agent", DD_AGENT_URL=scripted_server.url))
    result = await agent.probe()
    assert result.message == (
        f"Datadog: agent at {scripted_server.url} answered 404 to /info; "
        "the agent has no EVP proxy for LLM Observability (check DD_AGENT_URL)"
    )


async def test_probe_reports_an_unreachable_host(
    sinks: Started,
) -> None:
    port = free_port()
    sink = await sinks(make_config(RELAY_DATADOG_URL=f"http://127.0.0.1:{port}"))
    result = await sink.probe()

    assert not result.ok
    assert result.message.startswith(f"Datadog: cannot reach 127.0.0.1:{port}: ")
    assert "Connection refused" in result.message


async def test_agent_probe_finds_the_evp_proxy(test_agent: TestAgent, sinks: Started) -> None:
    config = make_config(RELAY_DATADOG_MODE="agent", DD_AGENT_URL=test_agent.apm_url)
    sink = await sinks(config)
    result = await sink.probe()
    assert result.ok, result.message
    assert result.message.startswith(f"Datadog: agent at {test_agent.apm_url} reachable")


async def test_agent_probe_without_evp_proxy_or_agent(
    scripted_server: ScriptedServer, sinks: Started
) -> None:
    scripted_server.answer_next(
        Answer(status=200, body=b'{"version": "7.30.0", "endpoints": ["/v0.4/traces"]}')
    )
    config = make_config(RELAY_DATADOG_MODE="agent", DD_AGENT_URL=scripted_server.url)
    sink = await sinks(config)
    result = await sink.probe()
    assert not result.ok and "does not list /evp_proxy/v2/" in result.message
    assert scripted_server.requests[0].path == "/info"

    port = free_port()
    gone = make_config(RELAY_DATADOG_MODE="agent", DD_AGENT_URL=f"http://127.0.0.1:{port}")
    sink = await sinks(gone)
    result = await sink.probe()
    assert not result.ok and result.message.startswith(f"Datadog: cannot reach 127.0.0.1:{port}: ")


# --- configuration ----------------------------------------------------------------------------


def test_default_config_is_valid_and_masks_the_key() -> None:
    config, problems = read_config({"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": ML_APP})
    assert problems == []
    assert config.mode == "agentless" and config.site == "datadoghq.com"
    assert config.intake_url == "https://api.datadoghq.com/api/intake/llm-obs/v1/trace/spans"
    described = config.describe()
    assert described["api_key"] == "***"
    assert API_KEY not in repr(described)


@pytest.mark.parametrize("site", ["ddog-gov.com", "us2.ddog-gov.com"])
def test_gov_sites_are_refused(site: str) -> None:
    _, problems = read_config({"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": ML_APP, "DD_SITE": site})
    (problem,) = problems
    assert problem.startswith(
        "DD_SITE: Datadog LLM Observability is not available on the government site"
    )


@pytest.mark.parametrize(
    ("site", "fragment"),
    [
        ("datadoghq.co", "unknown Datadog site"),
        ("https://app.datadoghq.eu", "the site parameter alone"),
    ],
)
def test_bad_sites_are_refused(site: str, fragment: str) -> None:
    _, problems = read_config({"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": ML_APP, "DD_SITE": site})
    assert len(problems) == 1 and fragment in problems[0]


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Support Bot", "support_bot"),
        ("support__bot", "support_bot"),
        ("support-bot_", "support-bot"),
        ("a" * 194, "a" * 193),
        ("bot@acme", "bot_acme"),
    ],
)
def test_bad_ml_app_names_are_refused(name: str, suggestion: str) -> None:
    _, problems = read_config({"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": name})
    (problem,) = problems
    assert problem.startswith("DD_LLMOBS_ML_APP: ") and "naming rules" in problem
    assert f"e.g. {suggestion!r}" in problem


@pytest.mark.parametrize("name", ["support-bot", "team/app:v2.1", "café_bot", "a" * 193])
def test_good_ml_app_names_are_accepted(name: str) -> None:
    _, problems = read_config({"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": name})
    assert problems == []


def test_missing_settings_are_all_reported() -> None:
    _, problems = read_config({"DD_SITE": "ddog-gov.com"})
    assert [p.split(":")[0] for p in problems] == ["DD_SITE", "DD_API_KEY", "DD_LLMOBS_ML_APP"]


def test_agent_mode_needs_no_key() -> None:
    config, problems = read_config({"RELAY_DATADOG_MODE": "agent", "DD_LLMOBS_ML_APP": ML_APP})
    assert problems == []
    assert config.intake_url == "http://localhost:8126/evp_proxy/v2/api/v2/llmobs"


def test_custom_url_allows_an_unlisted_site() -> None:
    config = make_config(
        DD_SITE="xy9.datadoghq.com", RELAY_DATADOG_URL="https://dd-proxy.internal:8443/"
    )
    assert config.intake_url == "https://dd-proxy.internal:8443/api/intake/llm-obs/v1/trace/spans"


def test_spec_tells_the_dispatcher_the_intake_limits() -> None:
    assert SPEC.name == "datadog" and isinstance(SPEC.build(make_config()), DatadogSink)
    assert SPEC.defaults.max_event_age == 23 * 3600  # the intake takes spans up to 24 h old
    assert SPEC.defaults.batch_max_bytes < make_config().max_payload_bytes
    env = EnvReader({"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": ML_APP})
    config = SPEC.read_config(env, Path("data"), SPEC.dispatch_settings(env))
    assert isinstance(config, DatadogSinkConfig)


def test_the_timeout_is_the_dispatchers_read_once() -> None:
    env = EnvReader(
        {"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": ML_APP, "RELAY_DATADOG_TIMEOUT": "x"}
    )
    dispatch = SPEC.dispatch_settings(env)
    config = SPEC.read_config(env, Path("data"), dispatch)
    assert isinstance(config, DatadogSinkConfig) and config.timeout == dispatch.timeout == 10.0
    assert env.problems == ["RELAY_DATADOG_TIMEOUT: expected a number, got 'x'"]  # once


# --- OTLP mode ----------------------------------------------------------------------------------


def test_otlp_mode_takes_the_sites_otlp_intake() -> None:
    config = make_config(RELAY_DATADOG_MODE="otlp", DD_SITE="datadoghq.eu")
    otlp = config.otlp()
    assert otlp.endpoint == "https://trace.agent.datadoghq.eu/v1/traces"
    assert config.endpoints() == {"DD_SITE": otlp.endpoint}
    assert otlp.headers == {"dd-otlp-source": "llmobs", "dd-api-key": API_KEY}
    assert otlp.resource == {"service.name": ML_APP, "dd_llmobs_enabled": True}
    assert (otlp.name, otlp.title) == ("datadog", "Datadog")
    assert API_KEY not in repr(config.describe())
    assert isinstance(SPEC.build(config), OtlpSink)
    _, problems = read_config({"RELAY_DATADOG_MODE": "otlp", "DD_LLMOBS_ML_APP": ML_APP})
    assert [p.split(":")[0] for p in problems] == ["DD_API_KEY"]  # the intake needs the key
    assert make_config().endpoints() == {}  # the span API is never the relay itself


async def test_otlp_mode_against_the_test_agents_otlp_receiver(test_agent: TestAgent) -> None:
    token = test_agent.new_session()
    config = make_config(
        RELAY_DATADOG_MODE="otlp",
        RELAY_DATADOG_URL=test_agent.otlp_url,
        RELAY_DATADOG_HEADERS=f"X-Datadog-Test-Session-Token={token}",
    )
    sink = SPEC.build(config)
    assert sink.name == "datadog"
    await sink.start()
    try:
        assert await sink.send(Batch.of([openrouter_chat(recent())])) is None
        probe = await sink.probe()
    finally:
        await sink.close()
    assert probe.ok, probe.message
    assert probe.message == f"Datadog: accepted an empty export at {test_agent.otlp_url}/v1/traces"

    def posted() -> list[dict[str, Any]]:
        return [r for r in test_agent.requests(token, otlp=True) if r["body"]]

    (request,) = await eventually(posted, message="the OTLP request at the agent")
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["url"].endswith("/v1/traces")
    assert (headers["dd-api-key"], headers["dd-otlp-source"]) == (API_KEY, "llmobs")
    assert headers["content-type"] == "application/x-protobuf"
    (payload,) = [p for p in test_agent.otlp_traces(token) if p.get("resource_spans")]
    (resource_spans,) = payload["resource_spans"]
    resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert resource["service.name"] == {"string_value": ML_APP}  # Datadog's ml_app
    assert resource["dd_llmobs_enabled"] == {"bool_value": True}
    (span,) = resource_spans["scope_spans"][0]["spans"]
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["gen_ai.request.model"] == {"string_value": "openai/gpt-4o-mini"}
    assert attributes["gen_ai.route.gateway"] == {"string_value": "openrouter"}


# --- the scripted intake is itself strict -----------------------------------------------------


def documented_example() -> tuple[dict[str, Any], int]:
    body: dict[str, Any] = fixture_json("datadog-llmobs-v1-example.json")["body"]
    return body, body["data"]["attributes"]["spans"][0]["start_ns"] + SECOND


def test_intake_accepts_the_documented_example() -> None:
    body, now = documented_example()
    assert datadog_intake.violations(body, now) == []


@pytest.mark.parametrize(
    ("break_it", "complaint"),
    [
        (lambda s: s.update(start_ns=s["start_ns"] // SECOND), "not in nanoseconds"),
        (lambda s: s.update(duration=1.834), "not in nanoseconds"),
        (lambda s: s["meta"].pop("kind"), "missing required field 'kind'"),
        (lambda s: s["meta"].update(kind="chain"), "expected one of"),
        (
            lambda s: s["meta"].update(input={"messages": [{"role": "user"}]}),
            "only valid on llm spans",
        ),
        (
            lambda s: s["meta"]["metadata"].update(nested={"a": 1}),
            "expected a number, boolean or string",
        ),
        (lambda s: s.update(span_id=int(s["span_id"])), "expected a string"),
        (lambda s: s.update(span_id="3e1c7a2b9d4f6a10"), "decimal 64-bit id"),
        (lambda s: s.update(parent_id=None), "expected a string"),
        (lambda s: s.update(status="failed"), "expected 'ok' or 'error'"),
        (lambda s: s.update(tags=["tenant"]), "is not a 'key:value' string"),
        (lambda s: s.update(kind="llm"), "unknown field 'kind'"),
        (lambda s: s.update(start_ns=s["start_ns"] - 25 * 3600 * SECOND), "older than 24 hours"),
    ],
)
def test_intake_refuses_what_the_schema_forbids(
    break_it: Callable[[dict[str, Any]], Any], complaint: str
) -> None:
    body, now = documented_example()
    break_it(body["data"]["attributes"]["spans"][0])
    problems = datadog_intake.violations(body, now)
    assert any(complaint in p for p in problems), problems


def test_intake_answers_like_the_real_one() -> None:
    body, now = documented_example()
    check = datadog_intake.intake_check(API_KEY, max_bytes=10_000, now_ns=lambda: now)

    def post(
        data: bytes, key: str = API_KEY, path: str = datadog_intake.SPANS_PATH
    ) -> Answer | None:
        headers = {"DD-API-KEY": key, "Content-Type": "application/json"}
        return check(Received("POST", path, headers, data, data, 0.0))

    assert post(orjson.dumps(body)) is None  # conforming: the server's 202 (or scripted) answer
    assert post(orjson.dumps(body), key="nope") == json_error(403, "Forbidden")
    big = copy.deepcopy(body)
    big["data"]["attributes"]["spans"][0]["meta"]["input"]["value"] = "z" * 20_000
    assert post(orjson.dumps(big)) == json_error(413, "Request entity too large")
    bad = copy.deepcopy(body)
    bad["data"]["attributes"]["ml_app"] = "LLM Gateway"
    refused = post(orjson.dumps(bad))
    assert refused is not None and refused.status == 400 and b"ml_app" in refused.body
    assert post(b"{}", path="/api/v1/validate") is None  # other paths are scripted freely
