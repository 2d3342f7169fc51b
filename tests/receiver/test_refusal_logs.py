"""Every refusal at ingest leaves a log line and a metric, on a running relay.

Each cause (route and reason) gets one line at once, then none until its interval ends, then one
saying how many were held back; the metric counts every occurrence. A line says what to fix
(status, the message the sender got, the Content-Type, the limit, who sent it) and never a
secret. At debug level each accepted request is one line; at info level none.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from telemetry.ingest_outcomes import LOG_INTERVAL_SECONDS
from tests.helpers.payloads import native_event, otlp_json, otlp_json_spans
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

TOKEN = "refusal-logs-token-" + os.urandom(8).hex()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json", **AUTH}
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    env = {
        "RELAY_INGEST_TOKENS": f"acme={TOKEN}",
        "RELAY_MAX_BODY_BYTES": str(MAX_BODY),
        "RELAY_BODY_TIMEOUT": str(BODY_TIMEOUT),
    }
    with RelayProcess(tmp_path_factory.mktemp("relay"), env) as process:
        yield process


def rejected(relay: RelayProcess, route: str, reason: str) -> float:
    return relay.metric("relay_items_rejected_total", route=route, reason=reason)


# -- each cause: one line, a count per occurrence ------------------------------------------------


def test_a_wrong_token_is_logged_at_once_and_never_written(relay: RelayProcess) -> None:
    planted = "sk-or-v1-" + os.urandom(12).hex()
    agent_secret = "sk-live-" + os.urandom(12).hex()
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {planted}",
        "User-Agent": f"gateway-probe/2.1 (Bearer {agent_secret})",
    }
    before = rejected(relay, "otlp", "unauthorized")
    for _ in range(3):
        response = relay.request("POST", "/v1/traces", otlp_json_spans(1), headers)
        assert response.status == 401
    assert rejected(relay, "otlp", "unauthorized") == before + 3

    (line,) = wait_until(
        lambda: relay.log_records("ingest_refused", route="otlp", reason="unauthorized")
    )
    assert line["level"] == "warning"
    assert line["status"] == 401
    assert "RELAY_INGEST_TOKENS" in line["message"]
    assert line["authorization"] == "bearer"
    assert line["client"] == "127.0.0.1"
    assert line["user_agent"].startswith("gateway-probe/2.1")
    assert line["suppressed"] == 0
    log = relay.log()
    for secret in (planted, planted[-12:], agent_secret, agent_secret[-12:], TOKEN):
        assert secret not in log


def slow_body(relay: RelayProcess) -> int:
    """A webhook body that stops coming: answered 408 once RELAY_BODY_TIMEOUT has passed."""
    head = (
        "POST /v1/webhooks/otoroshi HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n["
    )
    with socket.create_connection(("127.0.0.1", relay.port), timeout=BODY_TIMEOUT + 10) as conn:
        conn.sendall(head.encode())
        return int(conn.recv(65536).split(b" ", 2)[1])


CAUSES = [
    # name, route, reason, status, how, fields the line must have
    ("413", "events", "too_large", 413, (b" " * (MAX_BODY + 1), JSON), {"limit_bytes": MAX_BODY}),
    (
        "415",
        "otlp",
        "unsupported",
        415,
        (b"{}", {**AUTH, "Content-Type": "text/plain"}),
        {"content_type": "text/plain"},
    ),
    (
        "400",
        "litellm",
        "malformed",
        400,
        (b"[{", JSON),
        {"content_type": "application/json"},
    ),
    ("408", "otoroshi", "timeout", 408, None, {}),
]
ROUTES = {"events": "/v1/events", "otlp": "/v1/traces", "litellm": "/v1/webhooks/litellm"}


@pytest.mark.parametrize(
    ("route", "reason", "status", "how", "expected"),
    [case[1:] for case in CAUSES],
    ids=[case[0] for case in CAUSES],
)
def test_each_refusal_is_one_line_per_interval_and_one_count_each(
    relay: RelayProcess,
    route: str,
    reason: str,
    status: int,
    how: tuple[bytes, dict[str, str]] | None,
    expected: dict[str, object],
) -> None:
    before = rejected(relay, route, reason)
    answers = []
    for _ in range(2 if how is None else 3):
        if how is None:
            answers.append((slow_body(relay), ""))
        else:
            response = relay.request("POST", ROUTES[route], *how)
            answers.append((response.status, response.data.decode()))
    assert {code for code, _ in answers} == {status}
    assert rejected(relay, route, reason) == before + len(answers)

    found = wait_until(lambda: relay.log_records("ingest_refused", route=route, reason=reason))
    assert len(found) == 1, found
    (line,) = found
    assert line["level"] == "warning"
    assert line["status"] == status
    assert expected.items() <= line.items()
    if answers[0][1]:
        assert line["message"] in answers[0][1], "the line quotes what the sender was told"


def test_invalid_items_are_logged_with_the_first_one(relay: RelayProcess) -> None:
    good = native_event("good")
    bad = native_event("bad", cost={"total": -1.0, "currency": "USD", "source": "gateway"})
    before = rejected(relay, "events", "invalid_item")
    answer = relay.request("POST", "/v1/events", orjson.dumps([good, bad]), JSON)
    assert answer.status == 200, answer.data
    assert rejected(relay, "events", "invalid_item") == before + 1

    (line,) = wait_until(lambda: relay.log_records("items_rejected", route="events"))
    assert line["level"] == "info", "the rest of the batch was stored"
    assert (line["count"], line["accepted"], line["status"]) == (1, 1, 200)
    assert "cost.total" in line["first"]


def test_a_body_without_items_is_counted_and_logged(relay: RelayProcess) -> None:
    def empty() -> float:
        return relay.metric("relay_items_skipped_total", format="native", reason="empty")

    before = empty()
    answer = relay.request("POST", "/v1/events", b"[]", JSON)
    assert answer.status == 200
    assert orjson.loads(answer.data)["accepted"] == 0
    assert empty() == before + 1

    (line,) = wait_until(lambda: relay.log_records("no_events", route="events"))
    assert line["level"] == "info"
    assert line["skipped"] == 0


def test_a_body_of_spans_that_are_no_llm_call_is_logged(relay: RelayProcess) -> None:
    def not_llm() -> float:
        return relay.metric("relay_items_skipped_total", format="otlp-json", reason="not_llm")

    span = {
        "traceId": os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": "GET /",
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}],
    }
    before = not_llm()
    answer = relay.request("POST", "/v1/traces", otlp_json([span, span], "web"), JSON)
    assert answer.status == 200
    assert not_llm() == before + 2

    (line,) = wait_until(lambda: relay.log_records("no_events", route="otlp"))
    assert line["skipped"] == 2
    assert "relay_items_skipped_total" in line["message"]


def test_a_test_connection_answered_200_is_one_info_line_not_a_refusal(
    relay: RelayProcess,
) -> None:
    """OpenRouter's Test Connection posts an empty body without a Content-Type: answered 200,
    said once at info level, not counted as refused."""
    before = rejected(relay, "otlp", "unsupported")
    test = {**AUTH, "X-Test-Connection": "true"}
    for _ in range(3):
        assert relay.request("POST", "/v1/traces", b"", test).status == 200
    assert rejected(relay, "otlp", "unsupported") == before

    (line,) = wait_until(lambda: relay.log_records("test_connection", route="otlp"))
    assert line["level"] == "info"
    assert (line["status"], line["waived_status"], line["test_connection"]) == (200, 415, True)


def test_a_burst_is_one_line_and_the_next_says_how_many_were_held_back(
    relay: RelayProcess,
) -> None:
    """Nothing more comes after the burst: the count is written when the interval ends."""
    burst = 25
    before = rejected(relay, "events", "unauthorized")
    for _ in range(burst):
        assert relay.request("POST", "/v1/events", b"[]", {"X-Probe": "1"}).status == 401
    assert rejected(relay, "events", "unauthorized") == before + burst
    assert len(relay.log_records("ingest_refused", route="events", reason="unauthorized")) == 1

    def summary() -> list[dict[str, Any]]:
        return relay.log_records(
            "ingest_refused", route="events", reason="unauthorized", summary=True
        )

    (line,) = wait_until(summary, timeout=LOG_INTERVAL_SECONDS + 10)
    assert line["suppressed"] == burst - 1
    assert line["authorization"] == "none"
    assert len(relay.log_records("ingest_refused", route="events", reason="unauthorized")) == 2


# -- a full spool --------------------------------------------------------------------------------


def test_a_full_spool_is_one_warning_and_every_503_counted(tmp_path: Path) -> None:
    env = {
        "RELAY_INGEST_TOKENS": f"acme={TOKEN}",
        "RELAY_SINKS": "otlp",
        # Nothing listens there: every event stays in the spool.
        "RELAY_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces",
        "RELAY_SPOOL_MAX_BYTES": str(64 * 1024),
    }
    with RelayProcess(tmp_path / "data", env) as relay:
        statuses: list[int] = []
        while len(statuses) < 100 and statuses.count(503) < 3:
            batch = [native_event("fill", attributes={"pad": "x" * 2000}) for _ in range(5)]
            statuses.append(relay.request("POST", "/v1/events", orjson.dumps(batch), JSON).status)
        assert statuses.count(503) == 3, statuses
        assert set(statuses) == {200, 503}
        assert rejected(relay, "events", "unavailable") == 3

        (line,) = wait_until(lambda: relay.log_records("ingest_refused", reason="unavailable"))
        assert line["level"] == "warning"
        assert line["status"] == 503
        assert "RELAY_SPOOL_MAX_BYTES" in line["message"]


# -- debug: what was accepted --------------------------------------------------------------------


def test_at_info_level_an_accepted_request_writes_nothing(relay: RelayProcess) -> None:
    answer = relay.request("POST", "/v1/events", orjson.dumps([native_event("quiet")]), JSON)
    assert answer.status == 200 and orjson.loads(answer.data)["accepted"] == 1
    assert relay.log_records("ingest_accepted") == []
    assert '"level": "debug"' not in relay.log()


def test_at_debug_level_each_accepted_request_is_one_line(tmp_path: Path) -> None:
    env = {"RELAY_INGEST_TOKENS": f"acme={TOKEN}", "RELAY_LOG_LEVEL": "debug"}
    with RelayProcess(tmp_path / "data", env) as relay:
        body = orjson.dumps([native_event("seen"), native_event("seen")])
        answer = relay.request("POST", "/v1/events", body, JSON)
        assert answer.status == 200 and orjson.loads(answer.data)["accepted"] == 2

        (line,) = wait_until(lambda: relay.log_records("ingest_accepted", route="events"))
        assert line["level"] == "debug"
        assert (line["format"], line["events"], line["skipped"], line["rejected"]) == (
            "native",
            2,
            0,
            0,
        )
        assert (line["tenant"], line["bytes"], line["gateways"]) == ("acme", len(body), ["tests"])
        assert TOKEN not in relay.log()
