"""Datadog's OTLP mode (``RELAY_DATADOG_MODE=otlp``): the OTLP sink pointed at Datadog's own OTLP
traces intake, which files OpenTelemetry GenAI spans into LLM Observability.

Beside the span API (``agentless``, the default) this is the simpler path, with one cost: Datadog
documents no OTLP attribute for a gateway's cost, so it estimates the cost itself.

Checked against https://docs.datadoghq.com/llm_observability/instrumentation/otel_instrumentation
(``OTEL_EXPORTER_OTLP_TRACES_HEADERS=dd-api-key=<KEY>,dd-otlp-source=llmobs``, http/protobuf, the
endpoint being the site's ``otlp_trace_endpoint``, ml_app taken from the root span's service) and
the region table of DataDog/documentation (``assets/scripts/config/regions.config.js``:
``otlp_trace_endpoint`` is ``https://trace.agent.<site>/v1/traces`` on every LLM Observability
site). ``dd_llmobs_enabled`` on the resource follows the docs' late-2026 change recorded in
shared/research/sinks/datadog-llmobs.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sinks.http import Hints
from sinks.otlp_config import OtlpSinkConfig

TRACES_PATH: Final = "/v1/traces"
SOURCE_HEADER: Final = {"dd-otlp-source": "llmobs"}


def default_base_url(site: str) -> str:
    """The OTLP traces intake host of a Datadog site."""
    return f"https://trace.agent.{site}"


def otlp_config(
    *,
    base_url: str,
    api_key: str | None,
    credentials_hint: str,
    ml_app: str,
    headers: Mapping[str, str],
    timeout: float,
    custom_url: bool,
) -> OtlpSinkConfig:
    """The OTLP sink's configuration for Datadog's intake (or RELAY_DATADOG_URL in its place)."""
    endpoint_setting = "RELAY_DATADOG_URL" if custom_url else "DD_SITE"
    return OtlpSinkConfig(
        endpoint=base_url + TRACES_PATH,
        name="datadog",
        title="Datadog",
        # The key and the source marker win over RELAY_DATADOG_HEADERS, as in the other modes.
        headers={**headers, **SOURCE_HEADER, **({"dd-api-key": api_key} if api_key else {})},
        timeout=timeout,
        # LLM Observability files spans under the ml_app named by the root span's service.name;
        # the gateway stays on every span as gen_ai.route.gateway.
        resource={"service.name": ml_app, "dd_llmobs_enabled": True},
        hints=Hints(
            credentials=credentials_hint,
            endpoint=f"check {endpoint_setting} (the OTLP traces intake of the site)",
        ),
        endpoint_setting=endpoint_setting,
        preset="datadog-llmobs",
    )
