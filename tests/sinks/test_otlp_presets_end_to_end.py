"""Every OTLP preset, end to end: the relay as users run it, with every preset enabled at once and
each pointed at Datadog's test agent (a real OTLP/HTTP receiver, which decodes what it takes),
delivers every posted span to each, with the headers that preset documents.

Each preset sends its requests under its own test-agent session (the session token travels in
``RELAY_<SINK>_HEADERS``), so what arrived can be told apart per preset.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from sinks.otlp_presets import PRESETS
from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.relay import RelayProcess
from tests.helpers.test_agent import TestAgent
from tests.helpers.waiting import eventually

# What each preset needs to start, and the headers it must then send (lower-case names).
SETTINGS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "tempo": ({"TENANT": "acme"}, {"x-scope-orgid": "acme"}),
    "grafana_cloud": (
        {"INSTANCE_ID": "123456", "TOKEN": "glc_relay_test"},
        {"authorization": "Basic " + base64.b64encode(b"123456:glc_relay_test").decode()},
    ),
    "phoenix": ({"PROJECT": "relay-e2e"}, {"x-project-name": "relay-e2e"}),
    "langfuse": (
        {"PUBLIC_KEY": "pk-lf-relay", "SECRET_KEY": "sk-lf-relay"},
        {
            "authorization": "Basic " + base64.b64encode(b"pk-lf-relay:sk-lf-relay").decode(),
            "x-langfuse-ingestion-version": "4",
        },
    ),
    "honeycomb": (
        {"API_KEY": "hc-relay-test", "DATASET": "llm"},
        {"x-honeycomb-team": "hc-relay-test", "x-honeycomb-dataset": "llm"},
    ),
}


def test_every_preset_is_covered() -> None:
    assert set(SETTINGS) == {preset.name for preset in PRESETS}


def spans_in(payloads: list[dict[str, Any]]) -> list[str]:
    """Span ids (hex) in the agent's decoded OTLP payloads (it shows bytes as base64)."""
    return [
        base64.b64decode(span["span_id"]).hex()
        for payload in payloads
        for resource_spans in payload.get("resource_spans", ())
        for scope_spans in resource_spans["scope_spans"]
        for span in scope_spans["spans"]
    ]


async def test_every_preset_delivers_to_a_real_otlp_receiver(
    tmp_path: Path, test_agent: TestAgent
) -> None:
    sessions = {name: test_agent.new_session() for name in SETTINGS}
    env = {"RELAY_SINKS": ",".join(SETTINGS)}
    for name, (settings, _) in SETTINGS.items():
        prefix = f"RELAY_{name.upper()}_"
        env |= {prefix + key: value for key, value in settings.items()}
        env[prefix + "ENDPOINT"] = test_agent.otlp_url + "/v1/traces"
        env[prefix + "HEADERS"] = f"X-Datadog-Test-Session-Token={sessions[name]}"
        env[prefix + "FLUSH_INTERVAL"] = "0.05"
    relay = RelayProcess(tmp_path / "data", env)
    await asyncio.to_thread(relay.start)
    try:
        posted: list[str] = []
        for _ in range(2):
            body = otlp_json_spans(3)
            posted += span_ids(body)
            answer = await asyncio.to_thread(
                relay.request, "POST", "/v1/traces", body, {"Content-Type": "application/json"}
            )
            assert answer.status == 200
        for name, (_, expected_headers) in SETTINGS.items():
            token = sessions[name]

            def arrived(token: str = token) -> list[str]:
                ids = spans_in(test_agent.otlp_traces(token))
                return ids if len(ids) >= len(posted) else []

            assert sorted(await eventually(arrived, message=f"{name}'s spans")) == sorted(posted)
            requests = test_agent.requests(token, otlp=True)
            assert requests, name
            for request in requests:
                headers = {key.lower(): value for key, value in request["headers"].items()}
                assert {k: headers.get(k) for k in expected_headers} == expected_headers, name
    finally:
        await asyncio.to_thread(relay.stop)
