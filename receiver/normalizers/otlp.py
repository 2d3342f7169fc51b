"""OTLP traces (OpenRouter Broadcast, any GenAI-instrumented app) as LLMEvents.

``normalize_json`` and ``normalize_proto`` walk a request into flat spans (``otlp_walk``) and map
each LLM span to one LLMEvent: ids and times from the span, fields from its attributes through the
alias tables of ``otlp_attributes``, prompt and completion from whichever message convention the
sender used. Every attribute not used for a field is kept in ``attributes``. Spans that are not
LLM calls (tools, agents, HTTP) are skipped and counted; a span that cannot be used is rejected
with the reason while the rest of the request is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from foundation.times import rfc3339_ns
from receiver.normalizers import litellm_outcome
from receiver.normalizers.base import IngestContext, Normalized
from receiver.normalizers.common import (
    as_bool,
    as_dict,
    as_float,
    as_int,
    base_event,
    finish_usage,
    maybe_json,
    stable_id,
)
from receiver.normalizers.litellm import call_operation
from receiver.normalizers.litellm_v1 import read_repr
from receiver.normalizers.otlp_attributes import (
    API_KEY_NAME,
    COST,
    ERROR_TYPE,
    FINISH_REASONS,
    HTTP_STATUS,
    OPENINFERENCE_MODEL,
    OPERATION,
    PROVIDER,
    REQUEST_MODEL,
    REQUEST_TYPE,
    RESPONSE_MODEL,
    SESSION,
    STREAM,
    TTFT_MS,
    TTFT_SECONDS,
    UPSTREAM_NAME,
    UPSTREAM_SLUG,
    USAGE,
    USER,
    Taker,
    as_finish_reasons,
    as_text,
    as_token,
)
from receiver.normalizers.otlp_content import apply_content, take_content
from receiver.normalizers.otlp_walk import FlatSpan, SpanError, walk_json, walk_proto
from schemas import LLMEvent

STATUS_ERROR: Final = 2
KNOWN_GATEWAYS: Final = frozenset({"openrouter", "litellm", "otoroshi", "portkey", "helicone"})
LLM_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_OPENINFERENCE_OPERATIONS: Final = {"LLM": "chat", "EMBEDDING": "embeddings"}
_LLM_REQUEST_TYPES: Final = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "rerank": "rerank",
}
_LLM_NAMES: Final = frozenset(
    (*REQUEST_MODEL, *RESPONSE_MODEL, *OPENINFERENCE_MODEL, "llm.request.type")
)
# The OpenAI SDK's error text, which instrumentations report as the exception message.
_OPENAI_ERROR_CODE: Final = re.compile(r"\bError code: ([1-5]\d\d)\b")
_INVOCATION_PARAMETERS: Final = ("llm.invocation_parameters", "embedding.invocation_parameters")
# LiteLLM's provider usage object (a Python repr) holds the cache and reasoning counts its
# ``gen_ai.usage.*`` attributes leave out; read only when short, as parsing it is not cheap.
_LITELLM_USAGE: Final = "metadata.usage_object"
_LITELLM_USAGE_MAX_CHARS: Final = 4096


def normalize_json(body: bytes, ctx: IngestContext) -> Normalized:
    return _normalize(walk_json(body), ctx, "otlp-json")


def normalize_proto(body: bytes, ctx: IngestContext) -> Normalized:
    return _normalize(walk_proto(body), ctx, "otlp-proto")


def _normalize(spans: Iterator[FlatSpan | SpanError], ctx: IngestContext, fmt: str) -> Normalized:
    result = Normalized()
    for number, span in enumerate(spans):
        if isinstance(span, SpanError):
            result.reject(f"span {number}", str(span))
            continue
        if not is_llm_span(span.attributes):
            result.skipped["not_llm"] += 1
            continue
        result.attempt(f"span {span.trace_id}/{span.span_id}", span_event, span, ctx, fmt)
    return result


def is_llm_span(attributes: dict[str, Any]) -> bool:
    """Whether a span is one LLM call. OpenRouter's ``provider attempt N`` and ``generation``
    children of its ``LLM Generation`` span say ``span.type: span``: the call is their parent."""
    span_type = attributes.get("span.type")
    if span_type == "span":
        return False
    operation = attributes.get("gen_ai.operation.name")
    if operation is not None:
        return isinstance(operation, str) and (
            operation in LLM_OPERATIONS or call_operation(operation) is not None
        )
    if span_type in ("generation", "llm"):
        return True
    kind = attributes.get("openinference.span.kind")
    if kind is not None:  # an array or a kvlist is no kind (and cannot be looked up)
        return isinstance(kind, str) and kind in _OPENINFERENCE_OPERATIONS
    return not _LLM_NAMES.isdisjoint(attributes)


def span_event(span: FlatSpan, ctx: IngestContext, fmt: str) -> LLMEvent:
    """One LLM span as an LLMEvent; ``SpanError`` if its times cannot be used."""
    attrs = Taker(span.attributes)
    service = span.resource.get("service.name")
    is_openrouter = service == "openrouter" or attrs.names.openrouter
    gateway = (
        "openrouter" if is_openrouter else (service if service in KNOWN_GATEWAYS else "unknown")
    )
    test = (
        attrs.left.get("source") == "observability-test-button"
        or attrs.left.get("span.metadata.test") == "true"
    )
    start_ns, end_ns = _span_times(span)
    event = base_event(
        event_id=stable_id("otlp", span.trace_id, span.span_id),
        received_at=ctx.received_at,
        fmt=fmt,
        gateway=gateway,
        test=test,
    )
    event["trace_id"] = span.trace_id
    event["span_id"] = span.span_id
    if span.parent_span_id and span.parent_span_id != "0" * 16:
        event["parent_span_id"] = span.parent_span_id
    event["start_time"] = rfc3339_ns(start_ns)
    event["end_time"] = rfc3339_ns(end_ns)
    event["duration_ms"] = (end_ns - start_ns) / 1e6
    ttft_ms = _ttft_ms(attrs, span, start_ns)
    if ttft_ms is not None:
        event["ttft_ms"] = ttft_ms

    _take_call(attrs, event, is_openrouter)
    _take_usage_and_cost(attrs, event)
    _take_status(attrs, event, span)
    _take_caller(attrs, event)
    apply_content(event, take_content(attrs.left, attrs.names.indexed))
    attributes = _attributes_left(attrs, span)
    if attributes:
        event["attributes"] = attributes
    return event


def _span_times(span: FlatSpan) -> tuple[int, int]:
    """Start and end in nanoseconds; a span with only one of them lasted no time."""
    if span.start_ns == 0 and span.end_ns == 0:
        raise SpanError("span has neither startTimeUnixNano nor endTimeUnixNano")
    start_ns = span.start_ns or span.end_ns
    end_ns = span.end_ns or span.start_ns
    if end_ns < start_ns:
        raise SpanError("endTimeUnixNano is before startTimeUnixNano")
    return start_ns, end_ns


def _ttft_ms(attrs: Taker, span: FlatSpan, start_ns: int) -> float | None:
    """Time to first token: an attribute (seconds, or OpenRouter's milliseconds), else the
    first-token span event (OpenInference, OpenLLMetry)."""
    seconds = attrs.take(TTFT_SECONDS, as_float)
    if seconds is not None and seconds >= 0:
        return float(seconds * 1000)
    millis = attrs.take(TTFT_MS, as_float)
    if millis is not None and millis >= 0:
        return float(millis)
    if start_ns <= span.first_token_ns <= span.end_ns and start_ns > 0:
        return (span.first_token_ns - start_ns) / 1e6
    return None


def _take_call(attrs: Taker, event: LLMEvent, is_openrouter: bool) -> None:
    """What was called: operation, provider, upstream, models, streaming."""
    event["operation"] = _operation(attrs)
    provider = attrs.take(PROVIDER, as_token)
    if provider:
        event["provider"] = provider
    upstream = upstream_of(attrs.left) or (provider if is_openrouter else None)
    if upstream:
        event["upstream"] = upstream
    parameters = _invocation_parameters(attrs.left)
    named = attrs.take(OPENINFERENCE_MODEL, as_text)
    requested = attrs.take(REQUEST_MODEL, as_text) or _text(parameters.get("model"))
    answered = attrs.take(RESPONSE_MODEL, as_text)
    if named and not requested:
        requested = named
    elif named and not answered:
        answered = named
    if requested:
        event["request_model"] = requested
    if answered:
        event["response_model"] = answered
    stream = attrs.take(STREAM, as_bool)
    if stream is None:
        stream = as_bool(parameters.get("stream"))
    if stream is not None:
        event["stream"] = stream
    user = _text(parameters.get("user"))
    if user:
        event["user_id"] = user


def _text(value: Any) -> str | None:
    """A parameter that is a non-empty string; any other value is not a model or user name."""
    return value if isinstance(value, str) and value else None


def upstream_of(attributes: dict[str, Any]) -> str | None:
    """Who served an OpenRouter call: the provider of ``provider_slug`` (``novita`` for
    ``novita/fp8``), else ``provider_name`` as a token. Both attributes stay as they are."""
    for key in UPSTREAM_SLUG:
        slug = attributes.get(key)
        if isinstance(slug, str) and slug.strip("/"):
            return as_token(slug.strip("/").split("/")[0])
    for key in UPSTREAM_NAME:
        name = as_token(attributes.get(key))
        if name:
            return name
    return None


def _invocation_parameters(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenInference's request parameters (a JSON object in a string), left in place."""
    for key in _INVOCATION_PARAMETERS:
        parameters = maybe_json(attributes.get(key))
        if isinstance(parameters, dict):
            return parameters
    return {}


def _operation(attrs: Taker) -> str:
    operation = attrs.take(OPERATION, as_text)
    if operation and operation not in LLM_OPERATIONS:
        called = call_operation(operation)  # LiteLLM's otel callback: its call type
        if called:
            attrs.left["litellm.call_type"] = operation  # sync or async, chat or Anthropic API
            return called
    if operation:
        return str(operation)
    request_type = attrs.take(REQUEST_TYPE, as_text)
    if request_type:
        return _LLM_REQUEST_TYPES.get(str(request_type), str(request_type))
    kind = attrs.left.get("openinference.span.kind")
    return _OPENINFERENCE_OPERATIONS.get(kind, "chat") if isinstance(kind, str) else "chat"


def _take_usage_and_cost(attrs: Taker, event: LLMEvent) -> None:
    usage: dict[str, int] = {}
    for field, keys in USAGE:
        count = attrs.take(keys, as_int)
        if count is not None and count >= 0:
            usage[field] = count
    if usage and _LITELLM_USAGE in attrs.left:
        _fill_from_litellm_usage(attrs.left[_LITELLM_USAGE], usage)
    event["usage"] = finish_usage(usage)  # type: ignore[typeddict-item]
    cost: dict[str, Any] = {}
    for field, keys in COST:
        amount = attrs.take(keys, as_float)
        if amount is not None:
            cost[field] = amount
    event["cost"] = {**cost, "currency": "USD", "source": "gateway" if cost else "unknown"}  # type: ignore[typeddict-item]


def _fill_from_litellm_usage(text: Any, usage: dict[str, int]) -> None:
    """Cache and reasoning counts from LiteLLM's usage object, where its attributes lack them."""
    if not isinstance(text, str) or len(text) > _LITELLM_USAGE_MAX_CHARS:
        return
    for field, count in litellm_outcome.detail_counts(as_dict(read_repr(text))).items():
        if field not in usage and count > 0:
            usage[field] = count


def _take_status(attrs: Taker, event: LLMEvent, span: FlatSpan) -> None:
    """``status``, ``error`` (from the span status, ``error.type`` and its exception event) and
    ``finish_reasons``."""
    error_type = attrs.take(ERROR_TYPE, as_text)
    if span.status_code == STATUS_ERROR or error_type:
        event["status"] = "error"
        exception = span.exception or {}
        error: dict[str, Any] = {
            "type": error_type or as_text(exception.get("exception.type")) or "_OTHER"
        }
        message = span.status_message or as_text(exception.get("exception.message"))
        if message:
            error["message"] = message
        http_status = attrs.take(HTTP_STATUS, as_int)
        if http_status is None and message:
            found = _OPENAI_ERROR_CODE.search(message)
            http_status = int(found.group(1)) if found else None
        if http_status is not None and 100 <= http_status <= 599:
            error["http_status"] = http_status
        event["error"] = error  # type: ignore[typeddict-item]
    else:
        event["status"] = "ok"
    reasons = attrs.take(FINISH_REASONS, as_finish_reasons)
    if reasons:
        event["finish_reasons"] = reasons


def _take_caller(attrs: Taker, event: LLMEvent) -> None:
    """Who called: end user, session, API key name."""
    user = attrs.take(USER, as_text)
    if user:
        event["user_id"] = user
    session = attrs.take(SESSION, as_text)
    if session:
        event["session_id"] = session
    key_name = attrs.take(API_KEY_NAME, as_text)
    if key_name:
        event["api_key"] = {"name": key_name}


def _attributes_left(attrs: Taker, span: FlatSpan) -> dict[str, Any]:
    """The attributes no field took, typed parameters as numbers, with the span's name, the
    walk's notes and the resource (as ``resource.*``)."""
    attributes = attrs.left
    for key, convert in attrs.names.typed:
        if isinstance(attributes.get(key), str):
            typed = convert(attributes[key])
            if typed is not None:
                attributes[key] = typed
    attributes.update(span.notes)
    if span.name:
        attributes["otlp.span.name"] = span.name
    for key, value in span.resource.items():
        attributes[f"resource.{key}"] = value
    return attributes
