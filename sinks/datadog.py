"""Datadog LLM Observability sink: each LLMEvent is one ``llm`` span.

Three ways in. ``agentless`` (default) posts the documented public body to
``https://api.<DD_SITE>/api/intake/llm-obs/v1/trace/spans`` with ``DD-API-KEY``. ``agent`` posts
the body the Datadog tracer sends to a local Agent's EVP proxy
(``<DD_AGENT_URL>/evp_proxy/v2/api/v2/llmobs``), which adds the key itself. ``otlp`` sends
OpenTelemetry GenAI spans to Datadog's OTLP traces intake through the OTLP sink
(``sinks.datadog_otlp``). Encoding lives in ``sinks.datadog_format``. This module reads the
configuration, sends one batch, and says what the answer means (``sinks.http.failure``, with
Datadog's retry rule). Batching, retries and dead letters belong to the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiohttp
import orjson
import structlog
import urllib3

from foundation.version import __version__
from schemas import LLMEvent
from sinks.base import (
    Batch,
    PayloadTooLargeError,
    PermanentError,
    ProbeResult,
    RetryableError,
    SendResult,
    Sink,
    SinkError,
    not_started,
)
from sinks.datadog_config import DEFAULTS, DatadogSinkConfig
from sinks.datadog_format import EncodedBatch, encode_batch
from sinks.http import datadog_retryable, failure, parse_retry_after, transport_failure
from sinks.otlp import OtlpSink
from sinks.spec import SinkSpec

log = structlog.get_logger("relay.sinks.datadog")

AGENT_EVP_ENDPOINT: Final = "/evp_proxy/v2/"
EVP_SUBDOMAIN: Final = "llmobs-intake"
USER_AGENT: Final = f"llm-broadcast-relay/{__version__}"
ERROR_BODY_MAX: Final = 64 * 1024
# Small batches without content encode in microseconds. Anything bigger is encoded in a thread.
INLINE_ENCODE_MAX: Final = 8


class DatadogSink:
    name = "datadog"

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

    async def send(self, batch: Batch) -> SendResult | None:
        session = self._session
        if session is None:
            raise not_started(self.name)
        if not batch:
            return None
        try:
            encoded = await self._encode(batch)
        except (TypeError, ValueError) as error:  # an event no JSON encoder takes: isolate it
            raise PermanentError(f"Datadog: cannot encode the batch: {error}") from error
        if len(encoded.body) > self.config.max_payload_bytes:
            raise PayloadTooLargeError(
                f"Datadog: {len(batch)} spans encode to {len(encoded.body)} bytes, over the "
                f"{self.config.max_payload_bytes}-byte limit (RELAY_DATADOG_MAX_PAYLOAD_BYTES)"
            )
        if encoded.truncated:
            log.warning(
                "datadog.content_truncated",
                spans=encoded.truncated,
                limit=self.config.max_span_bytes,
            )
        try:
            async with session.post(
                self.config.intake_url,
                data=encoded.body,
                headers=self._headers,
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    await response.read()
                    return None
                body = await response.content.read(ERROR_BODY_MAX)
                raise classify(response.status, response.headers, body, self.config)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            why = transport_failure(error, self.config.timeout, "RELAY_DATADOG_TIMEOUT")
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
            message = intake_message(raw)
            said = f"{config.host} answered {error.status} to the key check"
            return self._refused(error.status or 0, said + (f": {message}" if message else ""))
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
                    said = f"agent at {config.base_url} answered {response.status} to /info"
                    return self._refused(response.status, said)
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

    def _refused(self, status: int, said: str) -> ProbeResult:
        """A check the peer answered with a failure: the words a send's failure would have."""
        verdict = failure(
            status,
            f"Datadog: {said}",
            self.config.hints,
            retry_after=None,
            retryable=datadog_retryable,
        )
        return ProbeResult(False, str(verdict), self._facts())

    def _verdict(self, ok: bool, message: str, **details: Any) -> ProbeResult:
        return ProbeResult(ok, f"Datadog: {message}", self._facts(**details))

    def _facts(self, **details: Any) -> dict[str, Any]:
        config = self.config
        return {"mode": config.mode, "site": config.site, "intake": config.intake_url, **details}


def classify(
    status: int, headers: Mapping[str, str], body: bytes, config: DatadogSinkConfig
) -> SinkError:
    """What a non-2xx answer means for the batch: ``sinks.http.failure`` with Datadog's rule."""
    message = intake_message(body)
    where = f"agent at {config.base_url}" if config.mode == "agent" else f"intake {config.base_url}"
    said = f"Datadog: {where} answered {status}" + (f": {message}" if message else "")
    return failure(
        status,
        said,
        config.hints,
        retry_after=retry_after(headers),
        retryable=datadog_retryable,
    )


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


def build(config: DatadogSinkConfig) -> Sink:
    """The span API's sink, or in OTLP mode the OTLP sink aimed at Datadog."""
    if config.mode == "otlp":
        return OtlpSink(config.otlp())
    return DatadogSink(config)


SPEC = SinkSpec(
    name="datadog",
    read_config=DatadogSinkConfig.from_env,
    build=build,
    defaults=DEFAULTS,
)
