"""LLMEvents as Datadog LLM Observability spans, in the two bodies Datadog's intakes take.

``agentless``: the documented public HTTP API body, ``{"data": {"type": "span", "attributes":
{ml_app, tags, spans}}}``, span kind in ``meta.kind``. ``agent``: what the Datadog tracer (ddtrace)
posts through an Agent's EVP proxy, a JSON array with one ``{"_dd.stage": "raw", "event_type":
"span", "spans": [span]}`` envelope per span, span kind in ``meta.span.kind``, model name and
provider at the top of ``meta``, ``ml_app`` as a tag.

Every event becomes one root span of kind ``llm``: the relay sends no ancestors, so a parent id
would point at a span Datadog never receives. Ids are encoded as ddtrace encodes them (32-hex trace
id, decimal span id). A span larger than the per-span limit has its message contents truncated with
a marker, so the event is delivered rather than lost.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import orjson

from receiver import __version__
from schemas import LLMEvent

Mode = Literal["agentless", "agent"]

ROOT_PARENT_ID: Final = "undefined"
TRACER_VERSION: Final = f"llm-broadcast-relay-{__version__}"
TRUNCATED: Final = (
    "…[truncated by llm-broadcast-relay: {dropped} characters over Datadog's span size limit]"
)
DROPPED: Final = "[dropped by llm-broadcast-relay: content over Datadog's span size limit]"
TAG_MAX_CHARS: Final = 200  # Datadog cuts tags at 200 characters
VALUE_MAX_CHARS: Final = 1024  # metadata strings: request parameters are short; cap the odd one
ERROR_MAX_CHARS: Final = 8192
ML_APP_MAX: Final = 193
ENVELOPE_ALLOWANCE: Final = 4096  # room for the body's wrapper around the spans
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z$")
_TEXT_PARTS: Final = frozenset({"text", "reasoning", "tool_call_response"})


@dataclass(frozen=True, slots=True)
class SpanFormat:
    """What every span of one sink shares."""

    mode: Mode
    ml_app: str
    global_tags: tuple[str, ...] = ()
    service: str | None = None  # DD_SERVICE; otherwise each span's service is its gateway
    max_span_bytes: int = 1_000_000
    max_payload_bytes: int = 4_000_000


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    body: bytes
    truncated: int  # spans whose content was cut to fit


def encode_batch(events: Sequence[LLMEvent], fmt: SpanFormat) -> EncodedBatch:
    """The request body for one batch; the caller compares its size with the payload limit."""
    limit = max(1024, min(fmt.max_span_bytes, fmt.max_payload_bytes - ENVELOPE_ALLOWANCE))
    truncated = 0
    items: list[bytes] = []
    encode = orjson.dumps if fmt.mode == "agentless" else _encode_envelope
    for event in events:
        data, cut = fit(llm_span(event, fmt), encode, limit)
        items.append(data)
        truncated += cut
    if fmt.mode == "agent":
        return EncodedBatch(b"[" + b",".join(items) + b"]", truncated)
    head = orjson.dumps({"ml_app": fmt.ml_app, "tags": list(fmt.global_tags)})[:-1]
    body = b'{"data":{"type":"span","attributes":' + head + b',"spans":['
    return EncodedBatch(body + b",".join(items) + b"]}}}", truncated)


def _encode_envelope(span: dict[str, Any]) -> bytes:
    envelope = {
        "_dd.stage": "raw",
        "_dd.tracer_version": TRACER_VERSION,
        "event_type": "span",
        "spans": [span],
    }
    return orjson.dumps(envelope)


def llm_span(event: LLMEvent, fmt: SpanFormat) -> dict[str, Any]:
    """One event as one span of kind ``llm`` in the sink's format."""
    start_ns = unix_ns(event.get("start_time"))
    end_ns = unix_ns(event.get("end_time"))
    if start_ns and end_ns >= start_ns:
        duration = end_ns - start_ns
    else:
        duration = round(float(event.get("duration_ms") or 0.0) * 1_000_000)
    operation = event.get("operation") or "chat"
    request_model = event.get("request_model")
    model = event.get("response_model") or request_model
    provider = (event.get("provider") or "").lower()
    span_id = decimal_id(event.get("span_id", ""))
    trace_id = event.get("trace_id", "")
    failed = event.get("status") == "error"

    meta: dict[str, Any] = {}
    metadata = span_metadata(event)
    if fmt.mode == "agentless":
        meta["kind"] = "llm"
        if model:
            metadata["model_name"] = model
        if provider:
            metadata["model_provider"] = provider
    else:
        meta["span"] = {"kind": "llm"}
        if model:
            meta["model_name"] = model
            meta["model_provider"] = provider or "custom"
    for key, messages in (
        ("input", event.get("input_messages")),
        ("output", event.get("output_messages")),
    ):
        converted = dd_messages(messages or ())
        if converted:
            meta[key] = {"messages": converted}
    meta["metadata"] = metadata
    if failed:
        meta["error"] = span_error(event, stack=fmt.mode == "agent")

    span: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": ROOT_PARENT_ID,
        "name": f"{operation} {request_model}" if request_model else operation,
        "start_ns": start_ns,
        "duration": duration,
        "status": "error" if failed else "ok",
        "meta": meta,
        "metrics": span_metrics(event),
        "tags": span_tags(event, fmt),
    }
    if event.get("session_id"):
        span["session_id"] = event["session_id"]
    if fmt.mode == "agent":
        # As ddtrace 4.16 sends it: every relayed event is kept, so sampled at 1.
        span["_dd"] = {
            "apm_trace_id": trace_id,
            "sample_rate": "1",
            "sampling_decision": "1",
            "span_id": span_id,
            "trace_id": trace_id,
        }
    return span


def span_metadata(event: LLMEvent) -> dict[str, str | float | bool]:
    """``meta.metadata``: flat strings, numbers and booleans (all the intake takes)."""
    metadata: dict[str, str | float | bool] = {}
    for key, value in (event.get("attributes") or {}).items():
        if key.startswith("gen_ai.request.") and key != "gen_ai.request.model":
            scalar = _scalar(value, numeric_strings=True)  # OpenRouter sends "0.2"
            if scalar is not None:
                metadata[key.removeprefix("gen_ai.request.")] = scalar
    source: Mapping[str, Any] = event.get("source") or {}
    cost = event.get("cost") or {}
    error = event.get("error") or {}
    facts: dict[str, Any] = {
        "operation": event.get("operation"),
        "request_model": event.get("request_model"),
        "response_model": event.get("response_model"),
        "gateway": source.get("gateway"),
        "upstream": event.get("upstream"),
        "stream": event.get("stream"),
        "finish_reasons": ",".join(event.get("finish_reasons") or ()) or None,
        "cost_usd": cost.get("total"),
        "cost_input_usd": cost.get("input"),
        "cost_output_usd": cost.get("output"),
        "cost_source": cost.get("source"),
        "http_status": error.get("http_status"),
        "user_id": event.get("user_id"),
        "api_key_name": (event.get("api_key") or {}).get("name"),
        "event_id": event.get("event_id"),
        "otel_span_id": event.get("span_id"),
        "otel_parent_span_id": event.get("parent_span_id"),
    }
    for key, value in facts.items():
        scalar = _scalar(value)
        if scalar is not None:
            metadata[key] = scalar
    return metadata


def span_metrics(event: LLMEvent) -> dict[str, float]:
    usage = event.get("usage") or {}
    metrics: dict[str, float] = {}
    for key in (
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        "reasoning_output_tokens",
    ):
        value = usage.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[key] = value
    if "total_tokens" not in metrics and "input_tokens" in metrics and "output_tokens" in metrics:
        metrics["total_tokens"] = metrics["input_tokens"] + metrics["output_tokens"]
    ttft_ms = event.get("ttft_ms")
    if isinstance(ttft_ms, int | float):
        metrics["time_to_first_token"] = ttft_ms / 1000.0  # Datadog wants seconds
    return metrics


def span_tags(event: LLMEvent, fmt: SpanFormat) -> list[str]:
    source: Mapping[str, Any] = event.get("source") or {}
    error = event.get("error") or {}
    failed = event.get("status") == "error"
    pairs: list[tuple[str, Any]] = []
    if fmt.mode == "agent":
        pairs.append(("ml_app", fmt.ml_app))
    if fmt.service is None:
        pairs.append(("service", source.get("gateway")))
    pairs += [
        ("gateway", source.get("gateway")),
        ("provider", event.get("provider")),
        ("upstream", event.get("upstream")),
        ("request_model", event.get("request_model")),
        ("response_model", event.get("response_model")),
        ("operation", event.get("operation")),
        ("tenant", source.get("tenant")),
        ("relay_test", "true" if source.get("test") else None),
        ("session_id", event.get("session_id")),
        ("error", "1" if failed else "0"),
        ("error_type", error_type(error) if failed else None),
    ]
    tags = [f"{key}:{value}"[:TAG_MAX_CHARS] for key, value in pairs if value not in (None, "")]
    if fmt.mode == "agent":  # no body-level tags in this format: every span carries them
        tags = sorted([*fmt.global_tags, *tags])
    return tags


def error_type(error: Mapping[str, Any]) -> str:
    if error.get("type"):
        return str(error["type"])
    return f"http_{error['http_status']}" if error.get("http_status") else "error"


def span_error(event: LLMEvent, *, stack: bool) -> dict[str, str]:
    error = event.get("error") or {}
    message = str(error.get("message") or "")
    if len(message) > ERROR_MAX_CHARS:
        message = message[:ERROR_MAX_CHARS] + TRUNCATED.format(
            dropped=len(message) - ERROR_MAX_CHARS
        )
    result = {"type": error_type(error), "message": message}
    if stack:  # ddtrace always sends the three fields
        result["stack"] = ""
    return result


def dd_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """GenAI ``[{role, parts}]`` as Datadog's ``[{role, content}]``; empty when nothing to show."""
    converted: list[dict[str, str]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        texts = [
            _part_text(part) for part in message.get("parts") or () if isinstance(part, Mapping)
        ]
        content = "\n".join(text for text in texts if text)
        converted.append({"role": str(message.get("role") or ""), "content": content})
    return converted if any(message["content"] for message in converted) else []


def _part_text(part: Mapping[str, Any]) -> str:
    kind = str(part.get("type") or "text")
    content = part.get("content")
    if kind in _TEXT_PARTS and content is not None:
        return content if isinstance(content, str) else json_text(content)
    if kind == "tool_call":
        arguments = part.get("arguments")
        text = arguments if isinstance(arguments, str) else json_text(arguments)
        return f"[tool_call {part.get('name') or ''}] {text}"
    return f"[{kind}]" if content is not None else ""  # images, files: never inline blobs


def fit(
    span: dict[str, Any], encode: Callable[[dict[str, Any]], bytes], limit: int
) -> tuple[bytes, int]:
    """The span encoded within ``limit`` bytes, message contents truncated if needed."""
    data = encode(span)
    if len(data) <= limit:
        return data, 0
    meta = span["meta"]
    messages = [m for key in ("input", "output") for m in meta.get(key, {}).get("messages", ())]
    originals = [m["content"] for m in messages]
    cap = int(max((len(text) for text in originals), default=0) * limit / len(data) * 0.9)
    while cap >= 64:
        for message, original in zip(messages, originals, strict=True):
            if len(original) > cap + len(TRUNCATED):  # cutting less would not save room
                message["content"] = original[:cap] + TRUNCATED.format(dropped=len(original) - cap)
        meta["metadata"]["content_truncated"] = True
        data = encode(span)
        if len(data) <= limit:
            return data, 1
        cap = int(cap * 0.7)
    for key in ("input", "output"):
        if key in meta:
            meta[key] = {"value": DROPPED}
    meta["metadata"]["content_truncated"] = True
    return encode(span), 1


def ml_app_problem(name: str) -> str | None:
    """Why ``name`` breaks Datadog's ml_app naming rules, or None."""
    reasons = []
    if len(name) > ML_APP_MAX:
        reasons.append(f"{len(name)} characters, at most {ML_APP_MAX} allowed")
    if name != name.lower():
        reasons.append("upper-case letters")
    bad = sorted({c for c in name if not (c.isalnum() or c in "_-:./")})
    if bad:
        reasons.append("characters " + " ".join(repr(c) for c in bad))
    if "__" in name:
        reasons.append("contiguous underscores")
    if name.endswith("_"):
        reasons.append("a trailing underscore")
    if not reasons:
        return None
    suggestion = re.sub(r"_+", "_", re.sub(r"[^\w\-:./]|_", "_", name.lower()))
    suggestion = suggestion[:ML_APP_MAX].rstrip("_") or "llm-app"
    return (
        f"{name!r} breaks Datadog's ml_app naming rules ({', '.join(reasons)}): use lower-case "
        f"letters, digits and _ - : . / only, at most {ML_APP_MAX} characters, no '__' and no "
        f"trailing '_', e.g. {suggestion!r}"
    )


def unix_ns(text: str | None) -> int:
    """Nanoseconds since the epoch from the schema's RFC 3339 UTC time; 0 when absent."""
    match = _TIME.match(text or "")
    if match is None:
        return 0
    seconds = calendar.timegm(datetime.fromisoformat(match[1]).timetuple())
    return seconds * 1_000_000_000 + int((match[2] or "").ljust(9, "0"))


def decimal_id(hex_id: str) -> str:
    """A 64-bit OpenTelemetry span id (16 hex) as the decimal string ddtrace sends."""
    try:
        return str(int(hex_id, 16))
    except ValueError:
        return "0"


def _scalar(value: Any, *, numeric_strings: bool = False) -> str | float | bool | None:
    """A metadata value: a string, a finite number or a boolean (all the intake takes)."""
    if isinstance(value, str) and numeric_strings:
        for number_type in (int, float):
            try:
                number = _scalar(number_type(value))
            except ValueError:
                continue
            return value if number is None or isinstance(number, str) else number
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)  # JSON encoders stop at 64 bits
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:VALUE_MAX_CHARS] if value else None
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)[:VALUE_MAX_CHARS] or None
    return json_text(value)[:VALUE_MAX_CHARS]


def json_text(value: Any) -> str:
    """Structured content shown as JSON text, whatever it holds."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # integers over 64 bits, non-string keys
        return str(value)
