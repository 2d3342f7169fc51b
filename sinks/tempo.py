"""Tempo sink: each LLMEvent as one GenAI span, sent over OTLP/HTTP to Tempo or Grafana Cloud.

A batch becomes one gzip protobuf ``ExportTraceServiceRequest`` POSTed to ``RELAY_TEMPO_ENDPOINT``:
one ``ResourceSpans`` per gateway and tenant (``service.name`` = gateway, ``tenant.id``), scope
``llm-broadcast-relay``. Answers are classified as the OTLP/HTTP specification says: 429/502/503/504
and network errors are retryable (Retry-After honoured), 413 splits the batch, a partial success is
counted and not retried, anything else is permanent.

A span has kind CLIENT, name ``{operation} {request_model}``, the event's own ids and times, and
status ERROR with ``error.type`` (``_OTHER`` when unknown) on failures, unset otherwise. Its
attributes are listed in ``span_attributes``; each is set only when the event has the value:

- GenAI semantic conventions v1.41 names, typed as the spec says (``gen_ai.usage.*`` ints,
  ``gen_ai.response.finish_reasons`` a string array, ``gen_ai.response.time_to_first_chunk`` a
  double in seconds, ``gen_ai.conversation.id`` from ``session_id``). The cache write count is
  v1.41's ``gen_ai.usage.cache_creation.input_tokens``; ``gen_ai.usage.total_tokens`` (OpenRouter's
  name) is the only usage name semconv lacks.
- Cost, in USD, as doubles: ``gen_ai.usage.cost`` (total), ``gen_ai.usage.input_cost`` and
  ``gen_ai.usage.output_cost``. Semconv has no cost attribute; these extend OpenRouter's own
  ``gen_ai.usage.*_cost`` names, and are absent, never 0, when the gateway reported no cost.
- Routing: ``gen_ai.route.gateway``, ``gen_ai.route.upstream``, ``gen_ai.route.api_key.name`` /
  ``.hash``, ``gen_ai.route.rate_limit.<field>``; ``user.id``; ``http.response.status_code``.
- Content: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` as JSON strings, only when the
  event still has them after the content policy.
- Bookkeeping: ``relay.event_id`` (to drop at-least-once duplicates), ``relay.source.format``,
  ``relay.test`` (true on test-button spans, absent otherwise).

Every other ``event.attributes`` key (request parameters and the like, secrets already removed)
is carried under its own name unless it would shadow one of the above.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from foundation.settings import EnvReader, mask
from foundation.times import unix_ns
from foundation.version import __version__
from schemas import LLMEvent
from sinks import otlp_wire
from sinks.base import (
    DispatchSettings,
    MisconfiguredError,
    PayloadTooLargeError,
    PermanentError,
    ProbeResult,
    RetryableError,
    SendResult,
)
from sinks.http import parse_retry_after, transport_failure
from sinks.registry import SinkSpec

# Tempo's distributor takes 4 MiB gRPC messages and Grafana Cloud 15 MiB; 10 s is the OTLP
# exporters' own default timeout.
DEFAULTS: Final = DispatchSettings(
    batch_size=512, batch_max_bytes=4 * 1024 * 1024, flush_interval=1.0, timeout=10.0
)
SCOPE_NAME: Final = "llm-broadcast-relay"
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"
# Encoding costs about 30 µs per event: above this many, it would hold the event loop too long.
THREAD_THRESHOLD: Final = 32
RETRYABLE: Final = frozenset({429, 502, 503, 504})
# Level 1 compresses these payloads nearly as well as 6 (ratio 18.6 vs 19.5) for less CPU.
GZIP_LEVEL: Final = 1
MAX_MESSAGE: Final = 300
AUTH_HINT: Final = "check RELAY_TEMPO_BASIC_AUTH (and any credentials in RELAY_TEMPO_HEADERS)"
ENDPOINT_HINT: Final = "check RELAY_TEMPO_ENDPOINT (the full traces URL, e.g. .../otlp/v1/traces)"


@dataclass(frozen=True, slots=True)
class TempoSinkConfig:
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    tenant: str | None = None
    basic_auth: str | None = None
    timeout: float = DEFAULTS.timeout

    @classmethod
    def from_env(cls, env: EnvReader, data_dir: Path) -> TempoSinkConfig:
        endpoint = env.url("RELAY_TEMPO_ENDPOINT")
        if env.text("RELAY_TEMPO_ENDPOINT") is None:
            env.problem("RELAY_TEMPO_ENDPOINT", "required when tempo is in RELAY_SINKS")
        elif endpoint and urlsplit(endpoint).username is not None:
            # It would be logged with the URL, and aiohttp refuses it beside an Authorization.
            env.problem("RELAY_TEMPO_ENDPOINT", "put credentials in RELAY_TEMPO_BASIC_AUTH instead")
        basic_auth = env.text("RELAY_TEMPO_BASIC_AUTH")
        if basic_auth is not None and ":" not in basic_auth:
            env.problem("RELAY_TEMPO_BASIC_AUTH", "expected <instance id>:<token>")
        # The dispatch settings validate RELAY_TEMPO_TIMEOUT too: a scratch reader keeps a bad
        # value from being reported twice.
        timeout = EnvReader(env.environ).number("RELAY_TEMPO_TIMEOUT", DEFAULTS.timeout, 0.1, 3600)
        return cls(
            endpoint=endpoint or "",
            headers=env.pairs("RELAY_TEMPO_HEADERS"),
            tenant=env.text("RELAY_TEMPO_TENANT"),
            basic_auth=basic_auth,
            timeout=timeout,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": safe_url(self.endpoint),
            "headers": {key: mask(value) for key, value in self.headers.items()},
            "tenant": self.tenant,
            "basic_auth": mask(self.basic_auth),
            "timeout": self.timeout,
        }


def safe_url(url: str) -> str:
    """The endpoint as shown to people: no ``user:password@``, no query that may hold a key."""
    parts = urlsplit(url)
    netloc = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    detail: str
    body: bytes
    retry_after: str | None


class TempoSink:
    name: ClassVar[str] = "tempo"

    def __init__(self, config: TempoSinkConfig) -> None:
        self.config = config
        self.url = safe_url(config.endpoint)
        headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"{SCOPE_NAME}/{__version__}",
        }
        headers.update(config.headers)
        headers["Content-Encoding"] = "gzip"
        if config.tenant:
            headers["X-Scope-OrgID"] = config.tenant
        if config.basic_auth:
            token = base64.b64encode(config.basic_auth.encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, events: Sequence[LLMEvent]) -> SendResult | None:
        if not events:
            return None  # the spec asks senders not to emit empty envelopes
        await self.start()
        assert self._session is not None
        if len(events) > THREAD_THRESHOLD:
            body = await asyncio.to_thread(encode_request, events)
        else:
            body = encode_request(events)
        answer = await self._post(self._session, body)
        status = answer.status
        if 200 <= status < 300:
            return partial_success(answer.body)
        said = f"Tempo answered {status} from {self.url}"
        said += f": {answer.detail}" if answer.detail else ""
        # Grafana Cloud answers 429 to a message over its size limit (grafana/tempo#3831):
        # retrying the same batch can never pass, a split can.
        if status == 413 or (status == 429 and "larger than max" in answer.detail):
            raise PayloadTooLargeError(said)
        if status in RETRYABLE:
            raise RetryableError(said, retry_after=parse_retry_after(answer.retry_after))
        if status in (401, 403):
            raise MisconfiguredError(f"{said}; {AUTH_HINT}")
        if status in (404, 405) or status < 400:  # redirects are not followed: a POST would be lost
            raise MisconfiguredError(f"{said}; {ENDPOINT_HINT}")
        # Only a 4xx can be about some of the events; a 5xx refuses any batch alike.
        raise PermanentError(said, isolate=status < 500)

    async def probe(self) -> ProbeResult:
        """An empty export: proves reachability and credentials without storing anything."""
        body = gzip.compress(ExportTraceServiceRequest().SerializeToString())
        details = {"endpoint": self.url}
        try:
            # A session of its own: the setup check may run where the sink was never started.
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                answer = await self._post(session, body)
        except RetryableError as error:
            return ProbeResult(False, str(error), details)
        status = answer.status
        if 200 <= status < 300:
            return ProbeResult(True, f"Tempo: accepted an empty export at {self.url}", details)
        if status in (401, 403):
            hint = AUTH_HINT
        elif status in (404, 405) or status < 400:
            hint = ENDPOINT_HINT
        else:
            hint = answer.detail or "unexpected answer to an empty export"
        return ProbeResult(False, f"Tempo: {status} from {self.url}: {hint}", details)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> _Answer:
        try:
            async with session.post(
                self.config.endpoint, data=body, headers=self._headers, allow_redirects=False
            ) as got:
                payload = await got.read()
                detail = "" if got.status < 300 else server_message(payload, got.content_type)
                return _Answer(got.status, detail, payload, got.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as error:
            why = transport_failure(error, self.config.timeout, "RELAY_TEMPO_TIMEOUT")
            raise RetryableError(f"Tempo: cannot reach {self.url}: {why}") from error


def partial_success(body: bytes) -> SendResult | None:
    try:
        partial = ExportTraceServiceResponse.FromString(body).partial_success
    except DecodeError:
        return None  # a 2xx is a delivery whatever its body; a garbled one only loses a warning
    if not partial.rejected_spans and not partial.error_message:
        return None
    return SendResult(rejected=partial.rejected_spans, message=partial.error_message[:MAX_MESSAGE])


def server_message(body: bytes, content_type: str) -> str:
    """The peer's own words: a ``google.rpc.Status`` message, else the body's text, truncated."""
    if "protobuf" in content_type:
        try:
            # Status {int32 code = 1; string message = 2; repeated Any details = 3} has the wire
            # shape of ExportTracePartialSuccess {int64; string; ...}: no googleapis dependency.
            return ExportTracePartialSuccess.FromString(body).error_message[:MAX_MESSAGE]
        except DecodeError:
            pass
    return " ".join(body.decode("utf-8", "replace").split())[:MAX_MESSAGE]


def encode_request(events: Sequence[LLMEvent]) -> bytes:
    """The gzip-compressed protobuf ``ExportTraceServiceRequest`` for a batch: one
    ``ResourceSpans`` per gateway and tenant, written by ``sinks.otlp_wire``."""
    groups: dict[tuple[str, str | None], list[bytes]] = {}
    for event in events:
        source: Mapping[str, Any] = event.get("source") or {}
        key = (str(source.get("gateway") or "unknown"), source.get("tenant"))
        try:
            encoded = encode_span(event)
        except (KeyError, ValueError, TypeError) as error:
            # One malformed event: the dispatcher bisects the batch to dead-letter only it.
            event_id = event.get("event_id")
            raise PermanentError(f"cannot encode event {event_id!r}: {error!r}") from error
        groups.setdefault(key, []).append(encoded)
    body = otlp_wire.export_request(
        otlp_wire.resource_spans(
            {"service.name": gateway, "tenant.id": tenant},
            SCOPE_NAME,
            __version__,
            SCHEMA_URL,
            spans,
        )
        for (gateway, tenant), spans in groups.items()
    )
    return gzip.compress(body, compresslevel=GZIP_LEVEL)


def encode_span(event: LLMEvent) -> bytes:
    operation, model = event["operation"], event.get("request_model")
    parent = event.get("parent_span_id")
    error_message = None
    if event.get("status") == "error":
        error_message = event.get("error", {}).get("message", "")[:1024]
    return otlp_wire.span(
        trace_id=bytes.fromhex(event["trace_id"]),
        span_id=bytes.fromhex(event["span_id"]),
        parent_span_id=bytes.fromhex(parent) if parent else None,
        name=f"{operation} {model}" if model else operation,
        kind=otlp_wire.SPAN_KIND_CLIENT,
        start_ns=_time(event["start_time"]),
        end_ns=_time(event["end_time"]),
        attributes=span_attributes(event),
        error_message=error_message,
    )


def _time(text: str) -> int:
    nanos = unix_ns(text)
    if not nanos:
        raise ValueError(f"{text!r} is not an RFC 3339 UTC time")
    return nanos


def span_attributes(event: LLMEvent) -> dict[str, Any]:
    """The mapping in the module docstring; ``None`` means absent and is dropped on encoding."""
    source: Mapping[str, Any] = event.get("source") or {}
    usage: Mapping[str, Any] = event.get("usage", {})
    cost: Mapping[str, Any] = event.get("cost", {})
    api_key: Mapping[str, Any] = event.get("api_key", {})
    ttft = event.get("ttft_ms")
    mapped: dict[str, Any] = {
        "gen_ai.operation.name": event.get("operation"),
        "gen_ai.provider.name": event.get("provider"),
        "gen_ai.request.model": event.get("request_model"),
        "gen_ai.response.model": event.get("response_model"),
        "gen_ai.request.stream": event.get("stream"),
        "gen_ai.usage.input_tokens": usage.get("input_tokens"),
        "gen_ai.usage.output_tokens": usage.get("output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": usage.get("cache_read_input_tokens"),
        "gen_ai.usage.cache_creation.input_tokens": usage.get("cache_write_input_tokens"),
        "gen_ai.usage.reasoning.output_tokens": usage.get("reasoning_output_tokens"),
        "gen_ai.usage.total_tokens": usage.get("total_tokens"),
        "gen_ai.response.finish_reasons": event.get("finish_reasons"),
        "gen_ai.response.time_to_first_chunk": None if ttft is None else ttft / 1000,
        "gen_ai.conversation.id": event.get("session_id"),
        "gen_ai.route.gateway": source.get("gateway"),
        "gen_ai.route.upstream": event.get("upstream"),
        "gen_ai.usage.cost": double(cost.get("total")),
        "gen_ai.usage.input_cost": double(cost.get("input")),
        "gen_ai.usage.output_cost": double(cost.get("output")),
        "gen_ai.route.api_key.name": api_key.get("name"),
        "gen_ai.route.api_key.hash": api_key.get("hash"),
        **{f"gen_ai.route.rate_limit.{k}": v for k, v in event.get("rate_limit", {}).items()},
        "user.id": event.get("user_id"),
        "relay.event_id": event.get("event_id"),
        "relay.source.format": source.get("format"),
        "relay.test": True if source.get("test") else None,
    }
    if event.get("status") == "error":
        error: Mapping[str, Any] = event.get("error", {})
        mapped["error.type"] = error.get("type") or "_OTHER"
        mapped["http.response.status_code"] = error.get("http_status")
    if "input_messages" in event:
        mapped["gen_ai.input.messages"] = orjson.dumps(event["input_messages"]).decode()
    if "output_messages" in event:
        mapped["gen_ai.output.messages"] = orjson.dumps(event["output_messages"]).decode()
    carried = {k: v for k, v in (event.get("attributes") or {}).items() if k not in mapped}
    return carried | mapped


def double(value: float | None) -> float | None:
    """A cost of exactly 1 stays a double, so that TraceQL compares it with other costs."""
    return None if value is None else float(value)


SPEC = SinkSpec(
    name="tempo", read_config=TempoSinkConfig.from_env, build=TempoSink, defaults=DEFAULTS
)
