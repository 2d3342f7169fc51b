"""What the relay checks at start: every sink is probed in the background and its verdict logged
(a sink never stops the start, nor delays ingest), and a placeholder credential is refused.

The probes run against real loopback peers (a closed port, a scripted OTLP receiver, a socket
that accepts and never answers) with the relay as users run it (a subprocess).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from foundation.secrets import is_placeholder
from tests.helpers.otlp_peer import OK
from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess, run_relay
from tests.helpers.scripted_server import Answer, ScriptedServer
from tests.helpers.waiting import eventually, wait_until

JSON = {"Content-Type": "application/json"}


def verdicts(relay: RelayProcess) -> dict[str, dict[str, Any]]:
    """Each sink's probe line so far, by sink."""
    found = relay.log_records("sink_probe_passed") + relay.log_records("sink_probe_failed")
    return {line["sink"]: line for line in found}


def verdict(relay: RelayProcess, sink: str) -> dict[str, Any] | None:
    return verdicts(relay).get(sink)


def probing(data_dir: Path, endpoint: str, **env: str) -> RelayProcess:
    return RelayProcess(
        data_dir,
        {
            "RELAY_SINKS": "file,otlp",
            "RELAY_OTLP_ENDPOINT": endpoint,
            "RELAY_PROBE_SINKS_AT_START": "true",
            **env,
        },
    )


def takes_an_event(relay: RelayProcess) -> None:
    body = otlp_json_spans(1)
    assert relay.request("POST", "/v1/traces", body, JSON).status == 200
    (span,) = span_ids(body)
    wait_until(lambda: span in {e["span_id"] for e in relay.events()}, message="event stored")


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An OTLP endpoint whose socket accepts connections (the kernel's backlog) and never
    answers: a peer behind a firewall that drops, or a hung process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"


# -- probes --------------------------------------------------------------------------------------


def test_a_closed_port_is_a_warning_and_ingest_runs(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/traces"
    with probing(tmp_path / "data", closed) as relay:
        failed = wait_until(lambda: verdict(relay, "otlp"), message="the otlp verdict")
        passed = wait_until(lambda: verdict(relay, "file"), message="the file verdict")
        assert failed["event"] == "sink_probe_failed" and failed["level"] == "warning"
        assert "connection refused" in failed["message"]
        assert f"127.0.0.1:{closed.split(':')[2]}" in failed["message"]
        assert passed["event"] == "sink_probe_passed"
        assert passed["level"] == "info"
        assert relay.request("GET", "/readyz").status == 200
        takes_an_event(relay)


async def test_a_live_peer_is_one_empty_export_and_a_pass_line(tmp_path: Path) -> None:
    peer = await ScriptedServer(default=OK).start()
    relay = probing(tmp_path / "data", peer.url + "/v1/traces", RELAY_OTLP_FLUSH_INTERVAL="0.05")
    try:
        await asyncio.to_thread(relay.start)
        found = await eventually(lambda: verdict(relay, "otlp"), message="the otlp verdict")
        assert found["event"] == "sink_probe_passed"
        assert "accepted an empty export" in found["message"]
        (probe,) = peer.requests
        assert not ExportTraceServiceRequest.FromString(probe.body).resource_spans
    finally:
        await asyncio.to_thread(relay.stop)
        await peer.stop()


async def test_a_credential_echoed_by_the_peer_stays_out_of_the_log(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    echo = Answer(401, f'{{"error": "invalid Authorization: Bearer {secret}"}}'.encode())
    peer = await ScriptedServer(default=echo).start()
    relay = probing(
        tmp_path / "data",
        peer.url + "/v1/traces",
        RELAY_OTLP_HEADERS=f"Authorization=Bearer {secret}",
    )
    try:
        await asyncio.to_thread(relay.start)
        found = await eventually(lambda: verdict(relay, "otlp"), message="the otlp verdict")
        assert found["event"] == "sink_probe_failed"
        assert "401" in found["message"]
        assert peer.requests[0].headers["Authorization"] == f"Bearer {secret}"
        assert secret not in relay.log()
    finally:
        await asyncio.to_thread(relay.stop)
        await peer.stop()


def test_a_peer_that_never_answers_delays_neither_start_nor_ingest(
    tmp_path: Path, black_hole: str
) -> None:
    with probing(tmp_path / "data", black_hole, RELAY_OTLP_TIMEOUT="3") as relay:
        # Ready, and taking events, while the probe still waits for its answer.
        assert "otlp" not in verdicts(relay)
        takes_an_event(relay)
        assert "otlp" not in verdicts(relay)
        found = wait_until(lambda: verdict(relay, "otlp"), timeout=20, message="the verdict")
        assert found["event"] == "sink_probe_failed"
        assert "no answer within 3s" in found["message"]


async def test_only_worker_0_probes(tmp_path: Path) -> None:
    peer = await ScriptedServer(default=OK).start()
    relay = probing(tmp_path / "data", peer.url + "/v1/traces", RELAY_WORKERS="2")
    try:
        await asyncio.to_thread(relay.start)
        await eventually(lambda: len(relay.log_records("listening")) == 2, message="2 workers")
        await eventually(lambda: len(verdicts(relay)) == 2, message="worker 0's verdicts")
        assert await asyncio.to_thread(relay.stop) == 0
        assert len(relay.log_records("sink_probe_passed")) == 2  # file and otlp, once each
        assert len(peer.requests) == 1
    finally:
        relay.kill_all()
        await peer.stop()


def test_no_probe_when_switched_off(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/traces"
    relay = probing(tmp_path / "data", closed, RELAY_PROBE_SINKS_AT_START="false")
    with relay:
        takes_an_event(relay)
    assert verdicts(relay) == {}


# -- placeholders refused, short tokens warned ---------------------------------------------------


PLACEHOLDERS = (
    *("replace-me", "REPLACE_ME", "changeme", "Change-Me", "<token>", "xxxxxxxx", "your-token"),
    *("your_api_key_here", "***", "${RELAY_TOKEN}"),
)


@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_placeholders_are_recognised(value: str) -> None:
    assert is_placeholder(value)


def test_basic_credentials_are_placeholders_by_either_half_and_tokens_only_whole() -> None:
    """``user:password`` (``*_BASIC_AUTH``) is a template's when either half is; a token that
    holds a colon is judged whole (its parts are not credentials of their own)."""
    assert is_placeholder("<instance id>:<access token>", pair=True)
    assert is_placeholder("123456:replace-me", pair=True)
    assert not is_placeholder("xxx:9f8e7d6c5b4a39281706", pair=False)
    assert not is_placeholder("123456:glc_abc", pair=True)


@pytest.mark.parametrize(
    "value", ["s3cret-ingest-token", "tok-acme-123", "0f" * 32, "123456:glc_abc", "xx", "secret"]
)
def test_real_looking_values_are_not_placeholders(value: str) -> None:
    assert not is_placeholder(value)


def test_placeholder_credentials_stop_the_start_naming_each_variable(tmp_path: Path) -> None:
    relay = RelayProcess(
        tmp_path / "data",
        {
            "RELAY_INGEST_TOKENS": "acme=0123456789abcdef0123,beta=Replace-Me",
            "RELAY_SINKS": "file,datadog",
            "DD_API_KEY": "<your Datadog API key>",
            "DD_LLMOBS_ML_APP": "tests",
        },
    )
    result = run_relay(relay.environment())
    assert result.returncode == 2
    message = result.stderr
    assert message.count("\n") == 1, "one message, one line"
    assert "RELAY_INGEST_TOKENS: item 2 is a placeholder" in message
    assert "DD_API_KEY: is a placeholder" in message
    # Named by position, never quoted: a real token is never echoed, and neither is the other one.
    assert "0123456789abcdef0123" not in message
    assert not (tmp_path / "data" / "spool").exists()


def test_a_placeholder_of_a_disabled_sink_is_not_read(tmp_path: Path) -> None:
    """The Kubernetes Secret ships ``DD_API_KEY: replace-me``: fine while Datadog is off."""
    relay = RelayProcess(tmp_path / "data", {"DD_API_KEY": "replace-me"})
    with relay:
        takes_an_event(relay)


def test_a_short_token_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    tokens = "acme=tok-acme-123,beta=" + "0f" * 32
    with RelayProcess(tmp_path / "data", {"RELAY_INGEST_TOKENS": tokens}) as relay:
        (warning,) = relay.log_records("ingest_tokens_short")
        assert warning["tenants"] == ["acme"]
        assert "tok-acme-123" not in relay.log()
