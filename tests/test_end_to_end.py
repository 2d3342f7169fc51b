"""Every gateway to every sink: fixtures in, the real peers' copies out.

One relay with all three sinks: Tempo and Datadog (agent mode) both point at Datadog's own
ddapm-test-agent, which stores what it receives. What a TraceQL query or an LLM Observability
search would need is asserted on the peer's copy, with exact names and types.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import fixture_json
from tests.helpers.payloads import otlp_json, otlp_span
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess
from tests.helpers.scripted_server import Answer, ScriptedServer
from tests.helpers.test_agent import TestAgent
from tests.helpers.waiting import at_least, eventually

JSON = {"Content-Type": "application/json"}


def fixture_body(name: str, index: int) -> bytes:
    return orjson.dumps(fixture_json(name)["requests"][index]["request"]["body"])


def otlp_spans(payloads: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, span) for every span the agent stored, attributes as dicts."""
    found = []
    for payload in payloads:
        for resource_spans in payload.get("resource_spans") or ():
            resource = {
                kv["key"]: kv["value"] for kv in resource_spans["resource"].get("attributes", [])
            }
            for scope_spans in resource_spans["scope_spans"]:
                for span in scope_spans["spans"]:
                    span["attributes"] = {kv["key"]: kv["value"] for kv in span["attributes"]}
                    found.append((resource, span))
    return found


def llmobs_spans(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spans = []
    for request in requests:
        if request["url"].endswith("/evp_proxy/v2/api/v2/llmobs"):
            for envelope in orjson.loads(request["body"]):
                spans.extend(envelope["spans"])
    return spans


@pytest.fixture
async def relay(test_agent: TestAgent, tmp_path: Path) -> AsyncIterator[tuple[RelayProcess, str]]:
    token = test_agent.new_session()
    env = {
        "RELAY_SINKS": "file,tempo,datadog",
        "RELAY_TEMPO_ENDPOINT": test_agent.otlp_url + "/v1/traces",
        "RELAY_TEMPO_HEADERS": f"X-Datadog-Test-Session-Token={token}",
        "RELAY_TEMPO_FLUSH_INTERVAL": "0.05",
        "RELAY_DATADOG_MODE": "agent",
        "DD_AGENT_URL": test_agent.apm_url,
        "RELAY_DATADOG_HEADERS": f"X-Datadog-Test-Session-Token={token}",
        "RELAY_DATADOG_FLUSH_INTERVAL": "0.05",
        "DD_LLMOBS_ML_APP": "relay-e2e",
    }
    process = RelayProcess(tmp_path / "data", env)
    await asyncio.to_thread(process.start)
    try:
        yield process, token
    finally:
        await asyncio.to_thread(process.stop)


async def test_gateways_to_tempo_and_datadog(
    relay: tuple[RelayProcess, str], test_agent: TestAgent
) -> None:
    process, token = relay
    openrouter = fixture_body("openrouter-otlp-example.json", 2)
    otoroshi = fixture_body("otoroshi-llmusageaudit-example.json", 0)
    litellm = fixture_body("litellm-standard-logging-payload-example.json", 0)
    for path, body in (
        ("/v1/traces", openrouter),
        ("/v1/webhooks/otoroshi", otoroshi),
        ("/v1/webhooks/litellm", litellm),
    ):
        response = await asyncio.to_thread(process.request, "POST", path, body, JSON)
        assert response.status == 200, response.data
    expected = 1 + 3 + 2

    tempo = await eventually(
        at_least(expected, lambda: otlp_spans(test_agent.otlp_traces(token))),
        message="every event as a Tempo span",
    )
    by_gateway: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for resource, span in tempo:
        by_gateway.setdefault(resource["service.name"]["string_value"], []).append((resource, span))
    assert sorted((g, len(s)) for g, s in by_gateway.items()) == [
        ("litellm", 2),
        ("openrouter", 1),
        ("otoroshi", 3),
    ]
    ((_, span),) = by_gateway["openrouter"]
    attributes = span["attributes"]
    assert span["name"] == "chat anthropic/claude-sonnet-4"
    assert span["kind"] == "SPAN_KIND_CLIENT"
    assert attributes["gen_ai.request.model"] == {"string_value": "anthropic/claude-sonnet-4"}
    assert attributes["gen_ai.provider.name"] == {"string_value": "anthropic"}
    assert attributes["gen_ai.route.gateway"] == {"string_value": "openrouter"}
    assert attributes["gen_ai.route.upstream"] == {"string_value": "anthropic"}
    assert attributes["gen_ai.usage.input_tokens"] == {"int_value": "1200"}
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == {"int_value": "1024"}
    assert attributes["gen_ai.usage.cost"] == {"double_value": 0.00885}
    assert attributes["gen_ai.conversation.id"] == {"string_value": "session_abc"}
    assert attributes["gen_ai.response.finish_reasons"] == {
        "array_value": {"values": [{"string_value": "stop"}]}
    }
    otoroshi_models = {
        s["attributes"]["gen_ai.request.model"]["string_value"] for _, s in by_gateway["otoroshi"]
    }
    assert "gpt-4o-mini" in otoroshi_models
    assert all(
        s["attributes"]["gen_ai.route.gateway"] == {"string_value": "otoroshi"}
        for _, s in by_gateway["otoroshi"]
    )

    # The fixtures' calls happened months ago: Datadog would refuse them, so they go to the
    # dead-letter file (replayable elsewhere). A call made now goes through.
    await eventually(
        lambda: process.get_json("/v1/status")["sinks"]["datadog"]["dead_lettered"] == expected,
        message="old events dead-lettered for Datadog",
    )
    dead = (process.data_dir / "dead-letter" / "datadog.jsonl").read_text().splitlines()
    assert {orjson.loads(line)["reason"] for line in dead} == {"too_old"}
    fresh = otlp_span(
        "gpt-4o-mini", attributes={"session.id": "s-42", "gen_ai.usage.input_tokens": "12"}
    )
    response = await asyncio.to_thread(
        process.request, "POST", "/v1/traces", otlp_json([fresh]), JSON
    )
    assert response.status == 200
    (chat,) = await eventually(
        lambda: llmobs_spans(test_agent.requests(token)), message="an LLM Observability span"
    )
    assert chat["meta"]["span"] == {"kind": "llm"}
    assert chat["meta"]["model_name"] == "gpt-4o-mini"
    assert chat["metrics"]["input_tokens"] == 12
    assert "ml_app:relay-e2e" in chat["tags"]
    assert "gateway:openrouter" in chat["tags"]
    assert chat["session_id"] == "s-42"

    check = orjson.loads(
        (await asyncio.to_thread(process.request, "GET", "/v1/test-connection")).data
    )
    assert check["ok"] is True, check
    assert set(check["sinks"]) == {"file", "tempo", "datadog"}


async def test_setup_check_names_what_is_wrong(tmp_path: Path) -> None:
    intake = await ScriptedServer(default=Answer(403, b'{"errors":["Forbidden"]}')).start()
    unreachable = f"http://127.0.0.1:{free_port()}/v1/traces"
    env = {
        "RELAY_SINKS": "file,tempo,datadog",
        "RELAY_TEMPO_ENDPOINT": unreachable,
        "DD_API_KEY": "not-a-valid-key-123",
        "DD_LLMOBS_ML_APP": "relay-e2e",
        "DD_SITE": "datadoghq.eu",
        "RELAY_DATADOG_URL": intake.url,
    }
    process = RelayProcess(tmp_path / "data", env)
    await asyncio.to_thread(process.start)
    try:
        response = await asyncio.to_thread(process.request, "GET", "/v1/test-connection")
        assert response.status == 503
        body = orjson.loads(response.data)
        assert body["ok"] is False
        assert body["sinks"]["file"]["ok"] is True
        assert body["sinks"]["tempo"]["message"].startswith(f"Tempo: cannot reach {unreachable}")
        assert (
            body["sinks"]["datadog"]["message"] == "Datadog: API key rejected for site datadoghq.eu"
        )
        assert "not-a-valid-key-123" not in response.data.decode()
    finally:
        await asyncio.to_thread(process.stop)
        await intake.stop()
