"""OTLP/JSON request bodies for the OTLP normalizer tests, built the way the specification
spells them (hex ids, 64-bit integers as strings)."""

from __future__ import annotations

import base64
import copy
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACE_ID = bytes(range(16))
SPAN_ID = bytes(range(16, 24))
PARENT_ID = bytes(range(24, 32))
START_NS = 1_772_400_000_123_456_789
END_NS = START_NS + 1_500_250_000


def json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # OTLP/JSON spells 64-bit integers as strings
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [json_value(item) for item in value]}}
    return {"stringValue": value}


def json_span(attributes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    span = {
        "traceId": TRACE_ID.hex(),
        "spanId": SPAN_ID.hex(),
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(END_NS),
        "attributes": [{"key": k, "value": json_value(v)} for k, v in attributes.items()],
    }
    span.update(fields)
    return span


def json_request(*spans: Any, service: str = "my-app") -> dict[str, Any]:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": list(spans)}]}]}


def proto_from_json(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """An OTLP/JSON body as the same request in protobuf, through protobuf's own JSON reader
    (which wants base64 ids where OTLP/JSON has hex)."""
    document = copy.deepcopy(document)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(document, ExportTraceServiceRequest())
