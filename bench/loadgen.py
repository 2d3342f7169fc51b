"""The load generator: its own process, N keep-alive connections, bounded by count and by time.

Closed loop, as wrk does it: each connection sends a request, waits for the answer, sends the next.
The acknowledgement latency of a request is the time from writing it to reading the whole answer.
Request bodies (and, for the default client, whole HTTP/1.1 requests) are built before the clock
starts, so the generator's cost per request is a buffer write and a header parse.

Two clients:
- ``raw`` (default): HTTP/1.1 over an asyncio ``Protocol`` (uvloop), pre-serialised requests and a
  minimal response parser: about 30 µs of CPU per request, 4x less than aiohttp's client, so the
  generator on its own core stays ahead of an aiohttp server on another (the ceiling is the
  server's);
- ``aiohttp``: ``aiohttp.ClientSession``, for comparison. On one core it tops out (~8,400 req/s)
  below what the null receiver serves (~14,000), i.e. it would measure itself.

``--rate`` paces the requests (request ``i`` not before ``start + i / rate``) for a steady load
below saturation, as the soak run needs; latency is then measured from the actual send.

Nothing but 127.0.0.1 is ever contacted. The result is written as JSON to ``--out``.

``python -m bench.loadgen --port N --scenario otlp-json --connections 32 --seconds 20 --out r.json``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import orjson

from bench.payloads import SCENARIOS, build

HOST: Final = "127.0.0.1"
# How long, after the time bound, answers to requests already sent are still awaited.
DRAIN_SECONDS: Final = 30.0
MAX_HEADER: Final = 64 * 1024


@dataclass(slots=True)
class LoadResult:
    scenario: str
    client: str
    connections: int
    target: str
    events_per_request: int
    requests: int = 0
    ok: int = 0
    events: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0
    started_at: float = 0.0  # time.monotonic(), comparable across processes on Linux
    ended_at: float = 0.0
    duration_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies"]
        return data


def percentiles(samples: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99/max and the mean, in milliseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] * 1000

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": ordered[-1] * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
    }


def accepted_events(status: int, body: bytes, sent: int) -> int:
    """How many of the ``sent`` events the answer acknowledges."""
    if not 200 <= status < 300:
        return 0
    if len(body) <= 2 or body[:1] != b"{":
        return sent  # OTLP protobuf (empty) or OTLP/JSON ``{}``, or the null receiver
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return sent
    if isinstance(answer.get("accepted"), int):  # the relay's webhook answer
        return int(answer["accepted"])
    partial = answer.get("partialSuccess") or {}
    return sent - int(partial.get("rejectedSpans") or 0)


class Bounds:
    """The shared count and time bounds: a request is started only while both allow it.

    With a ``rate`` (requests/s for this generator), request ``i`` is not sent before
    ``start + i / rate``: a steady load below saturation, as a soak run needs.
    """

    def __init__(self, max_requests: int, seconds: float, rate: float | None = None) -> None:
        self.max_requests = max_requests
        self.seconds = seconds
        self.rate = rate
        self.started = 0
        self.begun = 0.0
        self.deadline = 0.0

    def start(self) -> None:
        self.begun = time.monotonic()
        self.deadline = self.begun + self.seconds

    async def take(self) -> int | None:
        index = self.started
        if index >= self.max_requests:
            return None
        now = time.monotonic()
        due = now if self.rate is None else self.begun + index / self.rate
        if max(now, due) >= self.deadline:
            return None
        self.started += 1
        if due > now:
            await asyncio.sleep(due - now)
        return index


# -- raw HTTP/1.1 client -------------------------------------------------------------------------


class _Answer(Exception):
    """The connection closed or sent something that is not an HTTP/1.1 answer."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(_Answer(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER:
                waiter.set_exception(_Answer("answer header too large"))
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            waiter.set_exception(_Answer("answer without Content-Length"))
            return
        line_end = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : line_end if line_end >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result((status, body, b"\r\nconnection: close" in head))

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes, bool]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


def _raw_request(port: int, path: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nUser-Agent: relay-bench\r\n\r\n"
    )
    return head.encode() + body


async def _connect(port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, HOST, port)
    return protocol


async def _raw_worker(
    connection: _Connection,
    port: int,
    requests: list[bytes],
    sent: int,
    bounds: Bounds,
    result: LoadResult,
) -> None:
    errors: Counter[str] = Counter()
    try:
        while (index := await bounds.take()) is not None:
            started = time.perf_counter()
            try:
                status, body, close = await connection.send(requests[index % len(requests)])
            except _Answer as error:
                errors[f"connection: {error}"[:80]] += 1
                connection = await _connect(port)
                continue
            result.latencies.append(time.perf_counter() - started)
            result.ended_at = time.monotonic()
            _count(result, errors, status, body, sent)
            if close:
                connection = await _connect(port)
    finally:
        if connection.transport is not None:
            connection.transport.close()
        _merge(result, errors)


def _count(result: LoadResult, errors: Counter[str], status: int, body: bytes, sent: int) -> None:
    if 200 <= status < 300:
        result.ok += 1
        result.events += accepted_events(status, body, sent)
    else:
        errors[str(status)] += 1


def _merge(result: LoadResult, errors: Counter[str]) -> None:
    for key, count in errors.items():
        result.errors[key] = result.errors.get(key, 0) + count


# -- aiohttp client ------------------------------------------------------------------------------


async def _aiohttp_run(
    port: int,
    scenario: str,
    bodies: list[bytes],
    connections: int,
    bounds: Bounds,
    result: LoadResult,
) -> None:
    import aiohttp

    spec = SCENARIOS[scenario]
    url = f"http://{HOST}:{port}{spec.path}"
    headers = {"Content-Type": spec.content_type}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=DRAIN_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            errors: Counter[str] = Counter()
            try:
                while (index := await bounds.take()) is not None:
                    started = time.perf_counter()
                    try:
                        async with session.post(
                            url, data=bodies[index % len(bodies)], headers=headers
                        ) as answer:
                            body = await answer.read()
                    except (aiohttp.ClientError, TimeoutError) as error:
                        errors[f"connection: {type(error).__name__}"] += 1
                        continue
                    result.latencies.append(time.perf_counter() - started)
                    result.ended_at = time.monotonic()
                    _count(result, errors, answer.status, body, spec.events_per_request)
            finally:
                _merge(result, errors)

        result.started_at = time.monotonic()
        bounds.start()
        await _drain([asyncio.ensure_future(worker()) for _ in range(connections)], bounds, result)


async def _drain(tasks: Sequence[asyncio.Future[None]], bounds: Bounds, result: LoadResult) -> None:
    """Wait for the workers: past the time bound, answers in flight get ``DRAIN_SECONDS`` more."""
    remaining = bounds.deadline - time.monotonic() + DRAIN_SECONDS
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, remaining))
    result.unanswered = len(pending)
    for task in pending:
        task.cancel()
    for task in tasks:
        if not task.cancelled() and task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def run(
    port: int,
    scenario: str,
    connections: int,
    seconds: float,
    max_requests: int,
    variants: int,
    client: str,
    rate: float | None = None,
) -> LoadResult:
    spec = SCENARIOS[scenario]
    bodies = build(scenario, variants)
    result = LoadResult(
        scenario=scenario,
        client=client,
        connections=connections,
        target=f"http://{HOST}:{port}{spec.path}",
        events_per_request=spec.events_per_request,
    )
    bounds = Bounds(max_requests, seconds, rate)
    cpu_before = sum(os.times()[:2])
    if client == "aiohttp":
        await _aiohttp_run(port, scenario, bodies, connections, bounds, result)
    else:
        requests = [_raw_request(port, spec.path, spec.content_type, body) for body in bodies]
        # Every connection is open before the clock starts.
        opened = await asyncio.gather(*(_connect(port) for _ in range(connections)))
        result.started_at = time.monotonic()
        bounds.start()
        tasks = [
            asyncio.ensure_future(
                _raw_worker(connection, port, requests, spec.events_per_request, bounds, result)
            )
            for connection in opened
        ]
        await _drain(tasks, bounds, result)
    result.requests = bounds.started
    result.cpu_s = sum(os.times()[:2]) - cpu_before
    if result.ended_at < result.started_at:
        result.ended_at = time.monotonic()
    result.duration_s = result.ended_at - result.started_at
    result.latency_ms = percentiles(result.latencies)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=5_000_000)
    parser.add_argument("--variants", type=int, default=64)
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw")
    parser.add_argument(
        "--rate", type=float, help="requests/s to pace at (default: as fast as answers come)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(
        run(
            args.port,
            args.scenario,
            args.connections,
            args.seconds,
            args.max_requests,
            args.variants,
            args.client,
            args.rate,
        )
    )
    args.out.write_bytes(orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
