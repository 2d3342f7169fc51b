"""Bad input gets a clear 4xx, the relay stays up, and memory stays bounded."""

from __future__ import annotations

import copy
import gzip
import os
import socket
from collections.abc import Iterator, Mapping, Sequence

import orjson
import psutil
import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fixture_json
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

TOKEN = "s3cret-ingest-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json", **AUTH}
PROTO = {"Content-Type": "application/x-protobuf", **AUTH}
MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    env = {"RELAY_INGEST_TOKENS": f"acme={TOKEN}", "RELAY_MAX_BODY_BYTES": str(MAX_BODY)}
    with RelayProcess(tmp_path_factory.mktemp("relay"), env) as process:
        yield process


def deep(depth: int) -> bytes:
    return b'{"resourceSpans":' + b"[" * depth + b"]" * depth + b"}"


BAD_REQUESTS = [
    (
        "truncated protobuf",
        "/v1/traces",
        b"\x0a\xff\xff\xff\x0f\x12",
        PROTO,
        400,
        "invalid OTLP protobuf",
    ),
    ("invalid JSON", "/v1/traces", b'{"resourceSpans": [', JSON, 400, "invalid OTLP JSON"),
    ("JSON that is not an object", "/v1/traces", b"[1, 2]", JSON, 400, "must be an object"),
    (
        "resourceSpans of the wrong type",
        "/v1/traces",
        b'{"resourceSpans": "x"}',
        JSON,
        400,
        "resourceSpans must be an array",
    ),
    ("deep nesting", "/v1/traces", deep(100_000), JSON, 400, "invalid OTLP JSON"),
    (
        "wrong content type",
        "/v1/traces",
        b"{}",
        {"Content-Type": "text/plain", **AUTH},
        415,
        "unsupported Content-Type",
    ),
    (
        "unsupported encoding",
        "/v1/traces",
        b"{}",
        {**JSON, "Content-Encoding": "br"},
        415,
        "unsupported Content-Encoding",
    ),
    (
        "corrupt gzip",
        "/v1/traces",
        b"this is not gzip",
        {**JSON, "Content-Encoding": "gzip"},
        400,
        "invalid gzip body",
    ),
    (
        "truncated gzip",
        "/v1/traces",
        gzip.compress(b'{"resourceSpans":[]}')[:-12],
        {**JSON, "Content-Encoding": "gzip"},
        400,
        "truncated gzip body",
    ),
    (
        "corrupt zstd",
        "/v1/traces",
        b"\x28\xb5\x2f\xfd garbage",
        {**JSON, "Content-Encoding": "zstd"},
        400,
        "invalid zstd body",
    ),
    ("too large as sent", "/v1/traces", b" " * (MAX_BODY + 1), JSON, 413, "exceeds"),
    (
        "missing token",
        "/v1/traces",
        b"{}",
        {"Content-Type": "application/json"},
        401,
        "bearer token",
    ),
    (
        "wrong token",
        "/v1/traces",
        b"{}",
        {"Content-Type": "application/json", "Authorization": "Bearer nope"},
        401,
        "bearer token",
    ),
    (
        "wrong scheme",
        "/v1/traces",
        b"{}",
        {"Content-Type": "application/json", "Authorization": f"Basic {TOKEN}"},
        401,
        "bearer token",
    ),
    ("empty webhook body", "/v1/webhooks/otoroshi", b"", JSON, 400, "empty body"),
    ("invalid webhook JSON", "/v1/webhooks/litellm", b"[{", JSON, 400, "invalid JSON"),
    ("webhook scalar", "/v1/events", b"42", JSON, 400, "expected a JSON array or object"),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_a_clear_error(
    relay: RelayProcess, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response = relay.request("POST", path, body, headers)
    assert response.status == status, response.data
    text = response.data.decode(errors="replace")
    if headers.get("Content-Type") == "application/x-protobuf" and path == "/v1/traces":
        from google.rpc.status_pb2 import Status

        text = Status.FromString(response.data).message
    assert message in text
    assert TOKEN not in text
    assert relay.request("GET", "/livez").status == 200


def test_gzip_bomb_is_refused_without_inflating_memory(relay: RelayProcess) -> None:
    bomb = gzip.compress(b"\0" * (512 * 1024 * 1024), compresslevel=9)  # 512 MiB from ~0.5 MiB
    assert len(bomb) < MAX_BODY
    process = psutil.Process(relay.process.pid)  # type: ignore[union-attr]
    before = process.memory_info().rss
    for encoding, body in (("gzip", bomb), ("zstd", zstandard.compress(b"\0" * (256 << 20)))):
        response = relay.request("POST", "/v1/traces", body, {**JSON, "Content-Encoding": encoding})
        assert response.status == 413
        assert b"after decompression" in response.data
    grown = process.memory_info().rss - before
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown >> 20} MiB"
    assert relay.request("GET", "/readyz").status == 200


def test_valid_token_tags_events_with_its_tenant_and_never_logs_it(relay: RelayProcess) -> None:
    trace_id = os.urandom(16).hex()
    body = orjson.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": trace_id,
                                    "spanId": os.urandom(8).hex(),
                                    "startTimeUnixNano": "1",
                                    "endTimeUnixNano": "2",
                                    "attributes": [
                                        {
                                            "key": "gen_ai.request.model",
                                            "value": {"stringValue": "m"},
                                        },
                                        {
                                            "key": "http.request.header.authorization",
                                            "value": {"stringValue": "Bearer sk-live-123"},
                                        },
                                        {
                                            "key": "x-api-key",
                                            "value": {"stringValue": "sk-or-v1-abcdefabcdefabcdef"},
                                        },
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    assert relay.request("POST", "/v1/traces", body, JSON).status == 200

    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert event["source"]["tenant"] == "acme"
    stored = relay.events_file.read_text()
    for secret in (TOKEN, "sk-live-123", "sk-or-v1-abcdefabcdefabcdef"):
        assert secret not in stored
        assert secret not in relay.log()


def test_health_metrics_and_status_stay_open_without_a_token(relay: RelayProcess) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/v1/status"):
        assert relay.request("GET", path).status == 200, path


def otlp_json_span(trace_id: str, attributes: Sequence[Mapping[str, object]]) -> bytes:
    span = {
        "traceId": trace_id,
        "spanId": os.urandom(8).hex(),
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "attributes": attributes,
    }
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("gen_ai.usage.input_tokens", {"doubleValue": "inf"}),
        ("gen_ai.usage.input_tokens", {"stringValue": "1e400"}),
        ("gen_ai.usage.input_tokens", {"stringValue": "1" * 30}),
        ("gen_ai.usage.cost", {"intValue": "1" + "0" * 400}),
        ("gen_ai.request.temperature", {"doubleValue": "not a number"}),
    ],
)
def test_absurd_numbers_are_left_out_not_a_server_error(
    relay: RelayProcess, attribute: str, value: dict[str, object]
) -> None:
    trace_id = os.urandom(16).hex()
    model = {"key": "gen_ai.request.model", "value": {"stringValue": "m"}}
    body = otlp_json_span(trace_id, [model, {"key": attribute, "value": value}])
    response = relay.request("POST", "/v1/traces", body, JSON)
    assert response.status == 200, response.data
    assert orjson.loads(response.data) == {}  # no partial success: the span was taken

    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert "input_tokens" not in event["usage"]
    assert "total" not in event["cost"]
    assert event["attributes"].get("gen_ai.request.temperature") is None


def test_an_operation_name_that_is_not_text_skips_the_span(relay: RelayProcess) -> None:
    operation = {"key": "gen_ai.operation.name", "value": {"arrayValue": {"values": []}}}
    body = otlp_json_span(os.urandom(16).hex(), [operation])
    response = relay.request("POST", "/v1/traces", body, JSON)
    assert response.status == 200, response.data


def llm_cost_total(relay: RelayProcess) -> float:
    text = relay.request("GET", "/metrics").data.decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_cost_usd_total"
    )


def native_event(event_id: str, cost: float) -> dict[str, object]:
    request = fixture_json("native-llm-events-example.json")["requests"][0]["request"]
    (first, *_) = copy.deepcopy(request["body"])
    cost_field = {"total": cost, "currency": "USD", "source": "gateway"}
    return {**first, "event_id": event_id, "trace_id": event_id, "cost": cost_field}


def litellm_payload(call_id: str, cost: float) -> dict[str, object]:
    requests = fixture_json("litellm-standard-logging-payload-example.json")["requests"]
    (payload, *_) = copy.deepcopy(requests[0]["request"]["body"])
    return {**payload, "id": call_id, "litellm_call_id": call_id, "response_cost": cost}


def cost_span(trace_id: str, cost: float) -> dict[str, object]:
    return {
        "traceId": trace_id,
        "spanId": os.urandom(8).hex(),
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
            {"key": "gen_ai.usage.cost", "value": {"doubleValue": cost}},
        ],
    }


def test_a_negative_cost_rejects_its_event_alone_in_every_format(relay: RelayProcess) -> None:
    """Never a 500 after the batch was stored: the event with the impossible cost is rejected
    with the reason, the good one beside it is stored and counted, the counters stay whole."""
    good, bad = os.urandom(16).hex(), os.urandom(16).hex()
    before = llm_cost_total(relay)
    spans = [cost_span(good, 0.25), cost_span(bad, -0.5)]
    otlp = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    answer = relay.request("POST", "/v1/traces", otlp, JSON)
    assert answer.status == 200, answer.data
    assert orjson.loads(answer.data)["partialSuccess"]["rejectedSpans"] == "1"
    native = orjson.dumps([native_event(good[:32], 0.5), native_event(bad[:32], -1.0)])
    answer = relay.request("POST", "/v1/events", native, JSON)
    assert answer.status == 200, answer.data
    assert orjson.loads(answer.data)["accepted"] == 1
    assert "cost.total" in orjson.loads(answer.data)["rejected"][0]["reason"]
    litellm = orjson.dumps([litellm_payload("call-good", 0.125), litellm_payload("call-bad", -2.0)])
    answer = relay.request("POST", "/v1/webhooks/litellm", litellm, JSON)
    assert answer.status == 200, answer.data
    assert orjson.loads(answer.data)["accepted"] == 1
    assert llm_cost_total(relay) - before == pytest.approx(0.25 + 0.5 + 0.125)
    assert relay.running


def test_array_and_kvlist_values_given_as_bare_lists_are_read(relay: RelayProcess) -> None:
    trace_id = os.urandom(16).hex()
    attributes = [
        {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
        {"key": "app.tags", "value": {"arrayValue": [{"stringValue": "a"}, {"intValue": "2"}]}},
        {"key": "app.meta", "value": {"kvlistValue": [{"key": "k", "value": {"boolValue": True}}]}},
    ]
    response = relay.request("POST", "/v1/traces", otlp_json_span(trace_id, attributes), JSON)
    assert response.status == 200, response.data

    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert event["attributes"]["app.tags"] == ["a", 2]
    assert event["attributes"]["app.meta"] == {"k": True}


PLANTED = {
    "authToken": "planted-secret-one-1111",
    "api_key_value": "planted-secret-two-2222",
    "aws_secret_access_key": "planted-secret-three-3333",
    "openai_key": "planted-secret-four-4444",
}


def test_planted_secrets_reach_no_output(relay: RelayProcess) -> None:
    """Credentials under every name form, nested in a kvlist, in a string array, in a URL and in
    the error text never reach the events, the answer, the log or the metrics."""
    trace_id = os.urandom(16).hex()
    nested = {"key": "api_key", "value": {"stringValue": "planted-secret-five-5555"}}
    attributes = [
        {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
        *({"key": k, "value": {"stringValue": v}} for k, v in PLANTED.items()),
        {"key": "llm.invocation_parameters", "value": {"kvlistValue": {"values": [nested]}}},
        {
            "key": "http.request.headers",
            "value": {"arrayValue": {"values": [{"stringValue": "Bearer planted-six-6666"}]}},
        },
        {
            "key": "server.url",
            "value": {"stringValue": "https://bot:planted-seven-7777@proxy.example/v1"},
        },
    ]
    span = {
        "traceId": trace_id,
        "spanId": os.urandom(8).hex(),
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "status": {"code": 2, "message": "denied for Bearer planted-eight-8888"},
        "attributes": attributes,
    }
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    answer = relay.request("POST", "/v1/traces", body, JSON)
    assert answer.status == 200, answer.data

    (event,) = wait_until(lambda: [e for e in relay.events() if e["trace_id"] == trace_id])
    assert event["status"] == "error"
    outputs = [
        relay.events_file.read_text(),
        answer.data.decode(),
        relay.log(),
        relay.request("GET", "/metrics").data.decode(),
        relay.request("GET", "/v1/status").data.decode(),
    ]
    planted = [*PLANTED.values(), "planted-secret-five", "planted-six", "planted-seven"]
    planted.append("planted-eight")
    for secret in planted:
        assert not any(secret in output for output in outputs), secret


def test_a_malformed_http_request_is_logged_as_one_json_line_without_its_bytes(
    relay: RelayProcess,
) -> None:
    """aiohttp's own complaint about a request it cannot parse is a JSON line like every other,
    without a traceback, and without the credential the request carried."""
    token = "planted-malformed-" + os.urandom(6).hex()
    malformed = [
        f"Authorization: Bearer {token}\r\nContent-Length: Bearer {token}\r\n",
        f"Cookie: session={token}\x01\r\n",  # a control character: the parser quotes the line
        f"Authorization: Token {token}\x01\r\n",
    ]
    for headers in malformed:
        request = f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as conn:
            conn.sendall(request)
            assert conn.recv(65536).startswith(b"HTTP/1.0 400")
    lines = wait_until(
        lambda: [line for line in relay.log().splitlines() if "Error handling request" in line][
            len(malformed) - 1 :
        ]
    )
    for line in relay.log().splitlines():
        assert isinstance(orjson.loads(line), dict), line
    assert "BadHttpMessage" in lines[-1]
    assert token not in relay.log()


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"", {}),  # no Content-Type at all
        (b"", {"Content-Type": "text/plain"}),
        (b"not otlp", JSON),
        (b"\x00\x01", {"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}),
    ],
)
def test_a_test_connection_passes_whatever_it_posts_once_the_token_is_right(
    relay: RelayProcess, body: bytes, headers: dict[str, str]
) -> None:
    """OpenRouter saves no destination whose Test Connection failed: with the right token, the
    answer is 2xx whatever the body and its Content-Type; with a wrong one it is 401."""
    test = {"X-Test-Connection": "true", **headers}
    answer = relay.request("POST", "/v1/traces", body, {**test, **AUTH})
    assert answer.status == 200, answer.data
    wrong = {**test, "Authorization": "Bearer not-the-token"}
    assert relay.request("POST", "/v1/traces", body, wrong).status == 401
