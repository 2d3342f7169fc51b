"""A scripted HTTP peer on loopback: records every request and answers as the test says.

Where no real peer can run here (the public Datadog intake, a Tempo that throttles), tests use this
server. By default it answers ``default``; ``script`` queues answers that are used first, one per
request; ``hang`` makes requests wait until released. A ``check`` callable can enforce the peer's
documented contract strictly and turn a violation into a 400, as the real intake would (or play a
flaky peer: an ``Answer`` with a ``delay`` is sent that many seconds late).
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.helpers.ports import free_port


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # Seconds to wait before answering: a slow peer.
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    at: float


class ScriptedServer:
    def __init__(
        self,
        default: Answer | None = None,
        check: Callable[[Received], Answer | None] | None = None,
    ) -> None:
        self.default = default or Answer()
        self.check = check
        self.script: list[Answer] = []
        self.requests: list[Received] = []
        # The status answered to each request, in order (a held request has none yet).
        self.statuses: list[int] = []
        # Each request with the status it was answered, in the order of the answers: unlike
        # ``zip(requests, statuses)`` this stays right when slow answers overtake each other.
        self.answered: list[tuple[Received, int]] = []
        self.hang = asyncio.Event()
        self.hang.set()
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer_next(self, *answers: Answer) -> None:
        self.script.extend(answers)

    def hold(self) -> None:
        """Make every request wait (a peer that hangs) until ``release``."""
        self.hang.clear()

    def release(self) -> None:
        self.hang.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        body = raw
        if encoding == "gzip":
            body = gzip.decompress(raw)
        elif encoding == "deflate":
            body = zlib.decompress(raw)
        received = Received(
            request.method, request.path_qs, dict(request.headers), raw, body, time.monotonic()
        )
        self.requests.append(received)
        await self.hang.wait()
        answer = self.check(received) if self.check else None
        if answer is None:
            answer = self.script.pop(0) if self.script else self.default
        if answer.delay > 0:
            await asyncio.sleep(answer.delay)
        self.statuses.append(answer.status)
        self.answered.append((received, answer.status))
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers=answer.headers,
            content_type=answer.content_type,
        )

    async def start(self) -> ScriptedServer:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Compressed bodies are decoded above, so keep aiohttp from doing it first.
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def bodies(self, path: str | None = None) -> list[bytes]:
        return [r.body for r in self.requests if path is None or r.path.startswith(path)]


def json_error(status: int, message: str, **headers: str) -> Answer:
    import orjson

    return Answer(status=status, body=orjson.dumps({"errors": [message]}), headers=headers)
