"""The ingest routes, from one table: authenticate, read, normalize, process, store, answer.

Every input is one row of ``INGRESS``: its path, methods, the normalizer for each Content-Type and
the protocol its answers follow (OTLP/HTTP's, or the webhooks' JSON). The sender gets its 2xx only
after the events are stored durably (``Intake.store``), because no gateway retries well: an
acknowledged event must never be lost. Refusals carry Retry-After and happen only when the relay
truly cannot store (spool full or failing, shutting down).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Final, Literal

import orjson
from aiohttp import web
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from foundation.secrets import redact_text
from foundation.times import now
from receiver.auth import UNAUTHENTICATED, tenant_for
from receiver.bodies import BodyError, read_body
from receiver.intake import INTAKE, IntakeFullError
from receiver.normalizers import litellm, native, otlp, otoroshi
from receiver.normalizers.base import (
    IngestContext,
    InputError,
    Normalized,
    Normalizer,
    Rejection,
)
from receiver.processors import process
from schemas import LLMEvent
from schemas.content import ContentPolicy
from schemas.llm_event import SourceFormat
from telemetry import ingest_outcomes as outcomes
from telemetry.logs import debug_enabled

# Every refusal, rejected item and empty body, booked once: metric and rate-limited log line.
INGEST_BOOK: Final = web.AppKey[outcomes.IngestBook]("ingest_book")

RETRY_AFTER_SECONDS: Final = "5"
# Bodies larger than this are normalized on a worker thread: about 30 ms of CPU (OTLP protobuf or
# Otoroshi batches, measured), what one request may hold the loop for; less costs less inline.
OFF_LOOP_BYTES: Final = 256 * 1024
# One thread for them all: under the GIL a second one would not finish them sooner, and each large
# body in the making holds several times its size in memory; the others wait their turn.
_LARGE_BODIES: Final = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large-bodies")
PROTOBUF_TYPES: Final = ("application/x-protobuf", "application/protobuf")
ANY_TYPE: Final = "*"


@dataclass(frozen=True, slots=True)
class Input:
    """One input format: what reads it, and its name in events and metrics."""

    format: SourceFormat
    normalize: Normalizer


@dataclass(frozen=True, slots=True)
class Ingress:
    """One row of the ingress table."""

    path: str
    methods: tuple[str, ...]
    name: str  # the route's label in metrics and logs
    protocol: Literal["otlp", "webhook"]  # how answers and refusals are written
    inputs: Mapping[str, Input]  # by Content-Type; ANY_TYPE takes whatever else comes

    def input_for(self, content_type: str) -> Input | None:
        return self.inputs.get(content_type) or self.inputs.get(ANY_TYPE)


OTLP_PROTO: Final = Input("otlp-proto", otlp.normalize_proto)
OTLP_JSON: Final = Input("otlp-json", otlp.normalize_json)

INGRESS: Final = (
    Ingress(
        "/v1/traces",
        ("POST", "PUT"),
        "otlp",
        "otlp",
        {**dict.fromkeys(PROTOBUF_TYPES, OTLP_PROTO), "application/json": OTLP_JSON},
    ),
    Ingress(
        "/v1/webhooks/otoroshi",
        ("POST",),
        "otoroshi",
        "webhook",
        {ANY_TYPE: Input(otoroshi.FORMAT, otoroshi.normalize)},
    ),
    Ingress(
        "/v1/webhooks/litellm",
        ("POST",),
        "litellm",
        "webhook",
        {ANY_TYPE: Input(litellm.FORMAT, litellm.normalize)},
    ),
    Ingress(
        "/v1/events",
        ("POST",),
        "events",
        "webhook",
        {ANY_TYPE: Input(native.FORMAT, native.normalize)},
    ),
)


def add_ingress_routes(app: web.Application) -> None:
    """Every row of ``INGRESS`` as routes of ``app``, and the book of what ingest refuses (its
    held-back log lines written at shutdown)."""
    book = app[INGEST_BOOK] = outcomes.IngestBook()

    async def flush(_: web.Application) -> None:
        book.flush_all()

    app.on_cleanup.append(flush)
    for ingress in INGRESS:
        handler = otlp_handler(ingress) if ingress.protocol == "otlp" else webhook_handler(ingress)
        for method in ingress.methods:
            app.router.add_route(method, ingress.path, handler)


class Refused(Exception):
    def __init__(self, status: int, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


async def _accept(request: web.Request, ingress: Ingress) -> Normalized:
    """Everything an ingest request goes through; raises ``Refused`` with the HTTP answer."""
    intake = request.app[INTAKE]
    tenant = tenant_for(request.headers.get("Authorization"), intake.ingest_tokens)
    if tenant is UNAUTHENTICATED:
        raise Refused(401, "missing or invalid bearer token (see RELAY_INGEST_TOKENS)")
    if (refusal := intake.refusal()) is not None:
        raise Refused(503, refusal, RETRY_AFTER_SECONDS)
    source = ingress.input_for(request.content_type)
    if source is None:
        raise Refused(
            415,
            f"unsupported Content-Type {request.content_type!r}: {ingress.path} takes"
            f" {' or '.join(t for t in ingress.inputs if t != ANY_TYPE)}",
        )
    try:
        body = await read_body(request, intake.max_body_bytes, intake.body_timeout)
    except BodyError as error:
        raise Refused(error.status, str(error)) from None
    received_ns, received_at = now()
    context = IngestContext(received_ns, received_at, request.content_type)
    owner = tenant if isinstance(tenant, str) else None
    prepare = partial(_prepare, source, body, context, owner, intake.content, intake.cost_table)
    # A large body takes CPU in proportion: off the loop that answers everyone else.
    large = len(body) > OFF_LOOP_BYTES
    try:
        result, bodies = (
            await asyncio.get_running_loop().run_in_executor(_LARGE_BODIES, prepare)
            if large
            else prepare()
        )
    except InputError as error:
        raise Refused(400, str(error)) from None
    if result.events:
        try:
            await intake.store(bodies, result.events)
        except IntakeFullError as error:
            raise Refused(503, str(error), RETRY_AFTER_SECONDS) from None
        if large:
            # Counting 20,000 events takes a third of a second: off the loop, but not behind the
            # large bodies waiting for their turn, since this one is stored and awaits its answer.
            await asyncio.to_thread(intake.metrics.observe_events, result.events)
        else:
            intake.metrics.observe_events(result.events)
    for reason, count in result.skipped.items():
        intake.metrics.items_skipped.labels(source.format, reason).inc(count)
    if result.rejected or not result.events:
        _book_unused(request, ingress, source.format, result)
    if debug_enabled():  # a global's value: the line's fields cost nothing at info level
        gateways = tuple(sorted({event["source"]["gateway"] for event in result.events}))
        counts = (len(result.events), sum(result.skipped.values()), len(result.rejected))
        accepted = (*counts, owner, len(body), gateways)
        _book(request, outcomes.Accepted(ingress.name, source.format, *accepted))
    return result


def _book_unused(request: web.Request, ingress: Ingress, fmt: str, result: Normalized) -> None:
    """What of a body read whole could not be stored: its unusable items (an OTLP partial
    success, a webhook's ``rejected``), or that it held no LLM call at all."""
    route, events, rejected = ingress.name, len(result.events), len(result.rejected)
    if rejected:
        first = f"{result.rejected[0].item}: {result.rejected[0].reason}"
        status = _webhook_status(result) if ingress.protocol == "webhook" else 200
        _book(request, outcomes.ItemsRejected(route, fmt, rejected, first, events, status))
    else:
        _book(request, outcomes.NothingToStore(route, fmt, sum(result.skipped.values())))


def _book(request: web.Request, outcome: outcomes.Outcome) -> None:
    sender = outcomes.Sender(request.remote, request.headers)
    request.app[INGEST_BOOK].book(request.app[INTAKE].metrics, outcome, sender)


def pricing() -> ModuleType:
    """``receiver.pricing``, imported on first use: genai-prices and its table take 0.3-0.4 s and
    14 MB to load, which need not delay a relay's start. The relay loads it in the background as
    it starts (``load_pricing``); a request that comes first waits for that import."""
    from receiver import pricing as module

    return module


def load_pricing() -> None:
    pricing()


def _prepare(
    source: Input,
    body: bytes,
    context: IngestContext,
    tenant: str | None,
    content: ContentPolicy,
    cost_table: bool,
) -> tuple[Normalized, list[bytes]]:
    """The CPU work of a request: its events normalized, processed, priced from the table when
    the gateway reported no cost (``RELAY_COST_TABLE``), and encoded as spooled."""
    result = source.normalize(body, context)
    # A rejection names the item and quotes the problem: neither may carry a credential.
    result.rejected = [
        Rejection(redact_text(r.item), redact_text(r.reason)) for r in result.rejected
    ]
    _keep_countable(result)
    if not result.events:
        return result, []
    process(result.events, tenant, content)
    if cost_table:
        pricing().price_events(result.events)
    return result, _encoded(result)


def _keep_countable(result: Normalized) -> None:
    """Reject, each alone, the events whose numbers no counter or sink can take: a negative or
    non-finite cost, token count, duration or time to first token, whatever format sent it."""
    kept: list[LLMEvent] = []
    for event in result.events:
        problem = _uncountable(event)
        if problem is None:
            kept.append(event)
        else:
            result.reject(f"event {event.get('event_id')}", problem)
    result.events = kept


def _uncountable(event: LLMEvent) -> str | None:
    cost: Mapping[str, object] = event.get("cost") or {}
    for field in ("total", "input", "output"):
        if field in cost and not _is_amount(cost[field]):
            return f"cost.{field} must be a finite number >= 0"
    usage: Mapping[str, object] = event.get("usage") or {}
    for field, count in usage.items():
        if type(count) is not int or count < 0:
            return f"usage.{field} must be an integer >= 0"
    for field, value in (
        ("duration_ms", event.get("duration_ms")),
        ("ttft_ms", event.get("ttft_ms")),
    ):
        if value is not None and not _is_amount(value):
            return f"{field} must be a finite number >= 0"
    return None


def _is_amount(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


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
    """Book a request refused whole: its ``relay_items_rejected_total`` reason and its log line,
    from one ``RequestRefused``."""
    reason = {
        401: "unauthorized",
        408: "timeout",
        413: "too_large",
        415: "unsupported",
        503: "unavailable",
    }.get(refused.status, "malformed")
    limit = request.app[INTAKE].max_body_bytes if refused.status == 413 else None
    _book(request, outcomes.RequestRefused(route, reason, refused.status, str(refused), limit))


# -- OTLP/HTTP -----------------------------------------------------------------------------------


def otlp_handler(ingress: Ingress) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        is_proto = request.content_type in PROTOBUF_TYPES
        test_connection = request.headers.get("X-Test-Connection", "").lower() == "true"
        try:
            try:
                result = await _accept(request, ingress)
            except Refused as refused:
                # OpenRouter's Test Connection must pass once the relay is up and the token right,
                # whatever it posts (an empty body, without a Content-Type): OpenRouter saves no
                # destination whose test failed.
                if test_connection and refused.status not in (401, 503):
                    waived = (ingress.name, refused.status, str(refused))
                    _book(request, outcomes.WaivedTestConnection(*waived))
                    result = Normalized()
                else:
                    raise
        except Refused as refused:
            _count_refusal(request, ingress.name, refused)
            return _otlp_error(refused, is_proto)
        return _otlp_answer(result, is_proto)

    return handle


def _otlp_answer(result: Normalized, is_proto: bool) -> web.Response:
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
    # google.rpc.Code: 3 INVALID_ARGUMENT, 16 UNAUTHENTICATED, 14 UNAVAILABLE, 8 RESOURCE_EXHAUSTED,
    # 4 DEADLINE_EXCEEDED
    code = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 503: 14}.get(refused.status, 2)
    if is_proto:
        status = Status(code=code, message=str(refused))
        return _closing_if_unread(
            web.Response(
                status=refused.status,
                body=status.SerializeToString(),
                content_type=PROTOBUF_TYPES[0],
                headers=headers,
            )
        )
    return _closing_if_unread(
        web.Response(
            status=refused.status,
            body=orjson.dumps({"code": code, "message": str(refused)}),
            content_type="application/json",
            headers=headers,
        )
    )


def _closing_if_unread(response: web.Response) -> web.Response:
    """A body that did not arrive in time is not read to its end: the connection that was carrying
    it closes with the answer rather than wait for the rest."""
    if response.status == 408:
        response.force_close()
    return response


# -- webhooks and native events ------------------------------------------------------------------


def webhook_handler(ingress: Ingress) -> Callable[[web.Request], Awaitable[web.Response]]:
    assert ingress.input_for(ANY_TYPE), f"{ingress.path}: a webhook takes any Content-Type"

    async def handle(request: web.Request) -> web.Response:
        try:
            result = await _accept(request, ingress)
        except Refused as refused:
            _count_refusal(request, ingress.name, refused)
            headers = {"Retry-After": refused.retry_after} if refused.retry_after else None
            return _closing_if_unread(
                web.json_response(
                    {"error": str(refused)}, status=refused.status, headers=headers, dumps=_dumps
                )
            )
        body = {
            "accepted": len(result.events),
            "skipped": sum(result.skipped.values()),
            "rejected": [{"item": r.item, "reason": r.reason} for r in result.rejected],
        }
        return web.json_response(body, status=_webhook_status(result), dumps=_dumps)

    return handle


def _webhook_status(result: Normalized) -> int:
    # Nothing usable at all is the sender's error; a partly usable batch is a success.
    return 400 if result.rejected and not result.events and not result.skipped else 200


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()
