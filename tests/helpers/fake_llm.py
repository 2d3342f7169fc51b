"""A loopback stand-in for an OpenAI-compatible LLM API, for the conformance suite.

Real clients (the OpenAI SDK and its instrumentations, LiteLLM) call it as they would call a
provider; it answers like the OpenAI API does (chat completions, streamed with usage, tool calls,
embeddings, errors) and records every exchange: what the client asked for and what it was told.
The tests compare the relay's events with these records, so expected values are what the client
really sent and received, not values typed into a test.

How it answers is chosen by the request itself, so a client needs no extra setup:
a model whose name contains ``fail`` gets a 400 error (clients do not retry a 400); a request
with ``tools`` gets a tool call; ``stream: true`` gets server-sent events, with a last usage chunk
when ``stream_options.include_usage`` is set. The response model is the requested one with a
date suffix, as providers answer, so request and response models differ and cannot be swapped
unnoticed.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.helpers.ports import free_port

RESPONSE_MODEL_SUFFIX = "-2026-11-01"
CACHED_TOKENS = 2
REASONING_TOKENS = 3


@dataclass
class Exchange:
    """One call as the fake saw it: the request body and the answer (a stream assembled)."""

    path: str
    request: dict[str, Any]
    status: int
    response: dict[str, Any]
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def text_in(self) -> str:
        """Everything the client sent as text (prompts, embedding inputs), for matching."""
        return orjson.dumps(self.request).decode()


class FakeLLM:
    """The server, on its own thread and event loop, so blocking clients can call it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.exchanges: list[Exchange] = []
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL clients take as ``base_url`` / ``api_base``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def matching(self, nonce: str) -> list[Exchange]:
        """The exchanges whose request carried ``nonce`` (a test puts one in every prompt)."""
        return [exchange for exchange in self.exchanges if nonce in exchange.text_in()]

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):06d}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        headers = dict(request.headers)
        model = str(body.get("model", ""))
        if "fail" in model:
            return self._error(request.path, body, headers)
        prompt = orjson.dumps(body.get("messages", [])).decode()
        usage = _usage(prompt_tokens=10 + len(prompt) // 20, completion_tokens=7)
        message: dict[str, Any] = {"role": "assistant", "content": f"Answer {next(self._ids)}."}
        finish_reason = "stop"
        if body.get("tools"):
            tool = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": self._next_id("call"),
                        "type": "function",
                        "function": {"name": tool, "arguments": '{"city": "Paris"}'},
                    }
                ],
            }
            finish_reason = "tool_calls"
        response = {
            "id": self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model + RESPONSE_MODEL_SUFFIX,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, body, headers, response, include_usage)
        self.exchanges.append(Exchange(request.path, body, 200, response, headers=headers))
        return web.json_response(response)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        headers: dict[str, str],
        response: dict[str, Any],
        include_usage: bool,
    ) -> web.StreamResponse:
        """The answer as chat.completion.chunk events, a few milliseconds apart (so that time
        to first token is less than the duration), then the usage chunk and ``[DONE]``."""
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        base = {k: response[k] for k in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        message = response["choices"][0]["message"]
        words = str(message.get("content") or "").split(" ")
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": word if i == 0 else " " + word} for i, word in enumerate(words)]
        for delta in deltas:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await _send_event(stream, chunk)
            await asyncio.sleep(0.005)
        last = {"index": 0, "delta": {}, "finish_reason": response["choices"][0]["finish_reason"]}
        await _send_event(stream, {**base, "choices": [last]})
        if include_usage:
            await _send_event(stream, {**base, "choices": [], "usage": response["usage"]})
        await stream.write(b"data: [DONE]\n\n")
        await stream.write_eof()
        if not include_usage:
            response = {k: v for k, v in response.items() if k != "usage"}
        self.exchanges.append(
            Exchange(request.path, body, 200, response, stream=True, headers=headers)
        )
        return stream

    def _error(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> web.Response:
        error = {
            "error": {
                "message": f"The model `{body.get('model')}` does not exist.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
        self.exchanges.append(Exchange(path, body, 400, error, headers=headers))
        return web.json_response(error, status=400)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        tokens = sum(len(str(text).split()) for text in texts)
        response = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125 * (i + 1)]}
                for i in range(len(texts))
            ],
            "model": str(body.get("model")) + RESPONSE_MODEL_SUFFIX,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        headers = dict(request.headers)
        self.exchanges.append(Exchange(request.path, body, 200, response, headers=headers))
        return web.json_response(response)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
    }


async def _send_event(stream: web.StreamResponse, data: dict[str, Any]) -> None:
    await stream.write(b"data: " + orjson.dumps(data) + b"\n\n")
