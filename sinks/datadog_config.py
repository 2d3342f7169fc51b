"""The Datadog sink's configuration: site, mode, key, ml_app and limits, read from the environment.

``DD_*`` variables are Datadog's own names (as ddtrace reads them); ``RELAY_DATADOG_*`` are the
relay's. In OTLP mode the configuration becomes the OTLP sink's (``DatadogSinkConfig.otlp``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from foundation.settings import EnvReader, mask
from sinks import datadog_otlp
from sinks.base import DispatchSettings
from sinks.datadog_format import Mode, SpanFormat
from sinks.http import Hints
from sinks.otlp_config import OtlpSinkConfig

# Sites that serve LLM Observability. The US1-FED (gov) sites do not.
SITES: Final = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
)
SPANS_PATH: Final = "/api/intake/llm-obs/v1/trace/spans"
AGENT_SPANS_PATH: Final = "/evp_proxy/v2/api/v2/llmobs"
# The intake refuses spans more than 24 hours old. Stop an hour short so a batch in flight is not
# refused on arrival.
MAX_EVENT_AGE: Final = 23 * 3600.0

DEFAULTS: Final = DispatchSettings(
    batch_size=500,
    batch_max_bytes=3 * 1024 * 1024,  # leaves room under the 4 MB body limit once encoded
    flush_interval=1.0,
    max_retry_time=MAX_EVENT_AGE,
    timeout=10.0,
    max_event_age=MAX_EVENT_AGE,
)


def site_problem(site: str, *, custom_url: bool) -> str | None:
    """Why ``DD_SITE`` cannot carry LLM Observability, or None."""
    if site.endswith("ddog-gov.com"):
        return (
            f"Datadog LLM Observability is not available on the government site {site!r} "
            f"(US1-FED); use one of: {', '.join(SITES)}"
        )
    if "://" in site or site.startswith(("app.", "api.")) or "/" in site:
        return f"expected the site parameter alone, such as datadoghq.eu, got {site!r}"
    if site not in SITES and not custom_url:
        return (
            f"unknown Datadog site {site!r}; LLM Observability is served on: {', '.join(SITES)} "
            "(set RELAY_DATADOG_URL to reach a site not listed)"
        )
    return None


# Defaults, used by the dataclass and the loader alike.
DEFAULT_SITE: Final = "datadoghq.com"
DEFAULT_AGENT_URL: Final = "http://localhost:8126"
DEFAULT_MAX_PAYLOAD_BYTES: Final = 4_000_000  # the intake's 5 MB limit, with room to spare
DEFAULT_MAX_SPAN_BYTES: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class DatadogSinkConfig:
    ml_app: str
    mode: Mode | Literal["otlp"] = "agentless"
    api_key: str | None = None
    site: str = DEFAULT_SITE
    base_url: str = f"https://api.{DEFAULT_SITE}"
    headers: Mapping[str, str] = field(default_factory=dict)
    env: str | None = None
    service: str | None = None
    version: str | None = None
    tags: tuple[str, ...] = ()
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_span_bytes: int = DEFAULT_MAX_SPAN_BYTES
    timeout: float = DEFAULTS.timeout
    custom_url: bool = False  # RELAY_DATADOG_URL replaced the site's own URL

    @classmethod
    def from_env(
        cls, env: EnvReader, data_dir: Path, dispatch: DispatchSettings = DEFAULTS
    ) -> DatadogSinkConfig:
        mode = env.choice("RELAY_DATADOG_MODE", "agentless", ("agentless", "agent", "otlp"))
        custom_url = env.url("RELAY_DATADOG_URL")
        site = (env.text("DD_SITE") or DEFAULT_SITE).lower()
        if problem := site_problem(site, custom_url=custom_url is not None):
            env.problem("DD_SITE", problem)
        api_key = env.text("DD_API_KEY")
        if mode != "agent" and not api_key:
            env.problem(
                "DD_API_KEY",
                f"required by the datadog sink in {mode} mode "
                "(or set RELAY_DATADOG_MODE=agent to send through a local Datadog Agent)",
            )
        ml_app = env.text("DD_LLMOBS_ML_APP") or ""
        if not ml_app:
            env.problem(
                "DD_LLMOBS_ML_APP", "required by the datadog sink: the name spans are filed under"
            )
        elif problem := ml_app_problem(ml_app):
            env.problem("DD_LLMOBS_ML_APP", problem)
        agent_url = env.url("DD_AGENT_URL") or env.url("DD_TRACE_AGENT_URL") or DEFAULT_AGENT_URL
        site_url = {"agent": agent_url, "otlp": datadog_otlp.default_base_url(site)}
        base_url = custom_url or site_url.get(mode, f"https://api.{site}")
        return cls(
            ml_app=ml_app,
            mode=cast(Mode, mode),
            api_key=api_key,
            site=site,
            base_url=base_url.rstrip("/"),
            headers=env.pairs("RELAY_DATADOG_HEADERS"),
            env=env.text("DD_ENV"),
            service=env.text("DD_SERVICE"),
            version=env.text("DD_VERSION"),
            tags=tuple(t for t in re.split(r"[,\s]+", env.text("DD_TAGS") or "") if t),
            max_payload_bytes=env.integer(
                "RELAY_DATADOG_MAX_PAYLOAD_BYTES",
                DEFAULT_MAX_PAYLOAD_BYTES,
                64 * 1024,
                64 * 1024 * 1024,
            ),
            max_span_bytes=env.integer(
                "RELAY_DATADOG_MAX_SPAN_BYTES", DEFAULT_MAX_SPAN_BYTES, 8 * 1024, 64 * 1024 * 1024
            ),
            timeout=dispatch.timeout,  # the dispatcher's deadline, read once by it
            custom_url=custom_url is not None,
        )

    @property
    def intake_url(self) -> str:
        paths = {"agent": AGENT_SPANS_PATH, "otlp": datadog_otlp.TRACES_PATH}
        return self.base_url + paths.get(self.mode, SPANS_PATH)

    def endpoints(self) -> Mapping[str, str]:
        """In OTLP mode the relay must not be its own Datadog (it takes OTLP too)."""
        if self.mode != "otlp":
            return {}
        return {"RELAY_DATADOG_URL" if self.custom_url else "DD_SITE": self.intake_url}

    def otlp(self) -> OtlpSinkConfig:
        """OTLP mode: the OTLP sink's configuration for this site, key and ml_app."""
        return datadog_otlp.otlp_config(
            base_url=self.base_url,
            api_key=self.api_key,
            credentials_hint=self.hints.credentials,
            ml_app=self.ml_app,
            headers=self.headers,
            timeout=self.timeout,
            custom_url=self.custom_url,
        )

    @property
    def hints(self) -> Hints:
        """What to check when the intake refuses every batch alike."""
        if self.mode == "agent":
            return Hints(
                credentials="check the Agent's api_key and site",
                endpoint="the agent has no EVP proxy for LLM Observability (check DD_AGENT_URL)",
            )
        return Hints(
            credentials=f"DD_API_KEY was rejected for site {self.site}: check that the key is "
            f"valid and belongs to an organization on {self.site}",
            endpoint="check RELAY_DATADOG_URL and DD_SITE",
        )

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def span_format(self) -> SpanFormat:
        named = (("env", self.env), ("service", self.service), ("version", self.version))
        return SpanFormat(
            mode=cast(Mode, self.mode),
            ml_app=self.ml_app,
            global_tags=tuple(f"{k}:{v}" for k, v in named if v) + self.tags,
            service=self.service,
            max_span_bytes=self.max_span_bytes,
            max_payload_bytes=self.max_payload_bytes,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "site": self.site,
            "ml_app": self.ml_app,
            "intake": self.intake_url,
            "api_key": mask(self.api_key),
            "headers": {name: mask(value) for name, value in self.headers.items()},
            "env": self.env,
            "service": self.service,
            "tags": list(self.tags),
            "max_payload_bytes": self.max_payload_bytes,
            "max_span_bytes": self.max_span_bytes,
            "timeout": self.timeout,
        }


ML_APP_MAX: Final = 193


def ml_app_problem(name: str) -> str | None:
    """Why ``name`` breaks Datadog's ml_app naming rules, or None."""
    reasons = []
    if len(name) > ML_APP_MAX:
        reasons.append(f"{len(name)} characters, at most {ML_APP_MAX} allowed")
    if name != name.lower():
        reasons.append("upper-case letters")
    bad = sorted({c for c in name if not (c.isalnum() or c in "_-:./")})
    if bad:
        reasons.append("characters " + " ".join(repr(c) for c in bad))
    if "__" in name:
        reasons.append("contiguous underscores")
    if name.endswith("_"):
        reasons.append("a trailing underscore")
    if not reasons:
        return None
    suggestion = re.sub(r"_+", "_", re.sub(r"[^\w\-:./]|_", "_", name.lower()))
    suggestion = suggestion[:ML_APP_MAX].rstrip("_") or "llm-app"
    return (
        f"{name!r} breaks Datadog's ml_app naming rules ({', '.join(reasons)}): use lower-case "
        f"letters, digits and _ - : . / only, at most {ML_APP_MAX} characters, no '__' and no "
        f"trailing '_', e.g. {suggestion!r}"
    )
