"""Fuzzing every route and encoding of a running relay with hostile bodies that carry planted
secrets (``tests/helpers/fuzz.py``).

Asserted for every body: no 5xx, and every answer counted in ``relay_http_requests_total``.
Then, once everything accepted has been delivered or dead-lettered: every event the file sink
wrote holds the schema, and no planted secret is anywhere a user or an operator can read: the
answers, the file sink, what the OTLP peer received, the dead letters, the spool's files, the log,
``/metrics`` and ``/v1/status``.

The default run is short (``FUZZ_EXAMPLES``, 150 bodies); ``make fuzz`` runs thousands.
"""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from schemas.llm_event import json_schema
from tests.helpers.fuzz import FIXTURE_BODIES, Planted, any_body
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SINKS = ("file", "otlp", "datadog")

pytestmark = pytest.mark.slow


class OtlpPeer(BaseHTTPRequestHandler):
    """An OTLP receiver that takes everything and keeps it, decompressed, for reading."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def peer() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), OtlpPeer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, peer: ThreadingHTTPServer
) -> Iterator[RelayProcess]:
    env = {
        "RELAY_SINKS": ",".join(SINKS),
        "RELAY_OTLP_ENDPOINT": f"http://127.0.0.1:{peer.server_address[1]}/v1/traces",
        "RELAY_OTLP_FLUSH_INTERVAL": "0.05",
        # Datadog is unreachable: every event it is given ends as a dead letter, soon.
        "RELAY_DATADOG_URL": f"http://127.0.0.1:{free_port()}",
        "DD_API_KEY": "fuzz-not-a-key",
        "DD_LLMOBS_ML_APP": "fuzz",
        "RELAY_DATADOG_MAX_RETRY_TIME": "0.5",
        "RELAY_DATADOG_INITIAL_BACKOFF": "0.05",
        "RELAY_DATADOG_MAX_BACKOFF": "0.1",
        "RELAY_DATADOG_FLUSH_INTERVAL": "0.05",
        "RELAY_DATADOG_TIMEOUT": "1",
    }
    with RelayProcess(tmp_path_factory.mktemp("relay"), env) as process:
        yield process


def test_hostile_bodies_get_no_5xx_and_leak_no_secret(relay: RelayProcess) -> None:
    planted: list[str] = []
    answers: list[bytes] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(any_body)
    def post(body: Planted) -> None:
        headers = {"Content-Type": body.content_type, **body.headers}
        answer = relay.request("POST", body.path, body.body, headers)
        assert answer.status < 500, (body.path, answer.status, answer.data[:500])
        planted.extend(body.secrets)
        answers.append(answer.data)

    answered_before = _ingest_answers_counted(relay)
    post()
    assert relay.running, relay.log()[-4000:]
    assert _ingest_answers_counted(relay) - answered_before == len(answers), "answers uncounted"
    _wait_until_every_sink_is_done(relay)
    outputs = {
        "answers": b"\n".join(answers),
        "file sink": relay.events_file.read_bytes(),
        "OTLP peer": b"\n".join(OtlpPeer.received),
        "dead letters": _read_tree(relay.data_dir / "dead-letter"),
        "spool": _read_tree(relay.data_dir / "spool"),
        "log": relay.log().encode(),
        "metrics": relay.request("GET", "/metrics").data,
        "status": relay.request("GET", "/v1/status").data,
    }
    leaks = [
        f"{secret} in {where}"
        for secret in planted
        for where, text in outputs.items()
        if secret.encode() in text
    ]
    events = relay.events()
    # Where in an event each leaked secret sits, to find the path that let it through.
    paths = [path for leak in leaks[:20] for path in _paths(events, leak.split()[0])]
    assert not leaks, (leaks[:20], paths[:20])
    assert events, "no body produced an event: the fuzzing proves nothing"
    assert outputs["OTLP peer"] and outputs["dead letters"], "an output path was not reached"
    validator = jsonschema.Draft202012Validator(json_schema())
    invalid = [
        (event.get("event_id"), error.message)
        for event in events
        for error in validator.iter_errors(event)
    ]
    assert not invalid, invalid[:10]


def _paths(value: Any, secret: str, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, secret, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, secret, f"{path}[{index}]")
    elif isinstance(value, str) and secret in value:
        yield path


def _ingest_answers_counted(relay: RelayProcess) -> float:
    routes = ("/v1/traces", *FIXTURE_BODIES)
    return sum(relay.metric("relay_http_requests_total", route=route) for route in routes)


def _wait_until_every_sink_is_done(relay: RelayProcess) -> None:
    def settled() -> bool:
        status = relay.get_json("/v1/status")
        return all(sink["backlog"] == 0 for sink in status["sinks"].values())

    wait_until(settled, timeout=60, message="sinks did not finish the fuzzed events")


def _read_tree(root: Path) -> bytes:
    """Every file under ``root``, gzip ones decompressed."""
    parts = []
    for path in sorted(root.rglob("*")) if root.exists() else []:
        if path.is_file():
            data = path.read_bytes()
            parts.append(gzip.decompress(data) if path.suffix == ".gz" else data)
    return b"\n".join(parts)


def test_the_relay_wrote_json_lines_only(relay: RelayProcess) -> None:
    """Every line of the relay's log is one JSON object, whatever it was sent."""
    lines = [line for line in relay.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(orjson.loads(line), dict), line
