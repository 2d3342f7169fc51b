"""LiteLLM's ``generic_api`` callback as a real sender.

Run as ``python -m tests.conformance.litellm_webhook --format F --llm URL --relay URL --nonce N
--out FILE [--token T]`` (``T``: one of the relay's ``RELAY_INGEST_TOKENS``).

The five conformance scenarios (``tests.conformance.scenarios``) run through LiteLLM's async
API, as its proxy calls it, against the loopback fake LLM; the callback posts each call's logging
payload to the relay's LiteLLM webhook. ``--format`` picks how: ``json_array``, ``ndjson`` and
``single`` are configured the way the README's proxy ``config.yaml`` does (``callback_settings``
with ``callback_type: generic_api``), ``v1`` the way LiteLLM documents the legacy payload
(``generic_api_use_v1 = True`` and the ``generic_api`` logger, which reads its endpoint and
headers from ``GENERIC_LOGGER_ENDPOINT`` and ``GENERIC_LOGGER_HEADERS``).
``ndjson`` and ``single`` also turn on ``request_correlation_in_logs``, with which LiteLLM sends
the caller's session id as ``session_id`` rather than as the ``trace_id``: both ways are covered.

Every request the callback made is recorded in-process (the body exactly as posted and the
relay's answer) and written to ``--out`` as JSON: what the client reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.conformance.scenarios import SCENARIOS, run_litellm

FORMATS = ("json_array", "ndjson", "single", "v1")
CORRELATED_FORMATS = ("ndjson", "single")  # with litellm.request_correlation_in_logs = True
WEBHOOK_PATH = "/v1/webhooks/litellm"
CALLBACK_NAME = "relay"


def configure(litellm: Any, log_format: str, relay_url: str, token: str | None) -> None:
    """The callback, set up the way a user does for ``log_format`` (see the module docstring).

    Needs a running event loop: the logger starts its flush timer as a task when it is built.
    """
    endpoint = relay_url + WEBHOOK_PATH
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if log_format == "v1":
        from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

        # The logger ``callbacks: ["generic_api"]`` builds, from the same environment. The name
        # itself resolves to it only with the litellm-enterprise package (the ``proxy`` extra);
        # without it LiteLLM silently puts a logger that sends nothing in its place.
        os.environ["GENERIC_LOGGER_ENDPOINT"] = endpoint
        os.environ["GENERIC_LOGGER_HEADERS"] = ",".join(f"{k}={v}" for k, v in headers.items())
        litellm.generic_api_use_v1 = True
        litellm.callbacks = [GenericAPILogger()]
        return
    litellm.request_correlation_in_logs = log_format in CORRELATED_FORMATS
    litellm.callback_settings = {
        CALLBACK_NAME: {
            "callback_type": "generic_api",
            "endpoint": endpoint,
            "headers": headers,
            "event_types": ["llm_api_success", "llm_api_failure"],
            "log_format": log_format,
        }
    }
    # What the proxy does with a config's ``callbacks`` entry: the manager resolves the name
    # through ``callback_settings`` into a GenericAPILogger.
    litellm.logging_callback_manager.add_litellm_callback(CALLBACK_NAME)


class Recorder:
    """Every generic API logger LiteLLM builds, every call handed to one, and every POST they
    make: the body as sent and the relay's answer.

    Wrapping the logger's constructor, its two handlers and its one sending method sees exactly
    what went to the relay, whichever configuration path built the logger.
    """

    def __init__(self, logger_class: Any) -> None:
        self.loggers: list[Any] = []
        self.calls_handled = 0
        self.posts: list[dict[str, Any]] = []
        init, post = logger_class.__init__, logger_class._post_with_retries

        def recording_init(logger: Any, *args: Any, **kwargs: Any) -> None:
            init(logger, *args, **kwargs)
            self.loggers.append(logger)

        async def recording_post(logger: Any, data: str) -> Any:
            record: dict[str, Any] = {"log_format": logger.log_format, "body": data}
            self.posts.append(record)
            response = await post(logger, data)
            record["status"] = response.status_code
            record["answer"] = response.text
            return response

        logger_class.__init__ = recording_init
        logger_class._post_with_retries = recording_post
        for name in ("async_log_success_event", "async_log_failure_event"):
            setattr(logger_class, name, self._counting(getattr(logger_class, name)))

    def _counting(self, handler: Any) -> Any:
        async def counted(logger: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await handler(logger, *args, **kwargs)
            finally:
                self.calls_handled += 1  # queued for sending, or refused by the logger itself

        return counted


async def flush_everything(recorder: Recorder, calls: int, timeout: float = 30.0) -> None:
    """Wait until LiteLLM has handed all ``calls`` to the callback, then post what it holds.

    LiteLLM logs a call in the background (its logging worker and tasks of its own), so returning
    from a call says nothing about its payload; the callback then holds payloads until
    its batch is full or its timer fires. ``flush_queue`` sends the rest, as LiteLLM's own
    shutdown does; it waits for a send already under way (the flush lock).
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while recorder.calls_handled < calls:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"LiteLLM logged {recorder.calls_handled} of {calls} calls")
        await asyncio.sleep(0.01)
    while any(logger.log_queue for logger in recorder.loggers):
        for logger in recorder.loggers:
            await logger.flush_queue()


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    import litellm
    from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

    recorder = Recorder(GenericAPILogger)
    configure(litellm, args.format, args.relay, args.token)
    await run_litellm(litellm, args.llm, args.nonce)
    await flush_everything(recorder, calls=len(SCENARIOS))
    return recorder.posts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--llm", required=True, help="the fake LLM's base URL")
    parser.add_argument("--relay", required=True, help="the relay's base URL")
    parser.add_argument("--nonce", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--token", help="a bearer token the relay accepts (RELAY_INGEST_TOKENS)")
    args = parser.parse_args()
    # LiteLLM otherwise fetches its price map from the internet at import; the tests are loopback.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    posts = asyncio.run(main_async(args))
    args.out.write_bytes(orjson.dumps(posts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
