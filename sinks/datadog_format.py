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

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

import orjson

from foundation.times import unix_ns
from foundation.version import __version__
from schemas import LLMEvent
from sinks.datadog_values import VALUE_MAX_CHARS, decimal_id, json_text
from sinks.datadog_values import scalar as to_scalar

Mode = Literal["agentless", "agent"]

ROOT_PARENT_ID: Final = "undefined"
TRACER_VERSION: Final = f"llm-broadcast-relay-{__version__}"
TRUNCATED: Final = (
    "…[truncated by llm-broadcast-relay: {dropped} characters over Datadog's span size limit]"
)
DROPPED: Final = "[dropped by llm-broadcast-relay: content over Datadog's span size limit]"
TAG_MAX_CHARS: Final = 200  # Datadog cuts tags at 200 characters
ERROR_MAX_CHARS: Final = 8192
ENVELOPE_ALLOWANCE: Final = 4096  # room for the body's wrapper around the spans
_TEXT_PARTS: Final = frozenset({"text", "reasoning", "tool_call_response"})
_REQUEST_PREFIX: Final = "gen_ai.request."
_MODEL_KEY: Final = "gen_ai.request.model"  # a span field of its own, not a parameter
_USAGE_METRICS: Final = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
)
# The agent envelope around one span, as orjson writes ``{..., "spans": [span]}``: the span is
# encoded once and wrapped, instead of encoding a fresh envelope dict per span.
_ENVELOPE_HEAD: Final = (
    b'{"_dd.stage":"raw","_dd.tracer_version":'
    + orjson.dumps(TRACER_VERSION)
    + b',"event_type":"span","spans":['
)
_ENVELOPE_TAIL: Final = b"]}"


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
    agent = fmt.mode == "agent"
    encode = _encode_envelope if agent else orjson.dumps
    tag_memo: TagMemo = {}
    # Each span goes into one growing buffer as soon as it is encoded. Keeping hundreds of encoder
    # outputs alive to join them at the end cost more than encoding them (each took fresh memory,
    # then the join copied them all); getvalue() hands the buffer over without a copy.
    body = io.BytesIO()
    body.write(b"[" if agent else _agentless_head(fmt))
    for index, event in enumerate(events):
        data, cut = fit(llm_span(event, fmt, tag_memo), encode, limit)
        if index:
            body.write(b",")
        body.write(data)
        truncated += cut
    body.write(b"]" if agent else b"]}}}")
    return EncodedBatch(body.getvalue(), truncated)


def _agentless_head(fmt: SpanFormat) -> bytes:
    """``{"data": {"type": "span", "attributes": {ml_app, tags, "spans": [`` up to the spans."""
    head = orjson.dumps({"ml_app": fmt.ml_app, "tags": list(fmt.global_tags)})[:-1]
    return b'{"data":{"type":"span","attributes":' + head + b',"spans":['


def _encode_envelope(span: dict[str, Any]) -> bytes:
    """The agent's envelope around one span, as ddtrace sends it."""
    return b"".join((_ENVELOPE_HEAD, orjson.dumps(span), _ENVELOPE_TAIL))


def llm_span(event: LLMEvent, fmt: SpanFormat, tag_memo: TagMemo | None = None) -> dict[str, Any]:
    """One event as one span of kind ``llm`` in the sink's format (``tag_memo``: see span_tags)."""
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
        # Where the v1 API page puts them (as metadata keys; LiteLLM's v1 logger does the same).
        # Datadog's own SDK writes them at the top of ``meta``, but in its v2 format (agent mode).
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
        converted = dd_messages(messages) if messages else []
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
        "tags": span_tags(event, fmt, tag_memo),
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
    attributes = event.get("attributes")
    if attributes:
        for key, value in attributes.items():
            # ``in`` first: an operator, it rejects the many other attributes faster than a call
            if _REQUEST_PREFIX in key and key.startswith(_REQUEST_PREFIX) and key != _MODEL_KEY:
                scalar = to_scalar(value, numeric_strings=True)  # OpenRouter sends "0.2"
                if scalar is not None:
                    metadata[key[len(_REQUEST_PREFIX) :]] = scalar
    source: Mapping[str, Any] = event.get("source") or {}
    cost = event.get("cost") or {}
    error = event.get("error") or {}
    facts = (
        ("operation", event.get("operation")),
        ("request_model", event.get("request_model")),
        ("response_model", event.get("response_model")),
        ("gateway", source.get("gateway")),
        ("upstream", event.get("upstream")),
        ("stream", event.get("stream")),
        ("finish_reasons", ",".join(event.get("finish_reasons") or ()) or None),
        ("cost_usd", cost.get("total")),
        ("cost_input_usd", cost.get("input")),
        ("cost_output_usd", cost.get("output")),
        ("cost_source", cost.get("source")),  # gateway, table (the relay's estimate) or unknown
        ("cost_table", cost.get("table")),
        ("http_status", error.get("http_status")),
        ("user_id", event.get("user_id")),
        ("api_key_name", (event.get("api_key") or {}).get("name")),
        ("event_id", event.get("event_id")),
        ("otel_span_id", event.get("span_id")),
        ("otel_parent_span_id", event.get("parent_span_id")),
    )
    for key, value in facts:
        if value is None:  # most events lack some of these
            continue
        if type(value) is str:  # most facts are strings: scalar()'s first case, inlined
            if value:
                metadata[key] = value[:VALUE_MAX_CHARS]
            continue
        scalar = to_scalar(value)
        if scalar is not None:
            metadata[key] = scalar
    return metadata


def span_metrics(event: LLMEvent) -> dict[str, float]:
    usage = event.get("usage") or {}
    metrics: dict[str, float] = {}
    for key in _USAGE_METRICS:
        value = usage.get(key)
        if value is not None and _is_number(value):
            metrics[key] = value
    if "total_tokens" not in metrics and "input_tokens" in metrics and "output_tokens" in metrics:
        metrics["total_tokens"] = metrics["input_tokens"] + metrics["output_tokens"]
    ttft_ms = event.get("ttft_ms")
    if isinstance(ttft_ms, int | float):
        metrics["time_to_first_token"] = ttft_ms / 1000.0  # Datadog wants seconds
    # The event's cost in USD (what the gateway billed, or the relay's price-table estimate when
    # it reported none: meta.metadata.cost_source says which): ddtrace's cost metric keys, which
    # take precedence over Datadog's estimate from token counts (ddtrace/llmobs/_constants.py), so
    # that every sink shows the same figure.
    cost = event.get("cost") or {}
    for key, field in (("total_cost", "total"), ("input_cost", "input"), ("output_cost", "output")):
        amount = cost.get(field)
        if amount is not None and _is_number(amount):
            metrics[key] = float(amount)
    return metrics


def _is_number(value: object) -> TypeGuard[float]:
    """An int or a float but not a bool; the exact types are checked first, as they are the norm."""
    kind = type(value)
    if kind is int or kind is float:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool)


# A batch's tags by the values they are made of: events of one gateway, model and session share
# them, so each set is formatted (and in agent mode sorted) once per batch.
TagMemo = dict[tuple[str | None, ...], list[str]]
# What span_tags's values are, in the order their tags come (after ml_app and service).
_TAG_NAMES: Final = (
    "gateway",
    "provider",
    "upstream",
    "request_model",
    "response_model",
    "operation",
    "tenant",
    "relay_test",
    "session_id",
    "error",
    "error_type",
)


def span_tags(event: LLMEvent, fmt: SpanFormat, memo: TagMemo | None = None) -> list[str]:
    """The span's tags; with ``memo``, the list is shared by the spans of a batch that have the
    same values, so it must not be changed."""
    source: Mapping[str, Any] = event.get("source") or {}
    failed = event.get("status") == "error"
    values = (  # one for each of _TAG_NAMES
        source.get("gateway"),
        event.get("provider"),
        event.get("upstream"),
        event.get("request_model"),
        event.get("response_model"),
        event.get("operation"),
        source.get("tenant"),
        "true" if source.get("test") else None,
        event.get("session_id"),
        "1" if failed else "0",
        error_type(event.get("error") or {}) if failed else None,
    )
    if memo is None:
        return _format_tags(values, fmt)
    try:
        tags = memo.get(values)
    except TypeError:  # an unhashable value: odd, but no reason to fail
        return _format_tags(values, fmt)
    if tags is None:
        tags = _format_tags(values, fmt)
        # Only strings as keys: 1, 1.0 and True are equal keys but make different tags.
        if all(value is None or type(value) is str for value in values):
            memo[values] = tags
    return tags


def _format_tags(values: tuple[Any, ...], fmt: SpanFormat) -> list[str]:
    """``name:value`` tags in the order Datadog shows them; a None or empty value makes none."""
    pairs = list(zip(_TAG_NAMES, values, strict=True))
    if fmt.service is None:  # DD_SERVICE unset: each span's service is its gateway
        pairs.insert(0, ("service", values[0]))
    if fmt.mode == "agent":
        pairs.insert(0, ("ml_app", fmt.ml_app))
    tags = [f"{name}:{value}"[:TAG_MAX_CHARS] for name, value in pairs if value not in (None, "")]
    if fmt.mode == "agent":  # no body-level tags in this format: every span carries them
        tags += fmt.global_tags
        tags.sort()
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
    shown = False
    for message in messages:
        if type(message) is not dict and not isinstance(message, Mapping):
            continue
        content = _message_text(message.get("parts") or ())
        shown = shown or content != ""
        converted.append({"role": str(message.get("role") or ""), "content": content})
    return converted if shown else []


def _message_text(parts: Sequence[Any]) -> str:
    """The texts of a message's parts, one per line."""
    texts = []
    for part in parts:
        # type() first: parts are dicts, and an ABC isinstance check costs more than the rest
        if type(part) is dict or isinstance(part, Mapping):
            text = _part_text(part)
            if text:
                texts.append(text)
    return "\n".join(texts)


def _part_text(part: Mapping[str, Any]) -> str:
    content = part.get("content", part.get("response"))  # a tool's result is its response
    if type(content) is str and part.get("type") in ("text", None):  # the usual part
        return content
    kind = str(part.get("type") or "text")
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
