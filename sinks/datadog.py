"""Datadog LLM Observability sink: each LLMEvent is one ``llm`` span.

Two ways in. ``agentless`` (default) posts the documented public body to
``https://api.<DD_SITE>/api/intake/llm-obs/v1/trace/spans`` with ``DD-API-KEY``. ``agent`` posts
the body the Datadog tracer sends to a local Agent's EVP proxy
(``<DD_AGENT_URL>/evp_proxy/v2/api/v2/llmobs``), which adds the key itself. Encoding lives in
``sinks.datadog_format``. This module reads the configuration, sends one batch, and says what the
answer means. Batching, retries and dead letters belong to the dispatcher.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
import urllib3

from foundation.settings import EnvReader, mask
from foundation.version import __version__
from schemas import LLMEvent
from sinks.base import (
    DispatchSettings,
    MisconfiguredError,
    PayloadTooLargeError,
    PermanentError,
    ProbeResult,
    RetryableError,
    SendResult,
    SinkError,
)
from sinks.datadog_format import EncodedBatch, Mode, SpanFormat, encode_batch, ml_app_problem
from sinks.http import parse_retry_after, transport_failure
from sinks.registry import SinkSpec

log = structlog.get_logger("relay.sinks.datadog")

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
AGENT_EVP_ENDPOINT: Final = "/evp_proxy/v2/"
EVP_SUBDOMAIN: Final = "llmobs-intake"
USER_AGENT: Final = f"llm-broadcast-relay/{__version__}"
# The intake refuses spans more than 24 hours old. Stop an hour short so a batch in flight is not
# refused on arrival.
MAX_EVENT_AGE: Final = 23 * 3600.0
ERROR_BODY_MAX: Final = 64 * 1024
# Small batches without content encode in microseconds. Anything bigger is encoded in a thread.
INLINE_ENCODE_MAX: Final = 8

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


@dataclass(frozen=True, slots=True)
class DatadogSinkConfig:
    ml_app: str
    mode: Mode = "agentless"
    api_key: str | None = None
    site: str = "datadoghq.com"
    base_url: str = "https://api.datadoghq.com"
    headers: Mapping[str, str] = field(default_factory=dict)
    env: str | None = None
    service: str | None = None
    version: str | None = None
    tags: tuple[str, ...] = ()
    max_payload_bytes: int = 4_000_000
    max_span_bytes: int = 1_000_000
    timeout: float = DEFAULTS.timeout

    @classmethod
    def from_env(cls, env: EnvReader, data_dir: Path) -> DatadogSinkConfig:
        mode = env.choice("RELAY_DATADOG_MODE", "agentless", ("agentless", "agent"))
        custom_url = env.url("RELAY_DATADOG_URL")
        site = (env.text("DD_SITE") or "datadoghq.com").lower()
        if problem := site_problem(site, custom_url=custom_url is not None):
            env.problem("DD_SITE", problem)
        api_key = env.text("DD_API_KEY")
        if mode == "agentless" and not api_key:
            env.problem(
                "DD_API_KEY",
                "required by the datadog sink in agentless mode "
                "(or set RELAY_DATADOG_MODE=agent to send through a local Datadog Agent)",
            )
        ml_app = env.text("DD_LLMOBS_ML_APP") or ""
        if not ml_app:
            env.problem(
                "DD_LLMOBS_ML_APP", "required by the datadog sink: the name spans are filed under"
            )
        elif problem := ml_app_problem(ml_app):
            env.problem("DD_LLMOBS_ML_APP", problem)
        agent_url = (
            env.url("DD_AGENT_URL") or env.url("DD_TRACE_AGENT_URL") or "http://localhost:8126"
        )
        base_url = custom_url or (agent_url if mode == "agent" else f"https://api.{site}")
        # The dispatcher reads the same variable for its own deadline; a scratch reader keeps a bad
        # value from being reported twice.
        timeout = EnvReader(env.environ).number(
            "RELAY_DATADOG_TIMEOUT", DEFAULTS.timeout, 0.1, 3600.0
        )
        return cls(
            ml_app=ml_app,
            mode=mode,  # type: ignore[arg-type]
            api_key=api_key,
            site=site,
            base_url=base_url.rstrip("/"),
            headers=env.pairs("RELAY_DATADOG_HEADERS"),
            env=env.text("DD_ENV"),
            service=env.text("DD_SERVICE"),
            version=env.text("DD_VERSION"),
            tags=tuple(t for t in re.split(r"[,\s]+", env.text("DD_TAGS") or "") if t),
            max_payload_bytes=env.integer(
                "RELAY_DATADOG_MAX_PAYLOAD_BYTES", 4_000_000, 64 * 1024, 64 * 1024 * 1024
            ),
            max_span_bytes=env.integer(
                "RELAY_DATADOG_MAX_SPAN_BYTES", 1_000_000, 8 * 1024, 64 * 1024 * 1024
            ),
            timeout=timeout,
        )

    @property
    def intake_url(self) -> str:
        return self.base_url + (AGENT_SPANS_PATH if self.mode == "agent" else SPANS_PATH)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def span_format(self) -> SpanFormat:
        named = (("env", self.env), ("service", self.service), ("version", self.version))
        return SpanFormat(
            mode=self.mode,
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


class DatadogSink:
    name: ClassVar[str] = "datadog"

    def __init__(self, config: DatadogSinkConfig) -> None:
        self.config = config
        self._format = config.span_format()
        self._session: aiohttp.ClientSession | None = None
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if config.mode == "agent":
            headers["X-Datadog-EVP-Subdomain"] = EVP_SUBDOMAIN
        elif config.api_key:
            headers["DD-API-KEY"] = config.api_key
        self._headers = {**config.headers, **headers}

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, events: Sequence[LLMEvent]) -> SendResult | None:
        if not events:
            return None
        await self.start()
        assert self._session is not None
        try:
            batch = await self._encode(events)
        except (TypeError, ValueError) as error:  # an event no JSON encoder takes: isolate it
            raise PermanentError(f"Datadog: cannot encode the batch: {error}") from error
        if len(batch.body) > self.config.max_payload_bytes:
            raise PayloadTooLargeError(
                f"Datadog: {len(events)} spans encode to {len(batch.body)} bytes, over the "
                f"{self.config.max_payload_bytes}-byte limit (RELAY_DATADOG_MAX_PAYLOAD_BYTES)"
            )
        if batch.truncated:
            log.warning(
                "datadog.content_truncated", spans=batch.truncated, limit=self.config.max_span_bytes
            )
        try:
            async with self._session.post(
                self.config.intake_url,
                data=batch.body,
                headers=self._headers,
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    await response.read()
                    return None
                body = await response.content.read(ERROR_BODY_MAX)
                raise classify(response.status, response.headers, body, self.config)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            why = transport_failure(error, self.config.timeout)
            raise RetryableError(f"Datadog: cannot reach {self.config.host}: {why}") from error

    async def _encode(self, events: Sequence[LLMEvent]) -> EncodedBatch:
        small = len(events) <= INLINE_ENCODE_MAX and not any(
            "input_messages" in event or "output_messages" in event for event in events
        )
        if small:
            return encode_batch(events, self._format)
        return await asyncio.to_thread(encode_batch, events, self._format)

    async def probe(self) -> ProbeResult:
        if self.config.mode == "agent":
            return await self._probe_agent()
        return await asyncio.to_thread(self._probe_key)

    def _probe_key(self) -> ProbeResult:
        """Validate the key with the Datadog API client (blocking: runs in a thread)."""
        from datadog_api_client import ApiClient, Configuration
        from datadog_api_client.exceptions import (
            ApiException,
            ForbiddenException,
            UnauthorizedException,
        )
        from datadog_api_client.v1.api.authentication_api import AuthenticationApi

        config = self.config
        configuration = Configuration(  # type: ignore[no-untyped-call]
            host=config.base_url,
            request_timeout=config.timeout,
            retry_policy=urllib3.util.Retry(total=0, raise_on_status=False),
        )
        configuration.api_key["apiKeyAuth"] = config.api_key or ""
        try:
            with ApiClient(configuration) as client:
                answer = AuthenticationApi(client).validate()  # type: ignore[no-untyped-call]
        except (UnauthorizedException, ForbiddenException):
            return self._verdict(False, f"API key rejected for site {config.site}")
        except ApiException as error:
            body = error.body
            raw = orjson.dumps(body) if isinstance(body, dict | list) else str(body or "").encode()
            said = f"{error.status}: {intake_message(raw)}".rstrip(": ")
            return self._verdict(False, f"{config.host} answered {said} to the key check")
        except (urllib3.exceptions.HTTPError, OSError) as error:
            return self._verdict(
                False, f"cannot reach {config.host}: {transport_failure(error, config.timeout)}"
            )
        if not getattr(answer, "valid", False):
            return self._verdict(False, f"API key rejected for site {config.site}")
        return self._verdict(
            True,
            f"API key valid for site {config.site}; spans go to {config.intake_url} "
            f"as ml_app {config.ml_app}",
        )

    async def _probe_agent(self) -> ProbeResult:
        """The Agent answers ``/info`` and lists its EVP proxy, through which the spans go."""
        config = self.config
        timeout = aiohttp.ClientTimeout(total=min(config.timeout, 10.0))
        session = self._session or aiohttp.ClientSession()
        try:
            async with session.get(config.base_url + "/info", timeout=timeout) as response:
                if response.status != 200:
                    return self._verdict(
                        False, f"agent at {config.base_url} answered {response.status} to /info"
                    )
                info = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return self._verdict(
                False, f"cannot reach {config.host}: {transport_failure(error, timeout.total)}"
            )
        except ValueError:
            return self._verdict(False, f"{config.base_url}/info is not a Datadog Agent's answer")
        finally:
            if session is not self._session:
                await session.close()
        info = info if isinstance(info, dict) else {}
        version = info.get("version")
        if AGENT_EVP_ENDPOINT not in (info.get("endpoints") or ()):
            return self._verdict(
                False,
                f"the agent at {config.base_url} does not list {AGENT_EVP_ENDPOINT} in /info: its "
                "EVP proxy is off or the Agent is too old to carry LLM Observability",
                agent_version=version,
            )
        return self._verdict(
            True,
            f"agent at {config.base_url} reachable (version {version}) with an EVP proxy; spans "
            f"go to LLM Observability as ml_app {config.ml_app}",
            agent_version=version,
        )

    def _verdict(self, ok: bool, message: str, **details: Any) -> ProbeResult:
        config = self.config
        facts = {"mode": config.mode, "site": config.site, "intake": config.intake_url, **details}
        return ProbeResult(ok, f"Datadog: {message}", facts)


def classify(
    status: int, headers: Mapping[str, str], body: bytes, config: DatadogSinkConfig
) -> SinkError:
    """What a non-2xx answer means for the batch."""
    message = intake_message(body)
    said = f"{status}: {message}" if message else str(status)
    where = f"agent at {config.base_url}" if config.mode == "agent" else f"intake {config.base_url}"
    if status == 413:
        return PayloadTooLargeError(f"Datadog: {where} refused the batch as too large ({said})")
    if status in (408, 429) or (status >= 500 and status != 501):
        return RetryableError(f"Datadog: {where} answered {said}", retry_after(headers))
    if status in (401, 403):
        if config.mode == "agent":
            return MisconfiguredError(
                f"Datadog: {where} refused the spans ({said}); check the Agent's api_key and site"
            )
        return MisconfiguredError(
            f"Datadog: DD_API_KEY was rejected for site {config.site} ({said}); check that the key "
            f"is valid and belongs to an organization on {config.site}"
        )
    if status in (404, 405) or 300 <= status < 400:
        hint = (
            "the agent has no EVP proxy for LLM Observability"
            if config.mode == "agent"
            else "check RELAY_DATADOG_URL and DD_SITE"
        )
        return MisconfiguredError(f"Datadog: {config.intake_url} answered {said}; {hint}")
    return PermanentError(f"Datadog: {where} refused the batch ({said})")


def intake_message(body: bytes) -> str:
    """The reason an intake gave (``{"errors": [...]}`` in Datadog's APIs), short, one line."""
    text = body.decode("utf-8", "replace")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict):
        errors = decoded.get("errors") or decoded.get("error") or decoded.get("message")
        if isinstance(errors, list):
            text = "; ".join(e if isinstance(e, str) else orjson.dumps(e).decode() for e in errors)
        elif errors:
            text = str(errors)
    return " ".join(text.split())[:500]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds or an HTTP-date, else Datadog's ``X-RateLimit-Reset`` seconds."""
    if headers.get("Retry-After"):
        return parse_retry_after(headers["Retry-After"])
    reset = headers.get("X-RateLimit-Reset")
    try:
        return max(0.0, float(reset)) if reset else None
    except ValueError:
        return None


SPEC = SinkSpec(
    name="datadog",
    read_config=DatadogSinkConfig.from_env,
    build=DatadogSink,
    defaults=DEFAULTS,
)
