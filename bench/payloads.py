"""The three request shapes the benchmark sends, built once before the clock starts.

Every shape comes from a fixture in ``tests/fixtures`` (the wire formats the relay is tested with):

- ``otlp-json``: OpenRouter Broadcast's production chat span, one span per OTLP/JSON request;
- ``otlp-proto``: the GenAI semconv span (20 attributes, an OpenTelemetry SDK app's shape) as
  OTLP protobuf, 100 spans per request;
- ``otoroshi``: the Otoroshi ``LLMUsageAudit`` webhook events, 100 per JSON array.

Each scenario has several variants whose trace/span ids or ``@id`` differ, so that consecutive
requests are not byte-identical. The relay does not deduplicate, so repeating a variant is fine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

FIXTURES: Final = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    path: str
    content_type: str
    events_per_request: int


SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario("otlp-json", "OTLP/JSON, 1 span/request", "/v1/traces", "application/json", 1),
        Scenario(
            "otlp-proto",
            "OTLP protobuf, 100 spans/request",
            "/v1/traces",
            "application/x-protobuf",
            100,
        ),
        Scenario(
            "otoroshi",
            "Otoroshi webhook, 100 events/request",
            "/v1/webhooks/otoroshi",
            "application/json",
            100,
        ),
    )
}


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _hex(*parts: object, size: int) -> str:
    """A deterministic hex id of ``size`` bytes: runs are reproducible byte for byte."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[: size * 2]


def build(scenario: str, variants: int) -> list[bytes]:
    """``variants`` request bodies for ``scenario``, each carrying ``events_per_request`` events."""
    if scenario == "otlp-json":
        return [_otlp_json(v) for v in range(variants)]
    if scenario == "otlp-proto":
        return [_otlp_proto(v, SCENARIOS[scenario].events_per_request) for v in range(variants)]
    if scenario == "otoroshi":
        return [_otoroshi(v, SCENARIOS[scenario].events_per_request) for v in range(variants)]
    raise ValueError(f"unknown scenario {scenario!r}")


# -- OpenRouter single span, OTLP/JSON -----------------------------------------------------------


def _otlp_json(variant: int) -> bytes:
    requests = _fixture("openrouter-otlp-example.json")["requests"]
    body = copy.deepcopy(requests[-1]["request"]["body"])  # the production chat request
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = _hex("json-trace", variant, size=16)
    span["spanId"] = _hex("json-span", variant, size=8)
    end = time.time_ns()
    span["startTimeUnixNano"] = str(end - 2_350_000_000)
    span["endTimeUnixNano"] = str(end)
    return json.dumps(body, separators=(",", ":")).encode()


# -- GenAI semconv spans, OTLP protobuf ----------------------------------------------------------


def _any_value(value: dict[str, Any]) -> AnyValue:
    (kind, item), *_ = value.items()
    if kind == "stringValue":
        return AnyValue(string_value=item)
    if kind == "intValue":
        return AnyValue(int_value=int(item))
    if kind == "doubleValue":
        return AnyValue(double_value=float(item))
    if kind == "boolValue":
        return AnyValue(bool_value=bool(item))
    if kind == "arrayValue":
        result = AnyValue()
        result.array_value.values.extend(_any_value(v) for v in item.get("values", ()))
        return result
    raise ValueError(f"unexpected OTLP/JSON value kind {kind!r}")


def _key_values(attributes: list[dict[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=kv["key"], value=_any_value(kv["value"])) for kv in attributes]


def _otlp_proto(variant: int, spans: int) -> bytes:
    body = _fixture("genai-semconv-span-example.json")["body"]
    template = body["resourceSpans"][0]
    source = template["scopeSpans"][0]["spans"][0]
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(_key_values(template["resource"]["attributes"]))
    scope_spans = resource_spans.scope_spans.add()
    scope = template["scopeSpans"][0].get("scope", {})
    scope_spans.scope.name = scope.get("name", "")
    scope_spans.scope.version = scope.get("version", "")
    attributes = _key_values(source["attributes"])
    end = time.time_ns()
    for index in range(spans):
        span = scope_spans.spans.add(
            trace_id=bytes.fromhex(_hex("proto-trace", variant, index, size=16)),
            span_id=bytes.fromhex(_hex("proto-span", variant, index, size=8)),
            name=source["name"],
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=end - 2_350_000_000,
            end_time_unix_nano=end,
        )
        span.attributes.extend(attributes)
        span.status.code = Status.STATUS_CODE_UNSET
    return request.SerializeToString()


# -- Otoroshi LLMUsageAudit webhook array ------------------------------------------------------


def _otoroshi(variant: int, events: int) -> bytes:
    templates = [
        event
        for entry in _fixture("otoroshi-llmusageaudit-example.json")["requests"]
        for event in entry["request"]["body"]
    ]
    now_ms = int(time.time() * 1000)
    batch = []
    for index in range(events):
        event = copy.deepcopy(templates[index % len(templates)])
        event["@id"] = str(int(_hex("otoroshi", variant, index, size=7), 16))
        event["@timestamp"] = now_ms
        batch.append(event)
    return json.dumps(batch, separators=(",", ":")).encode()
