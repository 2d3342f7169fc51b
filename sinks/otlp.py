"""The OTLP sink: each LLMEvent as one GenAI span, POSTed over OTLP/HTTP to any traces endpoint.

One class serves the generic ``otlp`` sink and every preset (``tempo``, ``langfuse``, ...; see
``sinks.otlp_presets``): only the configuration differs. A batch is one protobuf
``ExportTraceServiceRequest`` (``sinks.otlp_spans``), gzip-compressed unless configured not to be.
Answers mean what the OTLP/HTTP specification says (``sinks.http.failure``): 429/502/503/504 and
network errors are retryable (Retry-After honoured), 413 splits the batch, a partial success is
counted and not retried, anything else is permanent.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from foundation.settings import EnvReader
from foundation.version import __version__
from sinks.base import (
    Batch,
    DispatchSettings,
    ProbeResult,
    RetryableError,
    SendResult,
    SinkError,
    not_started,
)
from sinks.http import failure, otlp_retryable, parse_retry_after, safe_url, transport_failure
from sinks.otlp_config import (
    DEFAULT_TIMEOUT,
    OtlpSinkConfig,
    otel_timeout,
    read_generic,
    read_preset,
)
from sinks.otlp_presets import Preset
from sinks.otlp_spans import SCOPE_NAME, encode_request
from sinks.spec import SinkConfig, SinkSpec

# Tempo's distributor takes 4 MiB gRPC messages and Grafana Cloud 15 MiB.
DEFAULTS: Final = DispatchSettings(
    batch_size=512, batch_max_bytes=4 * 1024 * 1024, flush_interval=1.0, timeout=DEFAULT_TIMEOUT
)
# Encoding costs about 30 µs per event: above this many, it would hold the event loop too long.
THREAD_THRESHOLD: Final = 32
# Level 1 compresses these payloads nearly as well as 6 (ratio 18.6 vs 19.5) for less CPU.
GZIP_LEVEL: Final = 1
MAX_MESSAGE: Final = 300


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    detail: str
    body: bytes
    retry_after: str | None


class OtlpSink:
    """Posts batches to one OTLP/HTTP traces endpoint."""

    def __init__(self, config: OtlpSinkConfig) -> None:
        self.config = config
        self.name = config.name
        self.url = safe_url(config.endpoint)
        headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"{SCOPE_NAME}/{__version__}",
        }
        headers.update(config.headers)
        if config.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
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

    async def send(self, batch: Batch) -> SendResult | None:
        if self._session is None:
            raise not_started(self.name)
        if not batch:
            return None  # the spec asks senders not to emit empty envelopes
        if len(batch) > THREAD_THRESHOLD:
            body = await asyncio.to_thread(self._encode, batch)
        else:
            body = self._encode(batch)
        answer = await self._post(self._session, body)
        if 200 <= answer.status < 300:
            return partial_success(answer.body)
        raise self._failure(answer)

    async def probe(self) -> ProbeResult:
        """An empty export: proves reachability and credentials without storing anything."""
        body = self._compress(b"")  # an ExportTraceServiceRequest without resource spans
        details = {"endpoint": self.url}
        try:
            # A session of its own: the setup check may run where the sink was never started.
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                answer = await self._post(session, body)
        except RetryableError as error:
            return ProbeResult(False, str(error), details)
        if 200 <= answer.status < 300:
            message = f"{self.config.title}: accepted an empty export at {self.url}"
            return ProbeResult(True, message, details)
        # The same words as a send's failure would have.
        return ProbeResult(False, str(self._failure(answer)), details)

    def _encode(self, batch: Batch) -> bytes:
        return self._compress(encode_request(batch, self.config.resource))

    def _compress(self, body: bytes) -> bytes:
        if self.config.compression == "gzip":
            return gzip.compress(body, compresslevel=GZIP_LEVEL)
        return body

    def _failure(self, answer: _Answer) -> SinkError:
        status, detail = answer.status, answer.detail
        said = f"{self.config.title}: {status} from {self.url}" + (f": {detail}" if detail else "")
        return failure(
            status,
            said,
            self.config.hints,
            retry_after=parse_retry_after(answer.retry_after),
            retryable=otlp_retryable,
            # Grafana Cloud answers 429 to a message over its size limit (grafana/tempo#3831).
            too_large=status == 429 and "larger than max" in detail,
        )

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> _Answer:
        try:
            async with session.post(
                self.config.endpoint, data=body, headers=self._headers, allow_redirects=False
            ) as got:
                payload = await got.read()
                detail = "" if got.status < 300 else server_message(payload, got.content_type)
                return _Answer(got.status, detail, payload, got.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as error:
            setting = f"RELAY_{self.name.upper()}_TIMEOUT"
            why = transport_failure(error, self.config.timeout, setting)
            raise RetryableError(f"{self.config.title}: cannot reach {self.url}: {why}") from error


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


def _read_generic(env: EnvReader, data_dir: Path, dispatch: DispatchSettings) -> SinkConfig:
    return read_generic(env, dispatch)


SPEC: Final = SinkSpec(
    name="otlp",
    read_config=_read_generic,
    build=OtlpSink,
    defaults=DEFAULTS,
    environment_defaults=otel_timeout,
)


def preset_spec(preset: Preset) -> SinkSpec:
    """The sink a preset is in RELAY_SINKS: the OTLP sink, configured by the preset."""

    def read(env: EnvReader, data_dir: Path, dispatch: DispatchSettings) -> SinkConfig:
        return read_preset(env, dispatch, preset)

    return SinkSpec(name=preset.name, read_config=read, build=OtlpSink, defaults=DEFAULTS)
