"""Reading what a scripted OTLP peer received: each span carries its event's ``relay.event_id``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.scripted_server import Answer, Received, ScriptedServer


def span_attributes(body: bytes) -> list[dict[str, object]]:
    request = ExportTraceServiceRequest.FromString(body)
    found: list[dict[str, object]] = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes: dict[str, object] = {}
                for kv in span.attributes:
                    kind = kv.value.WhichOneof("value")
                    attributes[kv.key] = getattr(kv.value, kind) if kind else None
                found.append(attributes)
    return found


def event_ids(received: Received) -> list[str]:
    return [str(a["relay.event_id"]) for a in span_attributes(received.body)]


def models(received: Received) -> list[str]:
    return [str(a.get("gen_ai.request.model")) for a in span_attributes(received.body)]


OK = Answer(200, b"", content_type="application/x-protobuf")


@contextlib.asynccontextmanager
async def running_peer() -> AsyncIterator[ScriptedServer]:
    """A scripted OTLP receiver on loopback that takes every export, stopped afterwards."""
    server = await ScriptedServer(default=OK).start()
    try:
        yield server
    finally:
        await server.stop()
