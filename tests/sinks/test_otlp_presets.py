"""OTLP presets: each builds its vendor's documented endpoint, headers and credentials; several run
at once, each a sink of its own; a new one is a few lines of data.

What a preset sends is asserted where it lands: a scripted OTLP peer on loopback.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from foundation.settings import EnvReader
from service.config import ConfigError, known_variables, load_config
from sinks import otlp, registry
from sinks.base import Batch
from sinks.otlp import OtlpSink
from sinks.otlp_config import OtlpSinkConfig
from sinks.otlp_presets import PRESETS, Preset, Setting
from sinks.registry import sink_specs
from tests.helpers.otlp_peer import OK, span_attributes
from tests.helpers.payloads import otlp_json_spans, span_ids, stored_event
from tests.helpers.relay import RelayProcess
from tests.helpers.scripted_server import ScriptedServer
from tests.helpers.waiting import eventually


def read(name: str, environ: dict[str, str]) -> tuple[OtlpSinkConfig, list[str]]:
    """A sink's configuration as the relay reads it."""
    spec = sink_specs()[name]
    env = EnvReader(environ)
    config = spec.read_config(env, Path("data"), spec.dispatch_settings(env))
    assert isinstance(config, OtlpSinkConfig)
    return config, env.problems


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


# (preset, its settings with the peer's URL in place of the vendor's, the path and headers that
# must arrive, the default endpoint with the vendor's own URL)
CASES = [
    (
        "tempo",
        {"ENDPOINT": "{url}/v1/traces", "TENANT": "acme"},
        "/v1/traces",
        {"X-Scope-OrgID": "acme"},
        None,
    ),
    (
        "grafana_cloud",
        {"ENDPOINT": "{url}/otlp/v1/traces", "INSTANCE_ID": "123456", "TOKEN": "glc_secret"},
        "/otlp/v1/traces",
        {"Authorization": basic("123456:glc_secret")},
        "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/traces",
    ),
    (
        "phoenix",
        {"ENDPOINT": "{url}/v1/traces", "PROJECT": "gateways", "API_KEY": "phx_secret"},
        "/v1/traces",
        {"x-project-name": "gateways", "Authorization": "Bearer phx_secret"},
        "http://localhost:6006/v1/traces",
    ),
    (
        "langfuse",
        {"HOST": "{url}", "PUBLIC_KEY": "pk-lf-1", "SECRET_KEY": "sk-lf-secret"},
        "/api/public/otel/v1/traces",
        {
            "Authorization": basic("pk-lf-1:sk-lf-secret"),
            "x-langfuse-ingestion-version": "4",
        },
        "https://cloud.langfuse.com/api/public/otel/v1/traces",
    ),
    (
        "honeycomb",
        {"ENDPOINT": "{url}/v1/traces", "API_KEY": "hc_secret", "DATASET": "llm"},
        "/v1/traces",
        {"x-honeycomb-team": "hc_secret", "x-honeycomb-dataset": "llm"},
        "https://api.honeycomb.io/v1/traces",
    ),
]


def test_every_preset_has_a_case() -> None:
    assert [case[0] for case in CASES] == [preset.name for preset in PRESETS]


@pytest.mark.parametrize(
    ("name", "settings", "path", "headers", "default"), CASES, ids=[c[0] for c in CASES]
)
async def test_each_preset_sends_what_its_vendor_documents(
    scripted_server: ScriptedServer,
    name: str,
    settings: dict[str, str],
    path: str,
    headers: dict[str, str],
    default: str | None,
) -> None:
    scripted_server.default = OK
    prefix = f"RELAY_{name.upper()}_"
    environ = {prefix + k: v.format(url=scripted_server.url) for k, v in settings.items()}
    config, problems = read(name, environ)
    assert problems == []
    sink = OtlpSink(config)
    await sink.start()
    try:
        assert await sink.send(Batch.of([stored_event(1)])) is None
    finally:
        await sink.close()
    (received,) = scripted_server.requests
    assert received.path == path
    for header, value in headers.items():
        assert received.headers[header] == value
    assert received.headers["Content-Type"] == "application/x-protobuf"
    assert received.headers["Content-Encoding"] == "gzip"
    assert [a["relay.event_id"] for a in span_attributes(received.body)] == ["e000001"]
    described = orjson.dumps(config.describe()).decode()
    assert "secret" not in described  # tokens and keys are masked in the start-up log

    if default is not None:  # the vendor's own endpoint when none is given
        vendor = {k: v for k, v in environ.items() if not k.endswith(("_ENDPOINT", "_HOST"))}
        if name == "grafana_cloud":
            vendor[prefix + "ZONE"] = "prod-eu-west-2"
        config, problems = read(name, vendor)
        assert problems == []
        assert config.endpoint == default


def test_presets_never_read_otel_variables() -> None:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer other",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
    }
    config, problems = read("phoenix", otel)
    assert problems == []
    assert config.endpoint == "http://localhost:6006/v1/traces"
    assert (config.headers, config.compression) == ({}, "gzip")


def test_a_constant_vendor_header_yields_to_relay_headers_a_setting_does_not() -> None:
    config, _ = read(
        "langfuse",
        {
            "RELAY_LANGFUSE_PUBLIC_KEY": "pk",
            "RELAY_LANGFUSE_SECRET_KEY": "sk",
            "RELAY_LANGFUSE_HEADERS": "X-Langfuse-Ingestion-Version=3",
        },
    )
    assert config.headers == {"X-Langfuse-Ingestion-Version": "3"}
    config, _ = read(
        "phoenix",
        {"RELAY_PHOENIX_PROJECT": "mine", "RELAY_PHOENIX_HEADERS": "x-project-name=other"},
    )
    assert config.headers == {"x-project-name": "mine"}


@pytest.mark.parametrize(
    ("name", "environ", "problems"),
    [
        (
            "grafana_cloud",
            {},
            [
                "RELAY_GRAFANA_CLOUD_BASIC_AUTH: required by grafana_cloud: set it, or "
                "RELAY_GRAFANA_CLOUD_INSTANCE_ID and RELAY_GRAFANA_CLOUD_TOKEN",
                "RELAY_GRAFANA_CLOUD_ENDPOINT: required when grafana_cloud is in RELAY_SINKS "
                "(or set RELAY_GRAFANA_CLOUD_ZONE)",
            ],
        ),
        (
            "langfuse",
            {"RELAY_LANGFUSE_HOST": "langfuse.internal"},
            [
                "RELAY_LANGFUSE_HOST: expected an http:// or https:// URL, got 'langfuse.internal'",
                "RELAY_LANGFUSE_BASIC_AUTH: required by langfuse: set it, or "
                "RELAY_LANGFUSE_PUBLIC_KEY and RELAY_LANGFUSE_SECRET_KEY",
            ],
        ),
        ("honeycomb", {}, ["RELAY_HONEYCOMB_API_KEY: required: an ingest API key"]),
    ],
)
def test_missing_credentials_are_named(
    name: str, environ: dict[str, str], problems: list[str]
) -> None:
    assert read(name, environ)[1] == problems


def test_an_authorization_header_stands_in_for_the_credentials() -> None:
    config, problems = read(
        "grafana_cloud",
        {
            "RELAY_GRAFANA_CLOUD_ZONE": "prod-us-east-0",
            "RELAY_GRAFANA_CLOUD_HEADERS": "Authorization=Basic eA==",
        },
    )
    assert problems == []
    assert config.basic_auth is None and config.headers == {"Authorization": "Basic eA=="}


def test_hints_name_the_presets_own_variables() -> None:
    config, _ = read(
        "langfuse", {"RELAY_LANGFUSE_PUBLIC_KEY": "pk", "RELAY_LANGFUSE_SECRET_KEY": "sk"}
    )
    assert config.hints.credentials.startswith(
        "check RELAY_LANGFUSE_PUBLIC_KEY, RELAY_LANGFUSE_SECRET_KEY, RELAY_LANGFUSE_BASIC_AUTH"
    )
    assert config.hints.endpoint.startswith("check RELAY_LANGFUSE_ENDPOINT or RELAY_LANGFUSE_HOST")
    assert config.endpoints() == {"RELAY_LANGFUSE_HOST": config.endpoint}


# --- a preset that points at the relay itself is refused at start --------------------------------


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"RELAY_SINKS": "otlp"}, "RELAY_OTLP_ENDPOINT"),  # the OTLP default is port 4318 too
        (
            {"RELAY_SINKS": "langfuse", "RELAY_LANGFUSE_HOST": "http://127.0.0.1:4318"},
            "RELAY_LANGFUSE_HOST",
        ),
        (
            {"RELAY_SINKS": "phoenix", "RELAY_PHOENIX_ENDPOINT": "http://localhost:4318/v1/traces"},
            "RELAY_PHOENIX_ENDPOINT",
        ),
        (
            {"RELAY_SINKS": "datadog", "RELAY_DATADOG_MODE": "otlp", "DD_API_KEY": "k"}
            | {"DD_LLMOBS_ML_APP": "app", "RELAY_DATADOG_URL": "http://127.0.0.1:4318"},
            "RELAY_DATADOG_URL",
        ),
    ],
)
def test_an_otlp_destination_that_is_the_relay_itself_is_refused(
    environ: dict[str, str], variable: str, tmp_path: Path
) -> None:
    credentials = {"RELAY_LANGFUSE_PUBLIC_KEY": "pk", "RELAY_LANGFUSE_SECRET_KEY": "sk"}
    with pytest.raises(ConfigError) as refused:
        load_config({"RELAY_DATA_DIR": str(tmp_path), **credentials, **environ})
    (problem,) = refused.value.problems
    assert problem.startswith(f"{variable}: ") and "is this relay itself" in problem


# --- a new preset is a few lines ---------------------------------------------------------------


async def test_a_new_preset_is_a_few_lines_of_data(
    scripted_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    acme = Preset(
        name="acme",
        title="Acme",
        doc="https://docs.acme.invalid/otlp",
        endpoint="{HOST}/ingest/v1/traces",
        settings=(
            Setting("HOST", "the Acme base URL", kind="url"),
            Setting("TOKEN", "an ingest token", secret=True, required=True),
        ),
        headers={"X-Acme-Token": "{TOKEN}", "X-Acme-Format": "otlp"},
    )
    monkeypatch.setitem(registry.SPECS, "acme", otlp.preset_spec(acme))
    assert {"RELAY_ACME_HOST", "RELAY_ACME_TOKEN", "RELAY_ACME_TIMEOUT"} <= known_variables()
    scripted_server.default = OK
    environ = {"RELAY_SINKS": "acme", "RELAY_ACME_HOST": scripted_server.url}
    config = load_config({**environ, "RELAY_ACME_TOKEN": "t0k", "RELAY_DATA_DIR": str(tmp_path)})
    setup = config.sinks["acme"]
    sink = setup.spec.build(setup.config)
    assert sink.name == "acme"
    await sink.start()
    try:
        await sink.send(Batch.of([stored_event(7)]))
    finally:
        await sink.close()
    (received,) = scripted_server.requests
    assert received.path == "/ingest/v1/traces"
    assert (received.headers["X-Acme-Token"], received.headers["X-Acme-Format"]) == ("t0k", "otlp")


# --- several OTLP destinations at once, through the running relay -------------------------------


async def test_two_otlp_sinks_each_receive_every_event(tmp_path: Path) -> None:
    tempo, langfuse = ScriptedServer(default=OK), ScriptedServer(default=OK)
    await tempo.start()
    await langfuse.start()
    env = {
        "RELAY_SINKS": "tempo,langfuse",
        "RELAY_TEMPO_ENDPOINT": tempo.url + "/v1/traces",
        "RELAY_TEMPO_FLUSH_INTERVAL": "0.05",
        "RELAY_LANGFUSE_HOST": langfuse.url,
        "RELAY_LANGFUSE_PUBLIC_KEY": "pk-lf-relay",
        "RELAY_LANGFUSE_SECRET_KEY": "sk-lf-relay",
        "RELAY_LANGFUSE_FLUSH_INTERVAL": "0.05",
    }
    relay = RelayProcess(tmp_path / "data", env)
    await asyncio.to_thread(relay.start)
    try:
        posted: list[str] = []
        for _ in range(3):
            body = otlp_json_spans(4)
            posted += span_ids(body)
            headers = {"Content-Type": "application/json"}
            answer = await asyncio.to_thread(relay.request, "POST", "/v1/traces", body, headers)
            assert answer.status == 200

        def spans_at(server: ScriptedServer) -> list[str]:
            ids = [str(a["span_id"]) for r in server.requests for a in received_spans(r.body)]
            return ids if len(ids) >= len(posted) else []

        assert sorted(await eventually(lambda: spans_at(tempo))) == sorted(posted)
        assert sorted(await eventually(lambda: spans_at(langfuse))) == sorted(posted)
        assert {r.path for r in langfuse.requests} == {"/api/public/otel/v1/traces"}
        assert all(
            r.headers["Authorization"] == basic("pk-lf-relay:sk-lf-relay")
            for r in langfuse.requests
        )
        assert all("Authorization" not in r.headers for r in tempo.requests)

        status = await asyncio.to_thread(relay.get_json, "/v1/status")
        sinks = status["sinks"]
        assert {name: sinks[name]["sent"] for name in ("tempo", "langfuse")} == {
            "tempo": len(posted),
            "langfuse": len(posted),
        }
        metrics = (await asyncio.to_thread(relay.request, "GET", "/metrics")).data.decode()
        assert f'relay_sink_sent_events_total{{sink="langfuse"}} {len(posted)}.0' in metrics
    finally:
        await asyncio.to_thread(relay.stop)
        await tempo.stop()
        await langfuse.stop()


def received_spans(body: bytes) -> list[dict[str, object]]:
    """Each span a peer received, by its id (hex)."""
    request = ExportTraceServiceRequest.FromString(body)
    return [
        {"span_id": span.span_id.hex()}
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
