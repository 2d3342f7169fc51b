"""Hypothesis strategies for hostile request bodies, each carrying planted secrets.

Every generated body comes with the secrets planted in it, each where the README promises one is
removed: under a key that names a credential (at any depth), as a value that is one (``Bearer
...``, ``sk-...``, also inside arrays), as the password or ``?api_key=`` of a URL, and inside an
error message. A secret is a fresh random token, so it can only reach an output by leaking.

The OTLP bodies are built from generated spans (every value type, NaN and infinities, huge and
negative numbers, deep nesting, identifiers of the wrong length, broken UTF-8); the webhook and
native bodies are the captured or documented fixtures, mutated: values replaced, keys removed,
secrets inserted into any object.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import secrets as random_tokens
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.conftest import fixture_json

# Key names that say "credential" as senders spell them (README, "The LLMEvent").
SECRET_KEYS = (
    "api_key",
    "authorization",
    "Authorization",
    "authToken",
    "x-api-key",
    "x-auth",
    "aws_secret_access_key",
    "user_password_plain",
    "openai_key",
    "api_key_value",
    "client_secret",
    "password",
    "cookie",
)
GENAI_KEYS = (
    "gen_ai.operation.name",
    "gen_ai.system",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cost",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.response.finish_reasons",
    "gen_ai.request.temperature",
    "llm.invocation_parameters",
    "llm.model_name",
    "input.value",
    "output.value",
    "openinference.span.kind",
    "user.id",
    "session.id",
    "trace.metadata",
    "error.type",
    "http.response.status_code",
)


@dataclass
class Planted:
    """A body and the secrets planted in it."""

    path: str
    content_type: str
    body: bytes
    secrets: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def _secret() -> str:
    # Letters and digits only: a credential as keys are written, never found by chance.
    return "pl4nted" + random_tokens.token_hex(10)


@st.composite
def planted_value(draw: st.DrawFn, planted: list[str]) -> tuple[str, Any]:
    """A (key, value) pair that carries a secret the relay must drop or mask."""
    secret = _secret()
    planted.append(secret)
    shape = draw(st.sampled_from(("key", "bearer", "sk", "url", "query", "nested", "array")))
    name = draw(st.sampled_from(SECRET_KEYS))
    if shape == "key":
        return name, secret
    if shape == "bearer":
        return draw(st.sampled_from(("note", "header", "x.value"))), f"Bearer {secret}"
    if shape == "sk":
        return draw(st.sampled_from(("note", "llm.key_used"))), f"sk-{secret}"
    if shape == "url":
        return "server.url", f"https://bot:{secret}@proxy.example/v1"
    if shape == "query":
        return "url.full", f"https://api.example/v1/chat?api_key={secret}&x=1"
    if shape == "nested":
        return "llm.invocation_parameters", {"model": "m", "nested": {name: secret}}
    return "http.request.headers", ["accept: */*", f"Bearer {secret}"]


# -- values as any sender might write them -------------------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(("", "None", "null", "-1", "1e309", "NaN", "gpt-4o", '{"role": 1}', "[1, 2]")),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, _text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _any_value(value: Any, depth: int = 0) -> AnyValue:
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=max(-(2**63), min(2**63 - 1, value)))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        array = AnyValue()
        array.array_value.values.extend(_any_value(item, depth + 1) for item in value)
        return array
    if isinstance(value, dict):
        kvlist = AnyValue()
        kvlist.kvlist_value.values.extend(
            KeyValue(key=str(k), value=_any_value(v, depth + 1)) for k, v in value.items()
        )
        return kvlist
    return AnyValue(string_value=str(value))


def _json_any_value(value: Any, style: int) -> Any:
    """OTLP/JSON's AnyValue, in the spellings senders use (int as string or number, bare lists)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value) if style % 2 else value}
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"doubleValue": str(value).replace("inf", "Infinity").replace("nan", "NaN")}
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list):
        values = [_json_any_value(item, style) for item in value]
        return {"arrayValue": values if style % 3 == 0 else {"values": values}}
    if isinstance(value, dict):
        pairs = [{"key": str(k), "value": _json_any_value(v, style)} for k, v in value.items()]
        return {"kvlistValue": pairs if style % 3 == 0 else {"values": pairs}}
    return {"stringValue": str(value)}


@st.composite
def span_attributes(draw: st.DrawFn, planted: list[str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.request.model": draw(_text)}
    for key in draw(st.lists(st.sampled_from(GENAI_KEYS), max_size=8, unique=True)):
        value = draw(json_values)
        if key.endswith("messages") and draw(st.booleans()):
            value = json.dumps(value)
        attributes[key] = value
    for _ in range(draw(st.integers(1, 3))):
        key, value = draw(planted_value(planted))
        attributes[key] = value
    return attributes


@st.composite
def otlp_spans(draw: st.DrawFn, planted: list[str]) -> list[dict[str, Any]]:
    """Spans as plain data: ids of any length, times in any order, every value type."""
    spans = []
    for _ in range(draw(st.integers(1, 3))):
        secret = _secret()
        planted.append(secret)
        spans.append(
            {
                "trace_id": draw(st.binary(min_size=0, max_size=20)),
                "span_id": draw(st.binary(min_size=0, max_size=10)),
                "parent_span_id": draw(st.binary(min_size=0, max_size=10)),
                "name": draw(st.sampled_from(("chat m", "openai.chat", "ChatCompletion", ""))),
                "start": draw(st.integers(0, 2**64 - 1)),
                "end": draw(st.integers(0, 2**64 - 1)),
                "status": draw(st.integers(0, 3)),
                "message": f"upstream refused: Bearer {secret}",
                "attributes": draw(span_attributes(planted)),
                "exception": f"AuthenticationError: api_key={_planted(planted)} is invalid",
            }
        )
    return spans


def _planted(planted: list[str]) -> str:
    secret = _secret()
    planted.append(secret)
    return secret


def otlp_proto_body(spans: list[dict[str, Any]]) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for data in spans:
        span = scope.spans.add(
            trace_id=data["trace_id"],
            span_id=data["span_id"],
            parent_span_id=data["parent_span_id"],
            name=data["name"],
            start_time_unix_nano=data["start"],
            end_time_unix_nano=data["end"],
            status=Status(code=data["status"] % 3, message=data["message"]),
        )
        span.attributes.extend(
            KeyValue(key=k, value=_any_value(v)) for k, v in data["attributes"].items()
        )
        event = span.events.add(name="exception")
        event.attributes.add(key="exception.message").value.string_value = data["exception"]
        span.kind = Span.SPAN_KIND_CLIENT
    return request.SerializeToString()


def otlp_json_body(spans: list[dict[str, Any]], style: int) -> bytes:
    out = []
    for data in spans:
        attributes = [
            {"key": k, "value": _json_any_value(v, style)} for k, v in data["attributes"].items()
        ]
        out.append(
            {
                "traceId": data["trace_id"].hex(),
                "spanId": data["span_id"].hex(),
                "parentSpanId": data["parent_span_id"].hex(),
                "name": data["name"],
                "startTimeUnixNano": str(data["start"]),
                "endTimeUnixNano": data["end"] if style % 2 else str(data["end"]),
                "status": {"code": data["status"], "message": data["message"]},
                "attributes": attributes,
                "events": [
                    {
                        "name": "exception",
                        "attributes": [
                            {
                                "key": "exception.message",
                                "value": {"stringValue": data["exception"]},
                            }
                        ],
                    }
                ],
            }
        )
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": out}]}]}).encode()


@st.composite
def otlp_bodies(draw: st.DrawFn) -> Planted:
    planted: list[str] = []
    spans = draw(otlp_spans(planted))
    if draw(st.booleans()):
        body = otlp_proto_body(spans)
        body = draw(_damaged(body))
        return Planted("/v1/traces", "application/x-protobuf", body, planted)
    body = otlp_json_body(spans, draw(st.integers(0, 5)))
    return Planted("/v1/traces", "application/json", draw(_damaged(body)), planted)


@st.composite
def _damaged(draw: st.DrawFn, body: bytes) -> bytes:
    """Mostly whole; sometimes cut short, a byte flipped, or broken UTF-8 put in."""
    how = draw(st.sampled_from(("whole", "whole", "whole", "cut", "flip", "utf8")))
    if how == "whole" or not body:
        return body
    at = draw(st.integers(0, len(body) - 1))
    if how == "cut":
        return body[:at]
    if how == "flip":
        return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
    return body[:at] + b"\xff\xfe\xc3" + body[at:]


# -- webhook and native bodies: the fixtures, mutated ---------------------------------------------


def _fixture_bodies() -> dict[str, list[Any]]:
    litellm = [
        orjson.loads(post["body"])
        for name in ("json_array", "v1")
        for post in fixture_json(f"litellm-generic-api-{name}-captured.json")["posts"]
        if post["log_format"] == "json_array"
    ]
    return {
        "/v1/webhooks/otoroshi": [
            r["request"]["body"]
            for r in fixture_json("otoroshi-llmusageaudit-example.json")["requests"]
        ],
        "/v1/webhooks/litellm": litellm,
        "/v1/events": [
            r["request"]["body"] for r in fixture_json("native-llm-events-example.json")["requests"]
        ],
    }


FIXTURE_BODIES = _fixture_bodies()


def _objects(value: Any) -> list[Any]:
    """Every dict and list inside ``value``, outermost first."""
    found: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            found.append(item)
            stack.extend(item)
    return found


@st.composite
def webhook_bodies(draw: st.DrawFn) -> Planted:
    path = draw(st.sampled_from(sorted(FIXTURE_BODIES)))
    body = copy.deepcopy(draw(st.sampled_from(FIXTURE_BODIES[path])))
    planted: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        containers = _objects(body)
        target = containers[draw(st.integers(0, len(containers) - 1))]
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            if draw(st.booleans()):
                target[key] = draw(json_values)
            else:
                del target[key]
        elif isinstance(target, list) and target:
            target[draw(st.integers(0, len(target) - 1))] = draw(json_values)
    dicts = [o for o in _objects(body) if isinstance(o, dict)] or [{}]
    for _ in range(draw(st.integers(1, 4))):
        target = dicts[draw(st.integers(0, len(dicts) - 1))]
        key, value = draw(planted_value(planted))
        target[key] = value
    if path == "/v1/events":
        # Names a native sender chooses: a key's name, the gateway.
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and draw(st.booleans()):
                item["api_key"] = {"name": str({"api_key": _planted(planted)})}
            if isinstance(item, dict) and isinstance(item.get("source"), dict):
                item["source"]["gateway"] = draw(st.sampled_from(("Bearer ", "sk-"))) + _planted(
                    planted
                )
    error = {"message": f"provider said: invalid api_key={_planted(planted)}"}
    for item in body if isinstance(body, list) else [body]:
        if isinstance(item, dict) and draw(st.booleans()):
            item["error"] = error
    # The standard library writes integers beyond 64 bits and NaN, as a careless sender would.
    raw = json.dumps(body).encode()
    headers = {}
    if draw(st.booleans()):
        raw, headers = gzip.compress(raw), {"Content-Encoding": "gzip"}
    return Planted(path, "application/json", raw, planted, headers)


@st.composite
def garbage_bodies(draw: st.DrawFn) -> Planted:
    path = draw(st.sampled_from(("/v1/traces", *sorted(FIXTURE_BODIES))))
    content_type = draw(
        st.sampled_from(("application/json", "application/x-protobuf", "text/plain", ""))
    )
    encoding = draw(st.sampled_from(("", "gzip", "deflate", "zstd", "br", "gzip, gzip")))
    body = draw(st.binary(max_size=200))
    headers = {"Content-Encoding": encoding} if encoding else {}
    return Planted(path, content_type, body, [], headers)


any_body = st.one_of(otlp_bodies(), webhook_bodies(), garbage_bodies())
