"""OTLP destinations by name: each preset is a few lines of data, not a module.

A preset says where a vendor's OTLP/HTTP traces endpoint is, which extra settings it takes and
which headers or Basic credentials those become. Each preset is a sink of its own in
``RELAY_SINKS`` (``tempo``, ``langfuse``, ...) with its own ``RELAY_<NAME>_*`` variables, so several
run at once; the generic ``otlp`` sink can also start from one (``RELAY_OTLP_PRESET``). Every preset
sink also takes the generic ``RELAY_<NAME>_ENDPOINT`` / ``_HEADERS`` / ``_BASIC_AUTH`` /
``_COMPRESSION`` (``sinks.otlp_config`` reads them).

Templates: ``endpoint`` and header values may name settings as ``{KEY}``. A header is sent only
when every setting it names is set, and wins over ``RELAY_<NAME>_HEADERS``; a header that names
none is a constant the vendor documents, which ``RELAY_<NAME>_HEADERS`` may override. Each value
below was checked against the vendor page cited beside it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal


@dataclass(frozen=True, slots=True)
class Setting:
    """One extra setting of a preset, read from ``RELAY_<SINK>_<KEY>``."""

    key: str
    meaning: str
    default: str | None = None
    secret: bool = False
    required: bool = False
    kind: Literal["text", "url"] = "text"


@dataclass(frozen=True, slots=True)
class Preset:
    """An OTLP/HTTP traces destination."""

    name: str  # its sink name in RELAY_SINKS, and RELAY_OTLP_PRESET's value
    title: str  # how setup-check and error messages name the destination
    doc: str  # the vendor page its endpoint, headers and credentials were checked against
    endpoint: str | None = None  # the traces URL (a template); None: RELAY_<NAME>_ENDPOINT needed
    settings: tuple[Setting, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # header -> value template
    # (user setting, password setting) for HTTP Basic credentials, when the vendor uses them.
    basic_auth: tuple[str, str] | None = None
    endpoint_note: str = "the full traces URL, e.g. https://host/v1/traces"
    credentials_note: str = ""


def template_keys(template: str) -> list[str]:
    """The settings a template names: ``"Bearer {API_KEY}"`` -> ``["API_KEY"]``."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


# The generic sink without a preset: the OTLP/HTTP default endpoint, nothing else.
# https://opentelemetry.io/docs/specs/otel/protocol/exporter/ (default http://localhost:4318,
# signal path /v1/traces).
GENERIC: Final = Preset(
    name="otlp",
    title="OTLP",
    doc="https://opentelemetry.io/docs/specs/otel/protocol/exporter/",
    endpoint="http://localhost:4318/v1/traces",
)

# Multi-tenant Tempo takes the tenant in X-Scope-OrgID, on OTLP/HTTP as on gRPC:
# https://grafana.com/docs/tempo/latest/operations/multitenancy/
TEMPO: Final = Preset(
    name="tempo",
    title="Tempo",
    doc="https://grafana.com/docs/tempo/latest/operations/multitenancy/",
    settings=(Setting("TENANT", "sent as X-Scope-OrgID (multi-tenant Tempo)"),),
    headers={"X-Scope-OrgID": "{TENANT}"},
    endpoint_note="the full traces URL, e.g. .../otlp/v1/traces",
)

# The stack's OTLP gateway https://otlp-gateway-<zone>.grafana.net/otlp, traces at /v1/traces,
# HTTP Basic with the OTLP instance ID as user and an access policy token as password:
# https://grafana.com/docs/grafana-cloud/send-data/otlp/send-data-otlp/ and
# https://grafana.com/docs/learning-hub/intro-to-agent-observability/07-add-traces-and-metrics/31-two-instance-ids/
GRAFANA_CLOUD: Final = Preset(
    name="grafana_cloud",
    title="Grafana Cloud",
    doc="https://grafana.com/docs/grafana-cloud/send-data/otlp/send-data-otlp/",
    endpoint="https://otlp-gateway-{ZONE}.grafana.net/otlp/v1/traces",
    settings=(
        Setting("ZONE", "the stack's zone, e.g. prod-eu-west-2 (the OpenTelemetry card's URL)"),
        Setting("INSTANCE_ID", "the OpenTelemetry card's instance ID"),
        Setting("TOKEN", "an access policy token with traces:write", secret=True),
    ),
    basic_auth=("INSTANCE_ID", "TOKEN"),
    credentials_note="the token needs traces:write",
)

# Phoenix's OTLP/HTTP collector is http://localhost:6006/v1/traces:
# https://arize.com/docs/phoenix/resources/frequently-asked-questions/what-is-my-phoenix-endpoint
# It files spans under the project named by the x-project-name header, and with auth on takes
# its API key as a bearer token (phoenix/server/api/routers/v1/traces.py, read in arize-phoenix
# 20.x; see shared/research/sinks/phoenix-peer.md).
PHOENIX: Final = Preset(
    name="phoenix",
    title="Phoenix",
    doc="https://arize.com/docs/phoenix/resources/frequently-asked-questions/what-is-my-phoenix-endpoint",
    endpoint="http://localhost:6006/v1/traces",
    settings=(
        Setting("PROJECT", "the Phoenix project spans are filed under (default: default)"),
        Setting("API_KEY", "a Phoenix API key, when its auth is on", secret=True),
    ),
    headers={"x-project-name": "{PROJECT}", "Authorization": "Bearer {API_KEY}"},
)

# Langfuse receives OTLP at <host>/api/public/otel (traces at /v1/traces), Basic auth with the
# public key as user and the secret key as password, and documents the
# x-langfuse-ingestion-version: 4 header for direct exporters:
# https://langfuse.com/docs/opentelemetry/introduction
LANGFUSE: Final = Preset(
    name="langfuse",
    title="Langfuse",
    doc="https://langfuse.com/docs/opentelemetry/introduction",
    endpoint="{HOST}/api/public/otel/v1/traces",
    settings=(
        Setting(
            "HOST",
            "the Langfuse base URL (EU cloud; https://us.cloud.langfuse.com, self-hosted)",
            default="https://cloud.langfuse.com",
            kind="url",
        ),
        Setting("PUBLIC_KEY", "the project's public key (pk-lf-...)"),
        Setting("SECRET_KEY", "the project's secret key (sk-lf-...)", secret=True),
    ),
    headers={"x-langfuse-ingestion-version": "4"},
    basic_auth=("PUBLIC_KEY", "SECRET_KEY"),
)

# Honeycomb's OTLP/HTTP endpoint is https://api.honeycomb.io (EU: api.eu1.honeycomb.io), traces
# at /v1/traces, the ingest key in x-honeycomb-team; Honeycomb Classic also names a dataset in
# x-honeycomb-dataset: https://docs.honeycomb.io/send-data/opentelemetry/
HONEYCOMB: Final = Preset(
    name="honeycomb",
    title="Honeycomb",
    doc="https://docs.honeycomb.io/send-data/opentelemetry/",
    endpoint="https://api.honeycomb.io/v1/traces",
    settings=(
        Setting("API_KEY", "an ingest API key", secret=True, required=True),
        Setting("DATASET", "the dataset (Honeycomb Classic only)"),
    ),
    headers={"x-honeycomb-team": "{API_KEY}", "x-honeycomb-dataset": "{DATASET}"},
    endpoint_note="EU accounts: https://api.eu1.honeycomb.io/v1/traces",
)

PRESETS: Final = (TEMPO, GRAFANA_CLOUD, PHOENIX, LANGFUSE, HONEYCOMB)
BY_NAME: Final = {preset.name: preset for preset in PRESETS}
