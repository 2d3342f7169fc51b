"""Operating the relay: configuration errors, logs, health, status, metrics, setup check, CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from foundation.version import __version__
from tests.conftest import fixture_json
from tests.helpers.payloads import otlp_json_spans
from tests.helpers.relay import ROOT, RelayProcess
from tests.helpers.waiting import wait_until

JSON = {"Content-Type": "application/json"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "DD_"))}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"llm-broadcast-relay {__version__}"


def test_invalid_configuration_names_every_bad_variable(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        env={
            "RELAY_PORT": "http",
            "RELAY_CONTENT": "everything",
            "RELAY_SINKS": "file,tempo,kafka",
            "RELAY_MAX_BODY_BYTES": "-5",
            "RELAY_INGEST_TOKENS": "team=",
            "RELAY_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 2
    message = result.stderr
    for name in (
        "RELAY_PORT",
        "RELAY_CONTENT",
        "RELAY_SINKS",
        "RELAY_MAX_BODY_BYTES",
        "RELAY_INGEST_TOKENS",
        "RELAY_TEMPO_ENDPOINT",
    ):
        assert name in message, name
    assert "kafka" in message
    assert message.count("\n") == 1, "one message, one line"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    env = {"RELAY_INGEST_TOKENS": "acme=tok-acme-123,tok-plain-456", "RELAY_CONTENT": "hash"}
    with RelayProcess(tmp_path_factory.mktemp("relay"), env) as process:
        yield process


def test_effective_config_is_logged_with_secrets_masked(relay: RelayProcess) -> None:
    (config,) = relay.log_records("config")
    assert config["content"] == "hash"
    assert config["ingest_tokens"] == ["acme=***", "-=***"]
    assert config["sinks"]["file"]["path"].endswith("llm-events.jsonl")
    assert "tok-acme-123" not in relay.log()
    assert "tok-plain-456" not in relay.log()


def test_open_ingest_is_warned_about(tmp_path: Path) -> None:
    with RelayProcess(tmp_path) as process:
        lines = process.log().splitlines()
    warnings = [orjson.loads(line) for line in lines if "ingest_open" in line]
    assert warnings[0]["level"] == "warning"


def test_hash_policy_keeps_shape_and_hides_text(relay: RelayProcess) -> None:
    request = fixture_json("openrouter-otlp-example.json")["requests"][2]["request"]
    headers = {**request["headers"], "Authorization": "Bearer tok-plain-456"}
    response = relay.request("POST", "/v1/traces", orjson.dumps(request["body"]), headers)
    assert response.status == 200
    (event,) = wait_until(lambda: [e for e in relay.events() if e["span_id"] == "00f067aa0ba902b7"])
    assert event["source"]["tenant"] is None
    hello = "sha256:" + hashlib.sha256(b"Hello!").hexdigest()
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": hello}]}
    ]
    assert event["output_messages"][0]["parts"][0]["content"].startswith("sha256:")
    assert event["attributes"]["relay.content_policy"] == "hash"
    assert event["usage"]["input_tokens"] == 1200  # metadata kept
    assert "Hello!" not in relay.events_file.read_text()


def test_hash_policy_hides_tool_arguments_and_results(relay: RelayProcess) -> None:
    secret_result, secret_city = "result: the vault code is 1234", "Atlantis"
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call-9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": f'{{"city": "{secret_city}"}}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call-9", "content": secret_result},
    ]
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "name": "chat",
        "startTimeUnixNano": "1772400000000000000",
        "endTimeUnixNano": "1772400001000000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {
                "key": "gen_ai.input.messages",
                "value": {"stringValue": orjson.dumps(messages).decode()},
            },
        ],
    }
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    headers = {**JSON, "Authorization": "Bearer tok-plain-456"}
    assert relay.request("POST", "/v1/traces", body, headers).status == 200
    (event,) = wait_until(lambda: [e for e in relay.events() if e["span_id"] == "cd" * 8])
    call, result = event["input_messages"][1]["parts"][0], event["input_messages"][2]["parts"][0]
    assert (call["type"], call["name"], call["id"]) == ("tool_call", "weather", "call-9")
    assert call["arguments"].startswith("sha256:")
    assert (result["type"], result["id"]) == ("tool_call_response", "call-9")
    assert result["response"].startswith("sha256:")
    written = relay.events_file.read_text()
    assert secret_result not in written and secret_city not in written


def test_status_and_metrics_show_what_happened(relay: RelayProcess) -> None:
    auth = {**JSON, "Authorization": "Bearer tok-acme-123"}
    body = otlp_json_spans(3, "metrics-model")
    assert relay.request("POST", "/v1/traces", body, auth).status == 200
    wait_until(lambda: relay.get_json("/v1/status")["sinks"]["file"]["backlog"] == 0)
    status = relay.get_json("/v1/status")
    file_sink = status["sinks"]["file"]
    assert file_sink["running"] is True
    assert file_sink["sent"] >= 3
    assert file_sink["last_success_at"] > 0
    assert file_sink["oldest_pending_age_s"] is None
    assert status["spool"]["max_bytes"] == 1024 * 1024 * 1024
    metrics = relay.request("GET", "/metrics").data.decode()
    assert 'relay_events_received_total{format="otlp-json",gateway="openrouter"}' in metrics
    assert (
        'llm_requests_total{gateway="openrouter",model="metrics-model",provider="unknown",'
        'status="ok",upstream="unknown"} 3.0' in metrics
    )
    assert 'relay_http_requests_total{route="/v1/traces",status="200"}' in metrics
    assert 'relay_sink_backlog_events{sink="file"} 0.0' in metrics
    llm_labels = {
        label.split("=")[0]
        for line in metrics.splitlines()
        if line.startswith("llm_") and "{" in line
        for label in line[line.find("{") + 1 : line.find("}")].split(",")
    }
    # LLM metrics are labelled by route and model, never by user (bounded cardinality); cost by
    # where it comes from (gateway or table).
    assert {"gateway", "provider", "upstream", "model"} <= llm_labels
    allowed = {"gateway", "provider", "upstream", "model", "status", "error_type", "type", "le"}
    allowed.add("source")
    assert llm_labels <= allowed


def test_setup_check_reports_each_sink(relay: RelayProcess) -> None:
    response = relay.request("GET", "/v1/test-connection")
    assert response.status == 200
    body = orjson.loads(response.data)
    assert body["ok"] is True
    assert body["sinks"]["file"]["message"].startswith("File: writing to ")


def test_setup_check_sends_a_test_event_only_with_an_ingest_token(relay: RelayProcess) -> None:
    before = len(relay.events())
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = relay.request("GET", "/v1/test-connection?send_test_event=true", None, headers)
        assert response.status == 401
        assert "RELAY_INGEST_TOKENS" in orjson.loads(response.data)["error"]
    assert relay.request("GET", "/v1/test-connection").status == 200  # the probe stays open
    headers = {"Authorization": "Bearer tok-plain-456"}
    response = relay.request("GET", "/v1/test-connection?send_test_event=true", None, headers)
    body = orjson.loads(response.data)
    assert body["ok"] is True
    note = body["sinks"]["file"]["test_event"]
    trace_id = note.rsplit(" ", 1)[-1].rstrip(")")
    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert event["source"]["test"] is True
    assert event["request_model"] == "test-connection"
    assert len([e for e in relay.events() if e.get("request_model") == "test-connection"]) == 1
    assert len(relay.events()) == before + 1


def test_cli_test_connection_passes_and_fails_with_a_reason(tmp_path: Path) -> None:
    ok = run_cli("test-connection", env={"RELAY_DATA_DIR": str(tmp_path)})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("PASS  File: writing to ")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    failed = run_cli("test-connection", env={"RELAY_FILE_PATH": str(blocker / "events.jsonl")})
    assert failed.returncode == 1
    assert failed.stdout.startswith(f"FAIL  File: cannot write to {blocker}")


def test_an_unknown_relay_variable_is_warned_about_by_name(tmp_path: Path) -> None:
    """A typo (RELAY_SINK for RELAY_SINKS) would silently leave the setting at its default."""
    env = {"RELAY_SINK": "datadog", "RELAY_FILE_PAHT": "/tmp/x"}
    with RelayProcess(tmp_path, env) as process:
        lines = [orjson.loads(line) for line in process.log().splitlines()]
    (warning,) = [line for line in lines if line.get("event") == "unknown_variables"]
    assert warning["level"] == "warning"
    assert warning["names"] == ["RELAY_FILE_PAHT", "RELAY_SINK"]
