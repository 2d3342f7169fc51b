"""Webhook inputs end to end: fixtures POSTed byte for byte, events checked in the file sink,
and every secret the inputs carried searched for in every output and log."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from schemas import json_schema
from tests.conftest import fixture_json
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import at_least, wait_until

TOKEN = "webhook-ingest-token-9f8e7d"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
VALIDATOR = jsonschema.Draft202012Validator(json_schema())
ROUTES = {
    "otoroshi-llmusageaudit-example.json": "/v1/webhooks/otoroshi",
    "litellm-standard-logging-payload-example.json": "/v1/webhooks/litellm",
    "native-llm-events-example.json": "/v1/events",
}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    env = {"RELAY_INGEST_TOKENS": f"team-a={TOKEN}"}
    with RelayProcess(tmp_path_factory.mktemp("relay"), env) as process:
        yield process


def requests_of(fixture: str) -> list[dict[str, Any]]:
    return [entry["request"] for entry in fixture_json(fixture)["requests"]]


def post(relay: RelayProcess, path: str, body: bytes) -> dict[str, Any]:
    response = relay.request("POST", path, body, HEADERS)
    assert response.status == 200, response.data
    answer: dict[str, Any] = orjson.loads(response.data)
    return answer


def stored(relay: RelayProcess, count: int) -> list[dict[str, Any]]:
    return wait_until(
        at_least(count, relay.events),
        message=f"{count} events in the file sink",
    )


@pytest.mark.parametrize("fixture", sorted(ROUTES))
def test_every_fixture_request_becomes_valid_events(relay: RelayProcess, fixture: str) -> None:
    before = len(relay.events())
    accepted = 0
    for request in requests_of(fixture):
        answer = post(relay, ROUTES[fixture], orjson.dumps(request["body"]))
        assert answer["rejected"] == [], answer
        accepted += answer["accepted"]
    assert accepted > 0
    events = stored(relay, before + accepted)[before:]
    for event in events:
        VALIDATOR.validate(event)
        assert event["source"]["tenant"] == "team-a"


def otoroshi_batch() -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = requests_of("otoroshi-llmusageaudit-example.json")[0]["body"]
    return body


def test_otoroshi_batch_fields_and_resends(relay: RelayProcess) -> None:
    batch = otoroshi_batch()
    for item in batch:
        item["@id"] = uuid.uuid4().hex  # fresh ids: this test's events only
    answer = post(relay, "/v1/webhooks/otoroshi", orjson.dumps(batch))
    assert answer["accepted"] == 3
    again = post(relay, "/v1/webhooks/otoroshi", orjson.dumps(batch[:1]))
    assert again["accepted"] == 1
    ids = {item["@id"] for item in batch}

    def mine() -> list[dict[str, Any]]:
        return [e for e in relay.events() if e.get("attributes", {}).get("otoroshi.id") in ids]

    events = wait_until(at_least(4, mine), message="4 events")
    assert len(events) == 4
    by_status = {e["status"]: e for e in events}
    assert by_status["error"]["source"]["gateway"] == "otoroshi"
    # A re-send is the same event: same event_id, so downstream de-duplication works.
    first = [e for e in events if e["attributes"]["otoroshi.id"] == batch[0]["@id"]]
    assert len(first) == 2
    assert first[0]["event_id"] == first[1]["event_id"]


def test_non_llm_events_are_counted_and_skipped(relay: RelayProcess) -> None:
    body = orjson.dumps(
        [
            {"@type": "GatewayEvent", "@id": "g1", "@timestamp": 1743160000000},
            {"@type": "McpAudit", "@id": "m1", "@timestamp": 1743160000000},
        ]
    )
    answer = post(relay, "/v1/webhooks/otoroshi", body)
    assert answer == {"accepted": 0, "skipped": 2, "rejected": []}
    metrics = relay.request("GET", "/metrics").data.decode()
    assert 'relay_items_skipped_total{format="otoroshi"' in metrics


def test_one_bad_item_is_rejected_alone(relay: RelayProcess) -> None:
    good = otoroshi_batch()[0]
    good["@id"] = uuid.uuid4().hex
    bad = {"@type": "LLMUsageAudit", "@id": "broken", "@timestamp": "not a time"}
    response = relay.request("POST", "/v1/webhooks/otoroshi", orjson.dumps([bad, good]), HEADERS)
    assert response.status == 200
    answer = orjson.loads(response.data)
    assert answer["accepted"] == 1
    assert len(answer["rejected"]) == 1
    assert answer["rejected"][0]["reason"]
    only_bad = relay.request("POST", "/v1/webhooks/otoroshi", orjson.dumps([bad]), HEADERS)
    assert only_bad.status == 400


def with_real_secrets(value: Any, secrets: list[str]) -> Any:
    """The fixtures carry placeholders where gateways send secrets; put realistic ones there."""
    if isinstance(value, dict):
        return {k: with_real_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [with_real_secrets(v, secrets) for v in value]
    if isinstance(value, str) and value.startswith("<REDACT-ME"):
        secrets.append(f"sk-proj-{os.urandom(12).hex()}")
        return secrets[-1]
    return value


def test_secrets_never_reach_an_output_or_a_log(relay: RelayProcess, tmp_path: Path) -> None:
    secrets: list[str] = []
    batch = with_real_secrets(otoroshi_batch(), secrets)
    for item in batch:
        item["@id"] = uuid.uuid4().hex
    assert len(secrets) >= 3
    litellm = requests_of("litellm-standard-logging-payload-example.json")[0]["body"]
    litellm_secret = f"sk-{os.urandom(16).hex()}"
    secrets.append(litellm_secret)
    litellm[0]["metadata"]["headers"] = {"authorization": f"Bearer {litellm_secret}"}
    before = len(relay.events())
    accepted = post(relay, "/v1/webhooks/otoroshi", orjson.dumps(batch))["accepted"]
    accepted += post(relay, "/v1/webhooks/litellm", orjson.dumps(litellm))["accepted"]
    stored(relay, before + accepted)
    outputs = [relay.events_file, *sorted((relay.data_dir / "dead-letter").glob("*"))]
    texts = [path.read_text() for path in outputs if path.exists()]
    texts.append(relay.log())
    texts.append(relay.request("GET", "/metrics").data.decode())
    texts.append(relay.request("GET", "/v1/status").data.decode())
    for secret in [*secrets, TOKEN]:
        for text in texts:
            assert secret not in text
