"""The OTLP sink (here as the ``tempo`` preset, the relay's first OTLP destination) against a
real OTLP/HTTP peer (ddapm-test-agent) and a scripted one (faults); the generic ``otlp`` sink's
settings and OTEL_* fallbacks at the end. The span encoding is in ``test_otlp_spans.py``, the
presets in ``test_otlp_presets.py``.

The agent decodes what it receives into snake_case dicts (ids base64, int64 as strings), which is
what these tests compare with: every attribute must arrive under its exact name and OTLP value
type, as a TraceQL query such as ``{ span.gen_ai.request.model = "gpt-4o" }`` needs.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from foundation.settings import EnvReader
from schemas import LLMEvent
from sinks import otlp, otlp_spans
from sinks.base import (
    Batch,
    MisconfiguredError,
    PayloadTooLargeError,
    PermanentError,
    RetryableError,
    SendResult,
    Sink,
)
from sinks.http import parse_retry_after
from sinks.otlp import OtlpSink
from sinks.otlp_config import OtlpSinkConfig
from sinks.registry import sink_specs
from tests.helpers.ports import free_port
from tests.helpers.scripted_server import Answer, ScriptedServer
from tests.helpers.test_agent import TestAgent
from tests.helpers.waiting import eventually
from tests.sinks.test_otlp_spans import (
    BASIC_AUTH,
    content_event,
    decoded,
    error_event,
    local_spans,
    openrouter_event,
)

SECRET = BASIC_AUTH.split(":")[1]
PROTOBUF = "application/x-protobuf"


# --- helpers ---------------------------------------------------------------------------------


SPEC = sink_specs()["tempo"]
MakeSink = Callable[..., Awaitable[OtlpSink]]


def tempo_config(environ: dict[str, str]) -> tuple[OtlpSinkConfig, list[str]]:
    """The tempo sink's configuration as the relay reads it (dispatch settings first)."""
    env = EnvReader(environ)
    config = SPEC.read_config(env, Path("data"), SPEC.dispatch_settings(env))
    assert isinstance(config, OtlpSinkConfig)
    return config, env.problems


@pytest.fixture
async def make_sink() -> AsyncIterator[MakeSink]:
    """Started tempo sinks (``RELAY_TEMPO_<KEY>=value`` from keyword arguments), closed after."""
    made: list[OtlpSink] = []

    async def make(endpoint: str, **settings: str) -> OtlpSink:
        environ = {f"RELAY_TEMPO_{key}": value for key, value in settings.items()}
        config, problems = tempo_config({"RELAY_TEMPO_ENDPOINT": endpoint, **environ})
        assert problems == []
        sink = OtlpSink(config)
        made.append(sink)
        await sink.start()
        return sink

    yield make
    for sink in made:
        await sink.close()


def traces_url(server: ScriptedServer) -> str:
    return server.url + "/v1/traces"


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1/traces"


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def rpc_status(message: str) -> bytes:
    body: bytes = status_pb2.Status(code=3, message=message).SerializeToString()
    return body


# --- against ddapm-test-agent ------------------------------------------------------------------


async def test_tenant_and_basic_auth_headers_reach_the_peer(
    test_agent: TestAgent, make_sink: MakeSink
) -> None:
    token = test_agent.new_session()
    sink = await make_sink(
        test_agent.otlp_url + "/v1/traces",
        HEADERS=f"X-Datadog-Test-Session-Token={token}",
        TENANT="acme-tempo",
        BASIC_AUTH=BASIC_AUTH,
    )
    await sink.send(Batch.of([openrouter_event()]))

    [request] = await eventually(lambda: test_agent.requests(token, otlp=True), message="request")
    headers = request["headers"]
    assert header(headers, "X-Scope-OrgID") == "acme-tempo"
    assert (
        header(headers, "Authorization")
        == "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode()
    )
    assert header(headers, "Content-Type") == PROTOBUF
    assert header(headers, "Content-Encoding") == "gzip"
    assert request["url"].endswith("/v1/traces")


async def test_probe_accepted_by_the_agent(test_agent: TestAgent, make_sink: MakeSink) -> None:
    token = test_agent.new_session()
    url = test_agent.otlp_url + "/v1/traces"
    sink = await make_sink(
        url, HEADERS=f"X-Datadog-Test-Session-Token={token}", BASIC_AUTH=BASIC_AUTH
    )
    result = await sink.probe()
    assert result.ok
    assert result.message == f"Tempo: accepted an empty export at {url}"
    assert SECRET not in str(result)


# --- the request on the wire (scripted peer) -------------------------------------------------


async def test_request_is_gzip_protobuf_with_the_spans(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(traces_url(scripted_server), HEADERS="X-Extra=1")
    events = [openrouter_event(), error_event()]
    assert await sink.send(Batch.of(events)) is None

    [received] = scripted_server.requests
    assert received.method == "POST"
    assert received.path == "/v1/traces"
    assert received.headers["Content-Type"] == PROTOBUF
    assert received.headers["Content-Encoding"] == "gzip"
    assert received.headers["X-Extra"] == "1"
    assert "X-Scope-OrgID" not in received.headers
    assert "Authorization" not in received.headers
    assert received.raw[:2] == b"\x1f\x8b"  # gzip magic: compressed on the wire
    request = decoded(received.body)
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(s.name, s.kind, s.trace_id.hex(), s.span_id.hex()) for s in spans] == [
        (
            "chat anthropic/claude-sonnet-4",
            Span.SPAN_KIND_CLIENT,
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ),
        (
            "chat gpt-4o",
            Span.SPAN_KIND_CLIENT,
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
        ),
    ]


async def test_large_batches_are_encoded_off_the_event_loop(
    scripted_server: ScriptedServer,
    make_sink: MakeSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    encode = otlp_spans.encode_request

    def recording(events: Sequence[LLMEvent], resource: Mapping[str, Any] | None = None) -> bytes:
        threads.append(threading.get_ident())
        return encode(events, resource)

    monkeypatch.setattr(otlp, "encode_request", recording)
    sink = await make_sink(traces_url(scripted_server))
    await sink.send(Batch.of([openrouter_event()]))
    await sink.send(Batch.of([openrouter_event()] * otlp.THREAD_THRESHOLD * 2))
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread
    assert threads[1] != loop_thread
    assert len(local_spans([openrouter_event()] * 512)) == 512


# --- how answers are classified --------------------------------------------------------------


async def test_429_retry_after_seconds(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(Answer(429, b"slow down", {"Retry-After": "7"}, "text/plain"))
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(RetryableError) as caught:
        await sink.send(Batch.of([openrouter_event()]))
    assert caught.value.retry_after == 7
    assert "429" in str(caught.value)
    assert "slow down" in str(caught.value)


async def test_retry_after_as_http_date(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    scripted_server.answer_next(Answer(503, headers={"Retry-After": when}))
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(RetryableError) as caught:
        await sink.send(Batch.of([openrouter_event()]))
    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 120


def test_retry_after_parsing_edges() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now


async def test_503_storm_then_recovery(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(*[Answer(503, b"unavailable", content_type="text/plain")] * 5)
    sink = await make_sink(traces_url(scripted_server))
    for _ in range(5):
        with pytest.raises(RetryableError) as caught:
            await sink.send(Batch.of([openrouter_event()]))
        assert caught.value.retry_after is None
    assert await sink.send(Batch.of([openrouter_event()])) is None
    assert len(scripted_server.requests) == 6


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_errors_are_retryable(
    status: int, scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(
        Answer(status, b"<html>bad gateway</html>", content_type="text/html")
    )
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(RetryableError, match=str(status)):
        await sink.send(Batch.of([openrouter_event()]))


async def test_connection_refused_is_retryable(make_sink: MakeSink) -> None:
    url = closed_port_url()
    sink = await make_sink(url)
    with pytest.raises(RetryableError) as caught:
        await sink.send(Batch.of([openrouter_event()]))
    assert str(caught.value) == f"Tempo: cannot reach {url}: connection refused"
    assert caught.value.retry_after is None


async def test_hanging_peer_times_out_as_retryable(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.hold()
    started = time.monotonic()
    sink = await make_sink(traces_url(scripted_server), TIMEOUT="0.3")
    with pytest.raises(RetryableError, match=r"no answer within 0\.3s"):
        await sink.send(Batch.of([openrouter_event()]))
    assert time.monotonic() - started < 5
    assert len(scripted_server.requests) == 1


async def test_413_asks_for_a_split(scripted_server: ScriptedServer, make_sink: MakeSink) -> None:
    scripted_server.answer_next(Answer(413, rpc_status("request too large"), content_type=PROTOBUF))
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(PayloadTooLargeError, match="request too large"):
        await sink.send(Batch.of([openrouter_event()]))


async def test_grafana_cloud_size_429_asks_for_a_split(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    # As grafana/tempo#3831 quotes Grafana Cloud's answer to an oversize message.
    message = "grpc: received message after decompression larger than max (15728641 vs. 15728640)"
    scripted_server.answer_next(Answer(429, rpc_status(message), content_type=PROTOBUF))
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(PayloadTooLargeError, match="larger than max"):
        await sink.send(Batch.of([openrouter_event()]))


async def test_partial_success_is_counted_not_raised(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(
            rejected_spans=2, error_message="2 spans older than the ingestion window"
        )
    )
    scripted_server.answer_next(Answer(200, response.SerializeToString(), content_type=PROTOBUF))
    sink = await make_sink(traces_url(scripted_server))
    result = await sink.send(Batch.of([openrouter_event(), error_event(), content_event()]))
    assert result == SendResult(rejected=2, message="2 spans older than the ingestion window")


async def test_400_keeps_the_rpc_status_message(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    message = "trace ID 00000000000000000000000000000000 is invalid"
    scripted_server.answer_next(Answer(400, rpc_status(message), content_type=PROTOBUF))
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(PermanentError) as caught:
        await sink.send(Batch.of([openrouter_event()]))
    assert message in str(caught.value)
    assert caught.value.isolate  # bad data: the dispatcher bisects to find the culprit


async def test_text_error_bodies_are_kept_truncated(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(
        Answer(500, b"RATE_LIMITED: " + b"x" * 5000, content_type="text/plain")
    )
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(PermanentError) as caught:
        await sink.send(Batch.of([openrouter_event()]))
    assert "RATE_LIMITED" in str(caught.value)
    assert len(str(caught.value)) < 500
    assert not caught.value.isolate  # a 5xx is not about particular events


@pytest.mark.parametrize("status", [401, 403])
async def test_bad_credentials_are_a_setting_to_fix_not_bad_events(
    status: int, scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(Answer(status, b"invalid credentials", content_type="text/plain"))
    url = traces_url(scripted_server)
    sink = await make_sink(url, BASIC_AUTH=BASIC_AUTH)
    with pytest.raises(MisconfiguredError) as caught:
        await sink.send(Batch.of([openrouter_event()]))
    text = str(caught.value)
    assert url in text
    assert "RELAY_TEMPO_BASIC_AUTH" in text
    assert SECRET not in text
    assert scripted_server.requests[0].headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    "answer",
    [
        Answer(404, b"404 page not found", content_type="text/plain"),
        Answer(308, headers={"Location": "https://tempo.example/v1/traces"}),
    ],
)
async def test_wrong_endpoint_points_at_the_setting(
    answer: Answer, scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(answer)
    sink = await make_sink(traces_url(scripted_server))
    with pytest.raises(MisconfiguredError, match="RELAY_TEMPO_ENDPOINT"):
        await sink.send(Batch.of([openrouter_event()]))
    assert len(scripted_server.requests) == 1  # the redirect was not followed


async def test_an_empty_batch_sends_nothing(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(traces_url(scripted_server))
    assert await sink.send(Batch.of([])) is None
    assert scripted_server.requests == []


# --- setup check -------------------------------------------------------------------------------


async def test_probe_reports_bad_credentials(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(Answer(401, b"authentication error", content_type="text/plain"))
    url = traces_url(scripted_server)
    sink = await make_sink(url, BASIC_AUTH=BASIC_AUTH)
    result = await sink.probe()
    assert not result.ok
    # The words a send's failure has: status, URL, the peer's message, what to check.
    assert result.message.startswith(
        f"Tempo: 401 from {url}: authentication error; check RELAY_TEMPO_BASIC_AUTH"
    )
    assert SECRET not in str(result)
    [received] = scripted_server.requests
    assert len(decoded(received.body).resource_spans) == 0  # an empty export, nothing stored


async def test_probe_reports_an_unreachable_endpoint(make_sink: MakeSink) -> None:
    url = closed_port_url()
    sink = await make_sink(url, BASIC_AUTH=BASIC_AUTH)
    result = await sink.probe()
    assert not result.ok
    assert result.message == f"Tempo: cannot reach {url}: connection refused"
    assert SECRET not in str(result)


async def test_probe_reports_other_statuses_with_the_server_message(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    scripted_server.answer_next(
        Answer(500, rpc_status("ingester unavailable"), content_type=PROTOBUF)
    )
    url = traces_url(scripted_server)
    sink = await make_sink(url)
    result = await sink.probe()
    assert not result.ok
    assert result.message == f"Tempo: 500 from {url}: ingester unavailable"


# --- lifecycle and configuration --------------------------------------------------------------


async def test_start_and_close_are_idempotent(scripted_server: ScriptedServer) -> None:
    sink = OtlpSink(OtlpSinkConfig(endpoint=traces_url(scripted_server)))
    assert isinstance(sink, Sink)
    await sink.close()  # without start
    await sink.start()
    await sink.start()
    assert await sink.send(Batch.of([openrouter_event()])) is None
    await sink.close()
    await sink.close()


async def test_a_send_before_start_is_a_bug_naming_the_sink(
    scripted_server: ScriptedServer,
) -> None:
    sink = OtlpSink(OtlpSinkConfig(endpoint=traces_url(scripted_server), name="tempo"))
    with pytest.raises(RuntimeError, match="the tempo sink was sent a batch before start"):
        await sink.send(Batch.of([openrouter_event()]))
    assert scripted_server.requests == []


def test_default_config_from_only_the_endpoint() -> None:
    config, problems = tempo_config({"RELAY_TEMPO_ENDPOINT": "http://tempo:4318/v1/traces"})
    assert problems == []
    assert config.endpoint == "http://tempo:4318/v1/traces"
    assert (config.name, config.title, config.preset) == ("tempo", "Tempo", "tempo")
    assert (config.headers, config.basic_auth, config.compression) == ({}, None, "gzip")
    assert config.timeout == 10.0
    assert config.endpoints() == {"RELAY_TEMPO_ENDPOINT": "http://tempo:4318/v1/traces"}
    assert isinstance(SPEC.build(config), Sink)
    assert SPEC.name == "tempo"
    assert (SPEC.defaults.batch_size, SPEC.defaults.batch_max_bytes) == (512, 4 * 1024 * 1024)
    assert SPEC.defaults.flush_interval == 1.0


def test_full_config_and_masked_description() -> None:
    config, problems = tempo_config(
        {
            "RELAY_TEMPO_ENDPOINT": "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/traces",
            "RELAY_TEMPO_HEADERS": "X-Team=llm,X-Api-Key=k%3Dsecret",
            "RELAY_TEMPO_TENANT": "acme",
            "RELAY_TEMPO_BASIC_AUTH": BASIC_AUTH,
            "RELAY_TEMPO_TIMEOUT": "2.5",
        }
    )
    assert problems == []
    assert config.headers == {"X-Team": "llm", "X-Api-Key": "k=secret", "X-Scope-OrgID": "acme"}
    assert (config.basic_auth, config.timeout) == (BASIC_AUTH, 2.5)
    described = config.describe()
    assert described["basic_auth"] == "***"
    assert described["headers"] == {"X-Team": "***", "X-Api-Key": "***", "X-Scope-OrgID": "***"}
    assert described["settings"] == {"RELAY_TEMPO_TENANT": "acme"}
    assert SECRET not in repr(described)
    assert "k=secret" not in repr(described)


def test_the_tenant_setting_wins_over_a_header_of_the_same_name() -> None:
    config, _ = tempo_config(
        {
            "RELAY_TEMPO_ENDPOINT": "http://tempo:4318/v1/traces",
            "RELAY_TEMPO_HEADERS": "x-scope-orgid=other",
            "RELAY_TEMPO_TENANT": "acme",
        }
    )
    assert config.headers == {"X-Scope-OrgID": "acme"}


def test_missing_endpoint_is_a_problem() -> None:
    _, problems = tempo_config({"RELAY_SINKS": "tempo"})
    assert problems == ["RELAY_TEMPO_ENDPOINT: required when tempo is in RELAY_SINKS"]


def test_bad_settings_are_reported_once_without_secrets() -> None:
    _, problems = tempo_config(
        {
            "RELAY_TEMPO_ENDPOINT": "http://123456:pw@tempo:4318/v1/traces",
            "RELAY_TEMPO_BASIC_AUTH": SECRET,
            "RELAY_TEMPO_TIMEOUT": "soon",
            "RELAY_TEMPO_COMPRESSION": "brotli",
        }
    )
    names = [problem.split(":")[0] for problem in problems]
    assert sorted(names) == [
        "RELAY_TEMPO_BASIC_AUTH",
        "RELAY_TEMPO_COMPRESSION",
        "RELAY_TEMPO_ENDPOINT",
        "RELAY_TEMPO_TIMEOUT",
    ]
    assert SECRET not in repr(problems)
    assert "pw" not in repr(problems)


async def test_concurrent_sends_are_all_delivered(
    scripted_server: ScriptedServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(traces_url(scripted_server))
    await asyncio.gather(*(sink.send(Batch.of([openrouter_event()])) for _ in range(5)))
    assert len(scripted_server.requests) == 5


# --- the generic otlp sink: RELAY_OTLP_* over OTEL_EXPORTER_OTLP_* ------------------------------

GENERIC = sink_specs()["otlp"]


def generic_config(environ: dict[str, str]) -> tuple[OtlpSinkConfig, list[str]]:
    env = EnvReader(environ)
    config = GENERIC.read_config(env, Path("data"), GENERIC.dispatch_settings(env))
    assert isinstance(config, OtlpSinkConfig)
    return config, env.problems


EXPLICIT = "http://explicit:4318/v1/traces"
SIGNAL = "http://signal:4318/custom/traces"
BASE = "http://base:4318/prefix"


@pytest.mark.parametrize(
    ("environ", "endpoint", "setting"),
    [
        (
            {
                "RELAY_OTLP_ENDPOINT": EXPLICIT,
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": SIGNAL,
                "OTEL_EXPORTER_OTLP_ENDPOINT": BASE,
            },
            EXPLICIT,
            "RELAY_OTLP_ENDPOINT",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": SIGNAL, "OTEL_EXPORTER_OTLP_ENDPOINT": BASE},
            SIGNAL,  # taken as it is: a signal endpoint is the full URL
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE + "/"},
            BASE + "/v1/traces",  # a base URL: the signal path is appended
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        ({}, "http://localhost:4318/v1/traces", "RELAY_OTLP_ENDPOINT"),
    ],
)
def test_the_endpoint_falls_back_as_opentelemetry_python_resolves_it(
    environ: dict[str, str], endpoint: str, setting: str
) -> None:
    config, problems = generic_config(environ)
    assert problems == []
    assert config.endpoint == endpoint
    assert config.endpoints() == {setting: endpoint}
    assert (config.name, config.title, config.preset) == ("otlp", "OTLP", None)


def test_headers_compression_and_timeout_fall_back_the_same_way() -> None:
    both = {
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-signal=1,x-shared=signal",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-generic=1",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "4",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "7",
    }
    config, problems = generic_config(both)
    assert problems == []
    # The signal-specific variable is taken whole, the generic one ignored (not merged).
    assert config.headers == {"x-signal": "1", "x-shared": "signal"}
    assert (config.compression, config.timeout) == ("none", 4.0)

    generic = {k: v for k, v in both.items() if "TRACES" not in k}
    config, _ = generic_config(generic)
    assert (config.headers, config.compression, config.timeout) == ({"x-generic": "1"}, "gzip", 7)

    explicit = {
        **both,
        "RELAY_OTLP_HEADERS": "x-shared=relay,x-relay=1",
        "RELAY_OTLP_COMPRESSION": "gzip",
        "RELAY_OTLP_TIMEOUT": "2",
    }
    config, _ = generic_config(explicit)
    # RELAY_OTLP_HEADERS laid over the environment's, as a headers argument is in the SDK.
    assert config.headers == {"x-signal": "1", "x-shared": "relay", "x-relay": "1"}
    assert (config.compression, config.timeout) == ("gzip", 2.0)
    assert GENERIC.dispatch_settings(EnvReader(explicit)).timeout == 2.0  # one timeout, one home


def test_bad_otel_values_name_their_variable() -> None:
    _, problems = generic_config(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",  # milliseconds: opentelemetry-python reads s
        }
    )
    assert sorted(p.split(":")[0] for p in problems) == [
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]


def test_the_generic_sink_starts_from_a_preset() -> None:
    config, problems = generic_config(
        {
            "RELAY_OTLP_PRESET": "phoenix",
            "RELAY_OTLP_PROJECT": "gateways",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-extra=1",
        }
    )
    assert problems == []
    assert config.endpoint == "http://localhost:6006/v1/traces"  # the preset's default
    assert config.headers == {"x-extra": "1", "x-project-name": "gateways"}
    assert (config.name, config.title, config.preset) == ("otlp", "Phoenix", "phoenix")
    assert config.settings == {"RELAY_OTLP_PROJECT": "gateways", "RELAY_OTLP_API_KEY": None}
    # The OTEL_* fallbacks still come first: only the default is the preset's.
    config, _ = generic_config(
        {"RELAY_OTLP_PRESET": "phoenix", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://phoenix:6006"}
    )
    assert config.endpoint == "http://phoenix:6006/v1/traces"

    _, problems = generic_config({"RELAY_OTLP_PRESET": "zipkin"})
    assert problems == [
        "RELAY_OTLP_PRESET: unknown preset 'zipkin' "
        "(known: tempo, grafana_cloud, phoenix, langfuse, honeycomb)"
    ]


async def test_uncompressed_requests_carry_no_content_encoding(
    scripted_server: ScriptedServer,
) -> None:
    config, _ = generic_config(
        {"RELAY_OTLP_ENDPOINT": traces_url(scripted_server), "RELAY_OTLP_COMPRESSION": "none"}
    )
    sink = OtlpSink(config)
    await sink.start()
    try:
        assert await sink.send(Batch.of([openrouter_event()])) is None
        assert (await sink.probe()).ok
    finally:
        await sink.close()
    sent, probed = scripted_server.requests
    assert "Content-Encoding" not in sent.headers
    assert sent.raw == sent.body and len(decoded(sent.raw).resource_spans) == 1
    assert probed.raw == b""  # an empty ExportTraceServiceRequest
