"""The largest bodies the relay takes, one per input format, for ``bench.overload``.

Each body is filled with items from ``tests/fixtures`` (the wire formats the relay is tested with)
until the next item would pass ``target`` bytes, the size just under ``RELAY_MAX_BODY_BYTES``:

- ``otlp-proto``: the GenAI semconv span (20 attributes) repeated, OTLP protobuf;
- ``otlp-json``: the same span as OTLP/JSON;
- ``otoroshi``: the ``LLMUsageAudit`` events, one JSON array;
- ``litellm``: the current ``generic_api`` payload (``json_array``: chat, stream, failure,
  embedding, tool call);
- ``litellm-v1``: the legacy payload, whose values are Python reprs the relay parses with
  ``ast``; each item's ``messages`` and ``response`` reprs are made just under the normalizer's
  128 KiB limit (MAX_REPR_CHARS) (or an eighth of the cap, when it is small) and built of many small
  messages and choices, the most syntax nodes per byte a sender can make the relay parse;
- ``native``: LLMEvents in the relay's own schema (each validated with the JSON Schema);
- ``otlp-proto+gzip``: the protobuf body gzip-compressed (what a Collector sends), expanding to
  just under the cap.

Every item has its own ids, so the relay stores each as a distinct event.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.payloads import FIXTURES, build
from receiver.normalizers.litellm_v1 import MAX_REPR_CHARS

# How far under the cap a body stays: "just under", whatever the item sizes.
SLACK_BYTES: Final = 1024
# A longer repr is kept as text, not parsed: the costliest body has reprs just under the limit.
V1_REPR_CHARS_MAX: Final = MAX_REPR_CHARS - 1024


@dataclass(frozen=True, slots=True)
class HeavyBody:
    name: str
    path: str
    content_type: str
    body: bytes
    events: int  # LLM calls in the body: each should become one event
    expanded_bytes: int  # the size the relay decodes (after decompression)
    encoding: str | None = None


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _fill(prefix: bytes, items: Iterable[bytes], suffix: bytes, target: int) -> tuple[bytes, int]:
    """``prefix`` + items joined by commas + ``suffix``, as many items as fit in ``target``."""
    parts: list[bytes] = []
    size = len(prefix) + len(suffix)
    for item in items:
        extra = len(item) + (1 if parts else 0)
        if size + extra > target:
            break
        parts.append(item)
        size += extra
    if not parts:
        raise ValueError(f"not even one item fits in {target} bytes")
    return prefix + b",".join(parts) + suffix, len(parts)


def _trace_id(kind: int, index: int) -> bytes:
    return bytes([0xB0 + kind]) + index.to_bytes(15, "big")


def _span_id(kind: int, index: int) -> bytes:
    return bytes([0xB0 + kind]) + index.to_bytes(7, "big")


# -- OTLP ----------------------------------------------------------------------------------------


def otlp_proto_bytes(target: int) -> tuple[bytes, int]:
    """As many copies of the bench's GenAI span as fit in ``target`` bytes of protobuf."""
    request = ExportTraceServiceRequest.FromString(build("otlp-proto", 1)[0])
    scope = request.resource_spans[0].scope_spans[0]
    template = copy.deepcopy(scope.spans[0])
    del scope.spans[:]
    # Every span has the same encoded size (fixed-size ids): 1 tag byte, its length, the span.
    span_size = template.ByteSize()
    per_span = 1 + len(_varint(span_size)) + span_size
    count = max(1, (target - request.ByteSize() - 16) // per_span)
    for index in range(count):
        span = scope.spans.add()
        span.CopyFrom(template)
        span.trace_id = _trace_id(1, index)
        span.span_id = _span_id(1, index)
    while request.ByteSize() > target and len(scope.spans) > 1:
        del scope.spans[-1]
    return request.SerializeToString(), len(scope.spans)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def otlp_json_bytes(target: int) -> tuple[bytes, int]:
    body = _fixture("genai-semconv-span-example.json")["body"]
    scope = body["resourceSpans"][0]["scopeSpans"][0]
    template = scope.pop("spans")[0]
    scope["spans"] = []
    wrapper = orjson.dumps(body)
    marker = b'"spans":[]'
    head, tail = wrapper.split(marker)

    def spans() -> Iterator[bytes]:
        for index in itertools.count():
            template["traceId"] = _trace_id(2, index).hex()
            template["spanId"] = _span_id(2, index).hex()
            yield orjson.dumps(template)

    return _fill(head + b'"spans":[', spans(), b"]" + tail, target)


# -- webhooks ------------------------------------------------------------------------------------


def _json_items(
    templates: list[Any], vary: Callable[[Any, int], None], target: int
) -> tuple[bytes, int]:
    def items() -> Iterator[bytes]:
        for index in itertools.count():
            item = copy.deepcopy(templates[index % len(templates)])
            vary(item, index)
            yield orjson.dumps(item)

    return _fill(b"[", items(), b"]", target)


def otoroshi_bytes(target: int) -> tuple[bytes, int]:
    requests = _fixture("otoroshi-llmusageaudit-example.json")["requests"]
    templates = [event for entry in requests for event in entry["request"]["body"]]

    def vary(event: dict[str, Any], index: int) -> None:
        event["@id"] = str(7_000_000_000_000 + index)

    return _json_items(templates, vary, target)


def litellm_bytes(target: int) -> tuple[bytes, int]:
    post = _fixture("litellm-generic-api-json_array-captured.json")["posts"][0]
    templates = json.loads(post["body"])

    def vary(item: dict[str, Any], index: int) -> None:
        item["id"] = f"chatcmpl-bench{index:09d}"
        item["litellm_call_id"] = f"b3000000-0000-4000-8000-{index:012d}"

    return _json_items(templates, vary, target)


def native_bytes(target: int) -> tuple[bytes, int]:
    templates = _fixture("native-llm-events-example.json")["requests"][0]["request"]["body"]

    def vary(event: dict[str, Any], index: int) -> None:
        event["event_id"] = f"bench-native-{index:09d}"
        event["trace_id"] = _trace_id(4, index).hex()
        event["span_id"] = _span_id(4, index).hex()

    return _json_items(templates, vary, target)


# -- LiteLLM legacy (v1) -------------------------------------------------------------------------


def _repeated_repr(head: str, parts: Callable[[int], str], tail: str, chars: int) -> str:
    """``head`` + parts joined by ", " + ``tail``, as many parts as fit in ``chars``."""
    pieces: list[str] = []
    size = len(head) + len(tail)
    for index in itertools.count():
        piece = parts(index)
        if size + len(piece) + 2 > chars:
            break
        pieces.append(piece)
        size += len(piece) + 2
    return head + ", ".join(pieces) + tail


def _v1_messages(chars: int) -> str:
    def message(index: int) -> str:
        role = "user" if index % 2 == 0 else "assistant"
        return repr({"role": role, "content": f"Turn {index}: what is the weather in Paris?"})

    return _repeated_repr("[", message, "]", chars)


def _v1_response(template: str, chars: int) -> str:
    """The fixture's ``ModelResponse(...)`` repr with its one choice made into many."""
    head, rest = template.split("choices=[", 1)
    _, tail = rest.split("], usage=", 1)

    def choice(index: int) -> str:
        return (
            f"Choices(finish_reason='stop', index={index}, message=Message(content='Answer"
            f" {index}.', role='assistant', tool_calls=None, function_call=None,"
            " provider_specific_fields=None), provider_specific_fields={})"
        )

    return _repeated_repr(head + "choices=[", choice, "], usage=" + tail, chars)


def litellm_v1_bytes(target: int) -> tuple[bytes, int]:
    post = _fixture("litellm-generic-api-v1-captured.json")["posts"][0]
    template = json.loads(post["body"])[0]  # a chat call
    chars = min(V1_REPR_CHARS_MAX, target // 8)
    template["messages"] = _v1_messages(chars)
    template["response"] = _v1_response(template["response"], chars)
    call_id = "a9a6db78-8e67-4df6-a1d7-a0561441e8f3"  # the fixture's, inside the metadata repr
    assert call_id in template["metadata"], "the v1 fixture changed: update the call id"

    def vary(item: dict[str, Any], index: int) -> None:
        item["id"] = f"chatcmpl-benchv1{index:09d}"
        item["metadata"] = item["metadata"].replace(
            call_id, f"b5000000-0000-4000-8000-{index:012d}"
        )

    return _json_items([template], vary, target)


# -- all of them ---------------------------------------------------------------------------------

JSON: Final = "application/json"
PROTOBUF: Final = "application/x-protobuf"
Builder = Callable[[int], tuple[bytes, int]]
# name, route, Content-Type, builder: the routes and types of receiver/ingest.py's INGRESS.
PLAIN: Final[tuple[tuple[str, str, str, Builder], ...]] = (
    ("otlp-proto", "/v1/traces", PROTOBUF, otlp_proto_bytes),
    ("otlp-json", "/v1/traces", JSON, otlp_json_bytes),
    ("otoroshi", "/v1/webhooks/otoroshi", JSON, otoroshi_bytes),
    ("litellm", "/v1/webhooks/litellm", JSON, litellm_bytes),
    ("litellm-v1", "/v1/webhooks/litellm", JSON, litellm_v1_bytes),
    ("native", "/v1/events", JSON, native_bytes),
)
GZIPPED: Final = "otlp-proto+gzip"
FORMATS: Final = (*(name for name, *_ in PLAIN), GZIPPED)


def heavy_bodies(limit: int) -> Iterator[HeavyBody]:
    """One body per format, each just under ``limit`` bytes as the relay decodes it; built one at
    a time, so that only one is held in memory."""
    target = limit - SLACK_BYTES
    for name, path, content_type, make in PLAIN:
        body, events = make(target)
        yield HeavyBody(name, path, content_type, body, events, len(body))
    body, events = otlp_proto_bytes(target)
    compressed = gzip.compress(body, compresslevel=6)
    yield HeavyBody(GZIPPED, "/v1/traces", PROTOBUF, compressed, events, len(body), "gzip")
