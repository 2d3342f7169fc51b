"""``sinks.otlp_wire`` writes OTLP protobuf by hand: the official classes must read back every
field it writes, typed as written, and re-serialize the body to the same bytes."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sinks import otlp_wire
from sinks.otlp_wire import AttributeEncoder
from tests.helpers.otlp_values import key_values

TRACE_ID = bytes(range(16))
SPAN_ID = bytes(range(100, 108))
PARENT_ID = bytes(range(200, 208))
START_NS = 1_772_400_000_123_456_789  # beyond 32 bits: fixed64 on the wire
END_NS = START_NS + 2_350_000_000
LONG_TEXT = "prompt " * 3000  # a length varint of three bytes
SPAN_ATTRIBUTES: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.request.stream": True,
    "relay.test": False,
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.zero": 0,
    "negative": -5,
    "int64.max": (1 << 63) - 1,
    "int64.min": -(1 << 63),
    "gen_ai.request.temperature": 0.2,
    "gen_ai.usage.cost": 0.00885,
    "huge.float": -1.5e300,
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "token.counts": [1, 2, 3],
    "flags": [True, False],
    "unicode": "résumé 東京 🚀",
    "empty": "",
    "gen_ai.input.messages": LONG_TEXT,
    "absent": None,
}


def value_of(value: AnyValue) -> Any:
    """A parsed ``AnyValue`` as the Python value it holds."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind is not None else None


def kinds_of(attributes: Any) -> dict[str, str | None]:
    return {kv.key: kv.value.WhichOneof("value") for kv in attributes}


def values_of(attributes: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in attributes}


def write_span(**changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "parent_span_id": PARENT_ID,
        "name": "chat gpt-4o",
        "kind": otlp_wire.SPAN_KIND_CLIENT,
        "start_ns": START_NS,
        "end_ns": END_NS,
        "attributes": SPAN_ATTRIBUTES,
        "error_message": None,
    }
    fields.update(changes)
    return otlp_wire.span(**fields)


def parsed(*spans: bytes, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    """``spans`` in one request as the sink builds it, parsed by the official classes; the
    re-serialized request must be the very bytes written."""
    body = otlp_wire.export_request(
        [otlp_wire.resource_spans(resource or {}, "relay", "1.2.3", "https://schema/1", spans)]
    )
    request = ExportTraceServiceRequest.FromString(body)
    assert request.SerializeToString() == body
    return request


def only_span(request: ExportTraceServiceRequest) -> Span:
    (resource_spans,) = request.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    (span,) = scope_spans.spans
    return span


def test_a_span_round_trips_ids_times_kind_and_name() -> None:
    span = only_span(parsed(write_span()))
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE_ID, SPAN_ID, PARENT_ID)
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (START_NS, END_NS)
    assert span.kind == Span.SPAN_KIND_CLIENT == otlp_wire.SPAN_KIND_CLIENT
    assert span.name == "chat gpt-4o"
    assert not span.HasField("status")


def test_fields_left_empty_are_not_written() -> None:
    span = only_span(
        parsed(
            write_span(parent_span_id=None, name="", kind=0, start_ns=0, end_ns=0, attributes={})
        )
    )
    assert (span.trace_id, span.span_id) == (TRACE_ID, SPAN_ID)
    assert (span.parent_span_id, span.name, span.kind) == (b"", "", 0)
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (0, 0)
    assert list(span.attributes) == []
    # Nothing but the two ids: (tag, length) + 16 bytes and (tag, length) + 8 bytes.
    assert len(span.SerializeToString()) == 2 + 16 + 2 + 8


def test_every_attribute_keeps_its_value_and_its_type() -> None:
    span = only_span(parsed(write_span()))
    expected = {k: v for k, v in SPAN_ATTRIBUTES.items() if v is not None}
    assert [kv.key for kv in span.attributes] == list(expected)  # in order, None dropped
    assert values_of(span.attributes) == expected
    kinds = kinds_of(span.attributes)
    for key, value in expected.items():
        if isinstance(value, list):
            assert kinds[key] == "array_value", key
        else:
            # bool before int: True is an int in Python, not on the wire
            expected_kind = {bool: "bool_value", int: "int_value", float: "double_value"}
            assert kinds[key] == expected_kind.get(type(value), "string_value"), key
    arrays = {kv.key: kv.value.array_value.values for kv in span.attributes}
    assert {v.WhichOneof("value") for v in arrays["gen_ai.response.finish_reasons"]} == {
        "string_value"
    }
    assert {v.WhichOneof("value") for v in arrays["token.counts"]} == {"int_value"}


def test_values_otlp_cannot_type_are_written_as_text() -> None:
    attributes = {
        "beyond.int64": 1 << 64,
        "map": {"team": "billing", "n": 1},
        "mixed.list": ["a", 1],
        "nested.list": [["a"], ["b"]],
    }
    values = values_of(only_span(parsed(write_span(attributes=attributes))).attributes)
    assert values == {
        "beyond.int64": str(1 << 64),  # digits kept, not wrapped around
        "map": orjson.dumps(attributes["map"]).decode(),
        "mixed.list": orjson.dumps(attributes["mixed.list"]).decode(),
        "nested.list": orjson.dumps(attributes["nested.list"]).decode(),
    }


def test_a_float_that_is_not_finite_stays_a_double() -> None:
    values = values_of(
        only_span(parsed(write_span(attributes={"inf": math.inf, "nan": math.nan}))).attributes
    )
    assert values["inf"] == math.inf
    assert math.isnan(values["nan"])


@pytest.mark.parametrize("message", ["upstream returned 429 Too Many Requests", "échec"])
def test_an_error_sets_status_error_with_its_message(message: str) -> None:
    span = only_span(parsed(write_span(error_message=message)))
    assert span.status.code == Status.STATUS_CODE_ERROR == otlp_wire.STATUS_CODE_ERROR
    assert span.status.message == message


def test_an_error_without_message_is_still_an_error() -> None:
    span = only_span(parsed(write_span(error_message="")))
    assert span.HasField("status")
    assert (span.status.code, span.status.message) == (Status.STATUS_CODE_ERROR, "")


def test_resource_scope_and_schema_url_round_trip() -> None:
    resource = {
        "service.name": "llm-broadcast-relay",
        "service.version": "0.9.0",
        "relay.instance": 3,
        "dropped": None,
    }
    request = parsed(write_span(), write_span(span_id=PARENT_ID), resource=resource)
    (resource_spans,) = request.resource_spans
    assert values_of(resource_spans.resource.attributes) == {
        k: v for k, v in resource.items() if v is not None
    }
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("relay", "1.2.3")
    assert scope_spans.schema_url == "https://schema/1"
    assert [span.span_id for span in scope_spans.spans] == [SPAN_ID, PARENT_ID]


def test_several_resource_groups_in_one_request() -> None:
    groups = [
        otlp_wire.resource_spans(
            {"service.name": name}, "relay", "1", "", [write_span(span_id=bytes([n]) * 8)]
        )
        for n, name in enumerate(("openrouter", "litellm", "otoroshi"), start=1)
    ]
    request = ExportTraceServiceRequest.FromString(otlp_wire.export_request(groups))
    assert [values_of(g.resource.attributes) for g in request.resource_spans] == [
        {"service.name": name} for name in ("openrouter", "litellm", "otoroshi")
    ]
    assert [g.scope_spans[0].spans[0].span_id for g in request.resource_spans] == [
        bytes([n]) * 8 for n in (1, 2, 3)
    ]


def test_an_empty_request_parses_as_empty() -> None:
    assert otlp_wire.export_request([]) == b""
    assert list(ExportTraceServiceRequest.FromString(b"").resource_spans) == []


def test_the_same_attributes_encode_like_the_official_classes() -> None:
    attributes = {k: v for k, v in SPAN_ATTRIBUTES.items() if v is not None}
    official = Span(trace_id=TRACE_ID, span_id=SPAN_ID)
    official.attributes.extend(key_values(attributes))
    written = write_span(
        parent_span_id=None, name="", kind=0, start_ns=0, end_ns=0, attributes=attributes
    )
    assert written == official.SerializeToString()


def test_remembered_encodings_keep_1_true_and_1_0_apart() -> None:
    encoder = AttributeEncoder(b"\x4a")
    written = [
        encoder.encode({"n": value})  # equal as dict keys in Python, not on the wire
        for value in (1, True, 1.0, 1, True, 1.0)
    ]
    decoded = [values_of(Span.FromString(w).attributes)["n"] for w in written]
    assert [type(v) for v in decoded] == [int, bool, float] * 2
    assert written[:3] == written[3:]


def test_the_remembered_encodings_are_bounded_and_still_right_after_clearing() -> None:
    encoder = AttributeEncoder(b"\x4a", unique=frozenset({"relay.event_id"}), limit=4)
    for number in range(10):
        attributes = {"gen_ai.usage.input_tokens": number, "relay.event_id": f"e{number}"}
        written = encoder.encode(attributes)
        assert values_of(Span.FromString(written).attributes) == attributes
        assert len(encoder) <= 4
    # A value beyond what is remembered (long text) is written each time, never remembered.
    before = len(encoder)
    assert values_of(Span.FromString(encoder.encode({"text": LONG_TEXT})).attributes) == {
        "text": LONG_TEXT
    }
    assert len(encoder) == before
    encoder.encode({"relay.event_id": "e-unique"})  # a key declared unique is never remembered
    assert len(encoder) == before
