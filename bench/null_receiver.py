"""The ceiling: an aiohttp app on the relay's own stack that reads the body and answers 200.

Same server machinery as the relay (aiohttp, uvloop, no access log, one process on one core), none
of the relay's work: the difference between the two is what the relay itself costs.

``python -m bench.null_receiver --port N``
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web


async def _read_and_answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200)


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", _read_and_answer)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
