"""Routes for operators: health, readiness, per-sink status, Prometheus metrics, setup check."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver.auth import UNAUTHENTICATED, tenant_for
from service.relay import RELAY
from telemetry.metrics import exposition_registry


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def livez(request: web.Request) -> web.Response:
    # Alive means the event loop answers; a sink outage must never restart the process.
    return _json({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    if relay.draining:
        return _json({"status": "draining"}, 503)
    if not relay.started:
        return _json({"status": "starting"}, 503)
    problem = await relay.check_spool()
    if problem is not None:
        return _json({"status": "spool_unavailable", "problem": problem.kind}, 503)
    if relay.spool.full:
        return _json({"status": "spool_full", "spool_bytes": relay.spool.stored_bytes}, 503)
    return _json({"status": "ready"})


async def status(request: web.Request) -> web.Response:
    return _json(await request.app[RELAY].status())


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    await relay.refresh_gauges()
    # Writing the exposition takes time in proportion to the series: not on the loop that
    # answers every sender and /livez.
    registry = exposition_registry(relay.metrics.registry)
    response = web.Response(body=await asyncio.to_thread(generate_latest, registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def test_connection(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    send = request.query.get("send_test_event", "").lower() in ("1", "true", "yes")
    if send and tenant_for(request.headers.get("Authorization"), relay.ingest_tokens) is (
        UNAUTHENTICATED
    ):
        # Sending writes an event into every sink: as guarded as ingest itself. The probe alone
        # stays open, like /v1/status.
        message = "send_test_event needs an ingest bearer token (see RELAY_INGEST_TOKENS)"
        return _json({"ok": False, "error": message}, 401)
    results = await relay.check(send_test_event=send)
    ok = all(result.ok for result in results.values())
    body = {"ok": ok, "sinks": {name: result.as_dict() for name, result in results.items()}}
    return _json(body, 200 if ok else 503)
