"""The aiohttp application: the ingress routes, the operator routes, request metrics, and the
relay's start and stop.

The application owns every server setting it depends on, so that it behaves the same under any
runner: request bodies reach ``receiver.bodies`` still compressed (its size cap counts the
decompressed bytes as they come; aiohttp's own decompression would bypass it).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

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
# The tasks handling a request now: what a stop lets finish after the socket closes.
IN_FLIGHT: Final = web.AppKey[set[asyncio.Task[Any]]]("requests_in_flight")


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
    task = asyncio.current_task()
    in_flight = request.app[IN_FLIGHT]
    if task is not None:
        in_flight.add(task)
    try:
        return await _counted(request, handler, route)
    finally:
        in_flight.discard(task)


async def _counted(request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as error:
        request.app[RELAY].metrics.count_http(route, error.status)
        _close_if_draining(request, error)
        raise
    except Exception as error:
        # A bug: the sender gets a clean 500, the log one JSON line (the error's type only: its
        # message may quote what was sent), and the answer is counted like any other.
        log.error("request_failed", route=route, error=type(error).__name__)
        request.app[RELAY].metrics.count_http(route, 500)
        return web.json_response({"error": "internal error"}, status=500)
    request.app[RELAY].metrics.count_http(route, response.status)
    _close_if_draining(request, response)
    return response


def _close_if_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While draining, every answer closes its connection (``Connection: close``).

    A load balancer that stopped routing here only stops new connections: a gateway's pooled
    keep-alive connection would go on bringing events until the socket closes and cut them off
    then. Closed after an answer, the gateway's next request opens a new connection, which the
    balancer sends to another replica.
    """
    if request.app[RELAY].draining and not response.prepared:
        response.force_close()


def create_app(
    config: RelayConfig, metrics: Metrics | None = None, worker: int = 0
) -> web.Application:
    relay = Relay(config, metrics, worker)
    app = web.Application(middlewares=[count_requests], handler_args=server_settings(config))
    app[RELAY] = relay
    app[INTAKE] = relay
    app[IN_FLIGHT] = set()

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


async def finish_requests(app: web.Application, deadline: float) -> int:
    """Once the socket is closed, let the requests in flight finish until ``deadline`` (event-loop
    time), and cancel those still running then; returns how many were cancelled.

    aiohttp's own shutdown stops reading every connection at once, so a body still arriving
    would never be read and its sender, who sent it before the stop, would get no answer. Here
    it is read, stored and answered 2xx. A request cancelled at the deadline gets no answer, so
    nothing unstored is acknowledged.
    """
    in_flight = app[IN_FLIGHT]
    loop = asyncio.get_running_loop()
    while in_flight and (left := deadline - loop.time()) > 0:
        await asyncio.wait(set(in_flight), timeout=left)
    late = list(in_flight)
    for task in late:
        task.cancel()
    return len(late)


# Sent by the parent to its workers (RELAY_WORKERS > 1) for "skip the shutdown delay".
SKIP_DELAY_SIGNAL: Final = signal.SIGUSR1


class StopSignals:
    """SIGTERM and SIGINT as people and supervisors mean them: the first one stops the relay
    (after the shutdown delay), a second one skips what is left of the delay (Ctrl-C twice).

    A worker of a multi-process relay cannot count them: the parent forwards each stop, and a
    terminal's Ctrl-C or systemd's control-group kill reach every process of the relay as well,
    so one stop arrives twice. There (``counted=False``) the parent counts, and forwards a second
    stop as ``SKIP_DELAY_SIGNAL``, which skips the delay in any process.
    """

    def __init__(self, counted: bool) -> None:
        self.counted = counted
        self.stop = asyncio.Event()
        self.skip = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop)
        loop.add_signal_handler(SKIP_DELAY_SIGNAL, self._skip)

    def _stop(self) -> None:
        if self.stop.is_set() and self.counted:
            self.skip.set()
        self.stop.set()

    def _skip(self) -> None:
        # A worker may get it before the forwarded stop (a lower signal number is delivered
        # first); a single relay only while stopping: a stray SIGUSR1 (a log-rotation habit) is
        # no reason to stop.
        if self.counted and not self.stop.is_set():
            return
        self.stop.set()
        self.skip.set()

    def close(self) -> None:
        """Once stopped: the loop's handlers off, and any further signal ignored until exit."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, SKIP_DELAY_SIGNAL):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)

    async def delay(self, seconds: float) -> bool:
        """Wait out the shutdown delay: False if a second signal cut it short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.skip.wait(), seconds)
            return False
        return True
