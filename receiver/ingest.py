"""The ingest routes: authenticate, read, normalize, process, spool durably, then answer.

The sender gets its 2xx only after the events are in the spool (see ``sinks.spool``), because no
gateway retries well: an acknowledged event must never be lost. Refusals carry Retry-After and
happen only when the relay truly cannot store (spool full, shutting down).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import orjson
import structlog
from aiohttp import web
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from receiver.auth import UNAUTHENTICATED, tenant_for
from receiver.bodies import BodyError, read_body
from receiver.normalizers import litellm, native, otlp, otoroshi
from receiver.normalizers.base import IngestContext, InputError, Normalized, Normalizer
from receiver.normalizers.common import now
from receiver.processors import process
from receiver.relay import Relay
from schemas import LLMEvent
from sinks.spool import SpoolFullError

log = structlog.get_logger("relay.ingest")

RELAY: Final = web.AppKey("relay", Relay)
RETRY_AFTER_SECONDS: Final = "5"
PROTOBUF_TYPES: Final = ("application/x-protobuf", "application/protobuf")


class Refused(Exception):
    def __init__(self, status: int, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    normalizer: Normalizer
    fmt: str


async def _accept(request: web.Request, route: Route) -> Normalized:
    """Everything an ingest request goes through; raises ``Refused`` with the HTTP answer."""
    relay = request.app[RELAY]
    tenant = tenant_for(request.headers.get("Authorization"), relay.config.ingest_tokens)
    if tenant is UNAUTHENTICATED:
        raise Refused(401, "missing or invalid bearer token (see RELAY_INGEST_TOKENS)")
    if relay.draining:
        raise Refused(503, "the relay is shutting down; retry shortly", RETRY_AFTER_SECONDS)
    if relay.spool.full:
        raise Refused(503, "the spool is full (RELAY_SPOOL_MAX_BYTES)", RETRY_AFTER_SECONDS)
    if relay.spool_problem is not None:
        raise Refused(503, "the spool cannot store events now; see /v1/status", RETRY_AFTER_SECONDS)
    try:
        body = await read_body(request, relay.config.max_body_bytes)
    except BodyError as error:
        raise Refused(error.status, str(error)) from None
    received_ns, received_at = now()
    context = IngestContext(received_ns, received_at, request.content_type)
    try:
        result = route.normalizer(body, context)
    except InputError as error:
        raise Refused(400, str(error)) from None
    if result.events:
        process(result.events, tenant if isinstance(tenant, str) else None, relay.config.content)
        bodies = _encoded(result)
        try:
            await relay.spool.append(bodies, result.events)
        except SpoolFullError as error:
            raise Refused(503, str(error), RETRY_AFTER_SECONDS) from None
        relay.metrics.observe_events(result.events)
    for reason, count in result.skipped.items():
        relay.metrics.items_skipped.labels(route.fmt, reason).inc(count)
    if result.rejected:
        relay.metrics.items_rejected.labels(route.name, "invalid_item").inc(len(result.rejected))
        log.info(
            "items_rejected",
            route=route.name,
            count=len(result.rejected),
            first=f"{result.rejected[0].item}: {result.rejected[0].reason}",
        )
    return result


def _encoded(result: Normalized) -> list[bytes]:
    """The events as spooled. One that JSON cannot hold (a value a normalizer let through, such
    as an integer beyond 64 bits) is refused alone rather than failing the whole request."""
    try:
        return [orjson.dumps(event) for event in result.events]
    except orjson.JSONEncodeError:
        pass
    kept: list[LLMEvent] = []
    bodies: list[bytes] = []
    for event in result.events:
        try:
            bodies.append(orjson.dumps(event))
        except orjson.JSONEncodeError as error:
            result.reject(f"event {event.get('event_id')}", f"cannot be stored as JSON: {error}")
            continue
        kept.append(event)
    result.events = kept
    return bodies


def _count_refusal(request: web.Request, route: str, refused: Refused) -> None:
    reason = {401: "unauthorized", 413: "too_large", 415: "unsupported", 503: "unavailable"}
    request.app[RELAY].metrics.items_rejected.labels(
        route, reason.get(refused.status, "malformed")
    ).inc()


# -- OTLP/HTTP -----------------------------------------------------------------------------------

OTLP_PROTO: Final = Route("otlp", otlp.normalize_proto, "otlp-proto")
OTLP_JSON: Final = Route("otlp", otlp.normalize_json, "otlp-json")


async def otlp_traces(request: web.Request) -> web.Response:
    content_type = request.content_type
    is_proto = content_type in PROTOBUF_TYPES
    test_connection = request.headers.get("X-Test-Connection", "").lower() == "true"
    try:
        if not is_proto and content_type != "application/json":
            raise Refused(
                415,
                f"unsupported Content-Type {content_type!r}: OTLP/HTTP takes"
                " application/x-protobuf or application/json",
            )
        try:
            result = await _accept(request, OTLP_PROTO if is_proto else OTLP_JSON)
        except Refused as refused:
            # OpenRouter's Test Connection posts an empty payload; it must pass once auth does.
            if test_connection and refused.status == 400:
                result = Normalized()
            else:
                raise
    except Refused as refused:
        _count_refusal(request, "otlp", refused)
        return _otlp_error(refused, is_proto)
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = len(result.rejected)
        first = result.rejected[0]
        more = f" (and {len(result.rejected) - 1} more)" if len(result.rejected) > 1 else ""
        response.partial_success.error_message = f"{first.item}: {first.reason}{more}"
    if is_proto:
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF_TYPES[0])
    body: dict[str, object] = {}
    if result.rejected:
        body["partialSuccess"] = {
            "rejectedSpans": str(response.partial_success.rejected_spans),
            "errorMessage": response.partial_success.error_message,
        }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _otlp_error(refused: Refused, is_proto: bool) -> web.Response:
    headers = {"Retry-After": refused.retry_after} if refused.retry_after else None
    # google.rpc.Code: 3 INVALID_ARGUMENT, 16 UNAUTHENTICATED, 14 UNAVAILABLE, 8 RESOURCE_EXHAUSTED
    code = {400: 3, 401: 16, 413: 8, 415: 3, 503: 14}.get(refused.status, 2)
    if is_proto:
        status = Status(code=code, message=str(refused))
        return web.Response(
            status=refused.status,
            body=status.SerializeToString(),
            content_type=PROTOBUF_TYPES[0],
            headers=headers,
        )
    return web.Response(
        status=refused.status,
        body=orjson.dumps({"code": code, "message": str(refused)}),
        content_type="application/json",
        headers=headers,
    )


# -- webhooks and native events ------------------------------------------------------------------


def webhook(route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            result = await _accept(request, route)
        except Refused as refused:
            _count_refusal(request, route.name, refused)
            headers = {"Retry-After": refused.retry_after} if refused.retry_after else None
            return web.json_response(
                {"error": str(refused)}, status=refused.status, headers=headers, dumps=_dumps
            )
        body = {
            "accepted": len(result.events),
            "skipped": sum(result.skipped.values()),
            "rejected": [{"item": r.item, "reason": r.reason} for r in result.rejected],
        }
        # Nothing usable at all is the sender's error; a partly usable batch is a success.
        status = 400 if result.rejected and not result.events and not result.skipped else 200
        return web.json_response(body, status=status, dumps=_dumps)

    return handle


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


WEBHOOK_ROUTES: Final = (
    ("/v1/webhooks/otoroshi", Route("otoroshi", otoroshi.normalize, "otoroshi")),
    ("/v1/webhooks/litellm", Route("litellm", litellm.normalize, "litellm")),
    ("/v1/events", Route("events", native.normalize, "native")),
)
