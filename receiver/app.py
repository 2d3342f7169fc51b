"""The aiohttp application: routes, request metrics, and the relay's start and stop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from receiver import ops
from receiver.config import RelayConfig
from receiver.ingest import RELAY, WEBHOOK_ROUTES, otlp_traces, webhook
from receiver.metrics import Metrics
from receiver.relay import Relay

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as error:
        request.app[RELAY].metrics.count_http(route, error.status)
        raise
    request.app[RELAY].metrics.count_http(route, response.status)
    return response


def create_app(
    config: RelayConfig, metrics: Metrics | None = None, worker: int = 0
) -> web.Application:
    relay = Relay(config, metrics, worker)
    app = web.Application(middlewares=[count_requests])
    app[RELAY] = relay

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await relay.start()
        yield
        await relay.stop()

    async def drain(app: web.Application) -> None:
        relay.begin_drain()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    app.router.add_route("POST", "/v1/traces", otlp_traces)
    app.router.add_route("PUT", "/v1/traces", otlp_traces)
    for path, route in WEBHOOK_ROUTES:
        app.router.add_route("POST", path, webhook(route))
    app.router.add_get("/v1/test-connection", ops.test_connection)
    app.router.add_get("/v1/status", ops.status)
    app.router.add_get("/livez", ops.livez)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    return app
