"""Request bodies and events the tests use, built as real senders and the relay build them."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import orjson

from foundation.times import rfc3339_ns
from schemas import LLMEvent


def otlp_span(
    model: str = "gpt-4o", index: int = 0, attributes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One OTLP JSON LLM span with fresh ids, ended a moment ago."""
    values = {"gen_ai.request.model": model, **(attributes or {})}
    return {
        "traceId": os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": f"chat {model}",
        "kind": 3,
        "startTimeUnixNano": str(time.time_ns() - 1_000_000),
        "endTimeUnixNano": str(time.time_ns()),
        "attributes": [
            *({"key": k, "value": {"stringValue": v}} for k, v in values.items()),
            {"key": "test.index", "value": {"intValue": index}},
        ],
    }


def otlp_json(spans: list[dict[str, Any]], service: str = "openrouter") -> bytes:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    document = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
    return orjson.dumps(document)


def otlp_json_spans(count: int, model: str = "gpt-4o") -> bytes:
    """One OTLP JSON request with ``count`` LLM spans."""
    return otlp_json([otlp_span(model, index) for index in range(count)])


def span_ids(body: bytes) -> list[str]:
    document = orjson.loads(body)
    return [
        span["spanId"]
        for resource in document["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]


def stored_event(index: int, padding: int = 0) -> LLMEvent:
    """A complete LLMEvent as the spool holds it; ``padding`` makes it bigger, for rotation."""
    return {
        "schema": "llm-event/1",
        "event_id": f"e{index:06d}",
        "received_at": "2026-11-22T00:00:00.000000000Z",
        "source": {"format": "native", "gateway": "tests", "test": False},
        "trace_id": "0" * 32,
        "span_id": f"{index:016x}",
        "start_time": "2026-11-22T00:00:00.000000000Z",
        "end_time": "2026-11-22T00:00:01.000000000Z",
        "operation": "chat",
        "status": "ok",
        "usage": {},
        "cost": {"currency": "USD", "source": "unknown"},
        "attributes": {"padding": "x" * padding, "text": "line\nbreak"},
    }


def native_event(label: str, duration_ns: int = 1_000_000_000, **fields: Any) -> dict[str, Any]:
    """An LLMEvent as a gateway of one's own posts it (``POST /v1/events``): fresh ids, a chat
    ended a moment ago, nothing reported; ``fields`` add to it or replace."""
    now = time.time_ns()
    event: dict[str, Any] = {
        "event_id": f"{label}-{os.urandom(8).hex()}",
        "source": {"gateway": "tests", "test": False},
        "trace_id": os.urandom(16).hex(),
        "span_id": os.urandom(8).hex(),
        "start_time": rfc3339_ns(now - duration_ns),
        "end_time": rfc3339_ns(now),
        "operation": "chat",
        "status": "ok",
        "usage": {},
        "cost": {"currency": "USD", "source": "unknown"},
    }
    return event | fields
