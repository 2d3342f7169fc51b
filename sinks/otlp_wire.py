"""OTLP trace requests written straight to protobuf wire format, for the Tempo sink.

Building upb messages costs a Python object per span, attribute and value, then a copy on
serialization: about 50 µs for one GenAI span, as much as normalizing it. The few OTLP messages a
span needs are simple (strings, varints, fixed64, nested length-delimited fields), so they are
written here directly, in field-number order as protobuf itself writes them. The tests check that
upb parses every body and re-serializes it to the same bytes.

Field numbers are those of opentelemetry-proto's ``trace.proto``, ``common.proto`` and
``resource.proto`` (v1).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from foundation.memo import Memo

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1

# Wire tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
_ANY_STRING: Final = b"\x0a"
_ANY_BOOL_TRUE: Final = b"\x10\x01"
_ANY_BOOL_FALSE: Final = b"\x10\x00"
_ANY_INT: Final = b"\x18"
_ANY_DOUBLE: Final = b"\x21"
_ANY_ARRAY: Final = b"\x2a"
_KV_KEY: Final = b"\x0a"
_KV_VALUE: Final = b"\x12"
_SPAN_ATTRIBUTE: Final = b"\x4a"
_RESOURCE_ATTRIBUTE: Final = b"\x0a"

_MEMO_MAX_CHARS: Final = 64
_MEMO_NUMBERS: Final = frozenset({int, float, bool})
SPAN_KIND_CLIENT: Final = 3
STATUS_CODE_ERROR: Final = 2

# Varints below 2**14 (every length but big content) come from a table instead of a loop.
_SHORT_VARINTS: Final = tuple(
    bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(1 << 14)
)


def varint(value: int) -> bytes:
    if 0 <= value < 1 << 14:
        return _SHORT_VARINTS[value]
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + varint(len(payload)) + payload


def any_value(value: Any) -> bytes:
    """An ``AnyValue``, typed so that TraceQL compares numbers as numbers."""
    if isinstance(value, str):
        return field(_ANY_STRING, value.encode())
    if isinstance(value, bool):
        return _ANY_BOOL_TRUE if value else _ANY_BOOL_FALSE
    if isinstance(value, int):
        # int64 on the wire: a larger integer keeps its digits as a string rather than failing.
        if _INT64_MIN <= value <= _INT64_MAX:
            return _ANY_INT + varint(value)
        return field(_ANY_STRING, str(value).encode())
    if isinstance(value, float):
        return _ANY_DOUBLE + _pack_double(value)
    if (
        isinstance(value, list | tuple)
        and all(isinstance(item, str | int | float | bool) for item in value)
        and len({type(item) for item in value}) <= 1
    ):
        # OTLP arrays are homogeneous and of scalars: ArrayValue {repeated AnyValue values = 1}.
        return field(_ANY_ARRAY, b"".join(field(b"\x0a", any_value(item)) for item in value))
    # Maps and nested lists as JSON text: Tempo indexes neither kvlists nor nested arrays.
    return field(_ANY_STRING, orjson.dumps(value, default=str))


class AttributeEncoder:
    """``KeyValue`` fields, with the ones that repeat from span to span remembered.

    Most attributes of LLM spans repeat (operation, provider, model, gateway, format, small
    numbers): a dictionary lookup replaces their encoding. Only short scalars are remembered, and
    the memory is emptied when it reaches ``limit`` entries, so that unique values cannot grow it.
    """

    __slots__ = ("_known", "_tag", "_unique")

    def __init__(self, tag: bytes, unique: frozenset[str] = frozenset(), limit: int = 8192) -> None:
        self._tag = tag
        self._unique = unique  # keys whose values never repeat: not worth remembering
        self._known: Memo[tuple[str, type, Any], bytes] = Memo(limit)

    def __len__(self) -> int:
        """How many encodings are remembered."""
        return len(self._known)

    def encode(self, attributes: Mapping[str, Any]) -> bytes:
        """Every attribute whose value is not ``None``, as repeated ``KeyValue`` fields."""
        lookup, remember = self._known.get, self._known.put
        out = []
        for key, value in attributes.items():
            if value is None:
                continue
            # Short strings and numbers repeat; lists cannot be dictionary keys, long text is
            # unique (and must not pin memory). The type is part of the key: 1, 1.0 and True are
            # equal in Python, not on the wire.
            kind = type(value)
            if (
                ((kind is str and len(value) <= _MEMO_MAX_CHARS) or kind in _MEMO_NUMBERS)
                and len(key) <= _MEMO_MAX_CHARS
                and key not in self._unique
            ):
                memo: tuple[str, type, Any] | None = (key, kind, value)
            else:
                memo = None
            encoded = lookup(memo) if memo is not None else None
            if encoded is None:
                pair = field(_KV_KEY, key.encode()) + field(_KV_VALUE, any_value(value))
                encoded = field(self._tag, pair)
                if memo is not None:
                    remember(memo, encoded)
            out.append(encoded)
        return b"".join(out)


SPAN_ATTRIBUTES: Final = AttributeEncoder(
    _SPAN_ATTRIBUTE, unique=frozenset({"relay.event_id", "gen_ai.response.id"})
)
RESOURCE_ATTRIBUTES: Final = AttributeEncoder(_RESOURCE_ATTRIBUTE)


def span(
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes | None,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    error_message: str | None,
) -> bytes:
    """One ``Span``; ``error_message`` not ``None`` sets status ERROR with that message."""
    parts = [
        field(b"\x0a", trace_id),
        field(b"\x12", span_id),
        field(b"\x22", parent_span_id) if parent_span_id else b"",
        field(b"\x2a", name.encode()) if name else b"",
        b"\x30" + varint(kind) if kind else b"",
        b"\x39" + _pack_fixed64(start_ns) if start_ns else b"",
        b"\x41" + _pack_fixed64(end_ns) if end_ns else b"",
        SPAN_ATTRIBUTES.encode(attributes),
    ]
    if error_message is not None:
        message = field(b"\x12", error_message.encode()) if error_message else b""
        parts.append(field(b"\x7a", message + b"\x18" + varint(STATUS_CODE_ERROR)))
    return b"".join(parts)


def resource_spans(
    resource: Mapping[str, Any],
    scope_name: str,
    scope_version: str,
    schema_url: str,
    spans: Iterable[bytes],
) -> bytes:
    """One ``ResourceSpans`` with one ``ScopeSpans`` holding ``spans`` (each from ``span``)."""
    scope = field(b"\x0a", scope_name.encode()) + field(b"\x12", scope_version.encode())
    scope_spans = (
        field(b"\x0a", scope)
        + b"".join(field(b"\x12", s) for s in spans)
        + field(b"\x1a", schema_url.encode())
    )
    return field(b"\x0a", RESOURCE_ATTRIBUTES.encode(resource)) + field(b"\x12", scope_spans)


def export_request(groups: Iterable[bytes]) -> bytes:
    """An ``ExportTraceServiceRequest`` of ``ResourceSpans`` (each from ``resource_spans``)."""
    return b"".join(field(b"\x0a", group) for group in groups)
