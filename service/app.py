"""The aiohttp application: the ingress routes, the operator routes, request metrics, and the
relay's start and stop.

The application owns every server setting it depends on, so that it behaves the same under any
runner: request bodies reach ``receiver.bodies`` still compressed (its size cap counts the
decompressed bytes as they come; aiohttp's own decompression would bypass it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from receiver.ingest import add_ingress_routes
from receiver.intake import INTAKE
from service import ops
from service.config import RelayConfig
from service.relay import RELAY, Relay
from telemetry.metrics import Metrics

log = structlog.get_logger("relay.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def server_settings(config: RelayConfig) -> dict[str, object]:
    """What every connection's request handler is given (aiohttp's ``handler_args``).

    aiohttp's keep-alive timer runs from the moment a connection opens and from each answer, and
    closes the connection if no whole request head has arrived by then: it is the header-read
    timeout as well as the idle timeout (aiohttp 3.14 has no separate one), and without it a
    connection that never finishes its head is held for an hour.
    """
    return {"auto_decompress": False, "keepalive_timeout": config.header_timeout}


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as error:
        request.app[RELAY].metrics.count_http(route, error.status)
        raise
    except Exception as error:
        # A bug: the sender gets a clean 500, the log one JSON line (the error's type only: its
        # message may quote what was sent), and the answer is counted like any other.
        log.error("request_failed", route=route, error=type(error).__name__)
        request.app[RELAY].metrics.count_http(route, 500)
        return web.json_response({"error": "internal error"}, status=500)
    request.app[RELAY].metrics.count_http(route, response.status)
    return response


def create_app(
    config: RelayConfig, metrics: Metrics | None = None, worker: int = 0
) -> web.Application:
    relay = Relay(config, metrics, worker)
    app = web.Application(middlewares=[count_requests], handler_args=server_settings(config))
    app[RELAY] = relay
    app[INTAKE] = relay

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await relay.start()
        yield
        await relay.stop()

    async def drain(app: web.Application) -> None:
        relay.begin_drain()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    add_ingress_routes(app)
    app.router.add_get("/v1/test-connection", ops.test_connection)
    app.router.add_get("/v1/status", ops.status)
    app.router.add_get("/livez", ops.livez)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    return app
