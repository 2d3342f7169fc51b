"""Minimal loopback stand-ins for the relay's network sinks, counting what they receive.

- Tempo: ``POST /v1/traces`` (gzip) protobuf ``ExportTraceServiceRequest``, answered 200 with an
  empty protobuf ``ExportTraceServiceResponse``; spans are counted.
- Datadog LLM Observability intake: ``POST /api/intake/llm-obs/v1/trace/spans`` (agentless body
  ``{"data": {"attributes": {"spans": [...]}}}``) or the agent's EVP path (a list of envelopes with
  ``spans``), answered 202; spans are counted.

``GET /counts`` on either port answers ``{"requests", "spans", "bytes", "errors"}`` for that
peer, so that the benchmark can tell when a sink has caught up with what the relay accepted.

``python -m bench.peers --tempo-port N --datadog-port M``
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import signal
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

EMPTY_RESPONSE: Final = ExportTraceServiceResponse().SerializeToString()


@dataclass(slots=True)
class Counts:
    requests: int = 0
    spans: int = 0
    bytes: int = 0
    errors: int = 0


COUNTS: Final = web.AppKey("counts", Counts)


def _decoded(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def tempo_spans(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def datadog_spans(document: Any) -> int:
    if isinstance(document, dict):  # agentless
        return len(document["data"]["attributes"]["spans"])
    if isinstance(document, list):  # agent EVP proxy: one envelope per span
        return sum(len(envelope["spans"]) for envelope in document)
    raise ValueError("unexpected Datadog body")


async def _body(request: web.Request, counts: Counts) -> bytes:
    """Count the request and return its body, decompressed."""
    raw = await request.read()
    counts.requests += 1
    counts.bytes += len(raw)
    return _decoded(raw, request.headers.get("Content-Encoding", ""))


async def _tempo(request: web.Request) -> web.Response:
    counts = request.app[COUNTS]
    try:
        counts.spans += tempo_spans(await _body(request, counts))
    except Exception:  # a bad body is a finding, not a crash: the count shows it
        counts.errors += 1
        return web.Response(status=400, text="undecodable OTLP body")
    return web.Response(body=EMPTY_RESPONSE, content_type="application/x-protobuf")


async def _datadog(request: web.Request) -> web.Response:
    counts = request.app[COUNTS]
    try:
        counts.spans += datadog_spans(orjson.loads(await _body(request, counts)))
    except Exception:
        counts.errors += 1
        return web.Response(status=400, text='{"errors":["undecodable body"]}')
    return web.Response(status=202, body=b"{}", content_type="application/json")


async def _counts(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps(asdict(request.app[COUNTS])), content_type="application/json"
    )


def tempo_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[COUNTS] = Counts()
    app.router.add_post("/v1/traces", _tempo)
    app.router.add_get("/counts", _counts)
    return app


def datadog_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[COUNTS] = Counts()
    app.router.add_post("/api/intake/llm-obs/v1/trace/spans", _datadog)
    app.router.add_post("/evp_proxy/v2/api/v2/llmobs", _datadog)
    app.router.add_get("/counts", _counts)
    return app


async def serve(host: str, tempo_port: int, datadog_port: int) -> None:
    # Bodies are decompressed here, as they arrive: aiohttp must not do it first.
    runners = [
        web.AppRunner(app(), access_log=None, auto_decompress=False)
        for app in (tempo_app, datadog_app)
    ]
    for runner, port in zip(runners, (tempo_port, datadog_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=256).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tempo-port", type=int, required=True)
    parser.add_argument("--datadog-port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.tempo_port, args.datadog_port))


if __name__ == "__main__":
    main()
