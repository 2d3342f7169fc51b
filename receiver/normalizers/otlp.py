"""OTLP traces (OpenRouter Broadcast, any GenAI-instrumented app) as LLMEvents.

``normalize_json`` and ``normalize_proto`` walk a request into flat spans (``otlp_walk``) and map
each LLM span to one LLMEvent: ids and times from the span, fields from its attributes through the
alias tables of ``otlp_attributes``, prompt and completion from whichever message convention the
sender used. Every attribute not used for a field is kept in ``attributes``. Spans that are not
LLM calls (tools, agents, HTTP) are skipped and counted; a span that cannot be used is rejected
with the reason while the rest of the request is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from foundation.times import rfc3339_ns
from receiver.normalizers.base import IngestContext, Normalized
from receiver.normalizers.common import (
    as_bool,
    as_float,
    as_int,
    base_event,
    chat_messages,
    completion_messages,
    finish_usage,
    maybe_json,
    stable_id,
)
from receiver.normalizers.otlp_attributes import (
    API_KEY_NAME,
    COST,
    ERROR_TYPE,
    FINISH_REASONS,
    HTTP_STATUS,
    OPERATION,
    PROVIDER,
    REQUEST_MODEL,
    REQUEST_TYPE,
    RESPONSE_MODEL,
    SESSION,
    STREAM,
    TTFT_SECONDS,
    UPSTREAM,
    USAGE,
    USER,
    Taker,
    as_finish_reasons,
    as_text,
    as_token,
)
from receiver.normalizers.otlp_walk import FlatSpan, SpanError, walk_json, walk_proto
from schemas import LLMEvent, Message

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
_MODEL_FIELDS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("request_model", REQUEST_MODEL),
    ("response_model", RESPONSE_MODEL),
)
_LLM_NAMES: Final = frozenset((*REQUEST_MODEL, *RESPONSE_MODEL, "llm.request.type"))


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
    operation = attributes.get("gen_ai.operation.name")
    if operation is not None:
        return isinstance(operation, str) and operation in LLM_OPERATIONS
    if attributes.get("span.type") in ("generation", "llm"):
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
    ttft = attrs.take(TTFT_SECONDS, as_float)
    if ttft is not None and ttft >= 0:
        event["ttft_ms"] = ttft * 1000

    _take_call(attrs, event, is_openrouter)
    _take_usage_and_cost(attrs, event)
    _take_status(attrs, event, span)
    _take_caller(attrs, event)
    _take_content(attrs, event)
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


def _take_call(attrs: Taker, event: LLMEvent, is_openrouter: bool) -> None:
    """What was called: operation, provider, upstream, models, streaming."""
    event["operation"] = _operation(attrs)
    provider = attrs.take(PROVIDER, as_token)
    if provider:
        event["provider"] = provider
    upstream = attrs.take(UPSTREAM, as_token) or (provider if is_openrouter else None)
    if upstream:
        event["upstream"] = upstream
    for field, keys in _MODEL_FIELDS:
        model = attrs.take(keys, as_text)
        if model:
            event[field] = model  # type: ignore[literal-required]
    stream = attrs.take(STREAM, as_bool)
    if stream is not None:
        event["stream"] = stream


def _operation(attrs: Taker) -> str:
    operation = attrs.take(OPERATION, as_text)
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
    event["usage"] = finish_usage(usage)  # type: ignore[typeddict-item]
    cost: dict[str, Any] = {}
    for field, keys in COST:
        amount = attrs.take(keys, as_float)
        if amount is not None:
            cost[field] = amount
    event["cost"] = {**cost, "currency": "USD", "source": "gateway" if cost else "unknown"}  # type: ignore[typeddict-item]


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


# -- prompt and completion -----------------------------------------------------------------------


def _take_content(attrs: Taker, event: LLMEvent) -> None:
    left = attrs.left
    indexed = _indexed_messages(left, attrs.names.indexed)
    inputs = _system_instructions(maybe_json(left.pop("gen_ai.system_instructions", None)))

    raw_prompt = left.get("gen_ai.input.messages") or left.get("gen_ai.prompt")
    inputs.extend(_take_prompt(left, raw_prompt))
    inputs.extend(indexed.get("input", ()))

    raw_completion = left.get("gen_ai.output.messages") or left.get("gen_ai.completion")
    outputs, reasons = _take_completion(left, raw_completion)
    outputs.extend(indexed.get("output", ()))

    if not inputs and isinstance(left.get("input.value"), str):
        inputs = [{"role": "user", "parts": [{"type": "text", "content": left.pop("input.value")}]}]
    if not outputs and isinstance(left.get("output.value"), str):
        text = left.pop("output.value")
        outputs = [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
    # OpenRouter repeats the prompt and completion under Langfuse-style names: keep one copy.
    for key, same_as in (
        ("span.input", raw_prompt),
        ("span.output", raw_completion),
        ("trace.output", raw_completion),
    ):
        if same_as is not None and left.get(key) == same_as:
            del left[key]
    if inputs:
        event["input_messages"] = inputs
    if outputs:
        event["output_messages"] = outputs
    if reasons and "finish_reasons" not in event:
        event["finish_reasons"] = reasons


def _system_instructions(instructions: Any) -> list[Message]:
    """``gen_ai.system_instructions`` (parts or plain text) as a system message, if any."""
    if isinstance(instructions, list):
        return [{"role": "system", "parts": instructions}]
    if isinstance(instructions, str) and instructions:
        return [{"role": "system", "parts": [{"type": "text", "content": instructions}]}]
    return []


def _take_prompt(left: dict[str, Any], raw_prompt: Any) -> list[Message]:
    """Input messages from ``gen_ai.input.messages`` or ``gen_ai.prompt`` (a message list, an
    OpenAI-style request body or plain text); a body of another shape stays in ``left``."""
    prompt = maybe_json(left.pop("gen_ai.input.messages", None) or left.pop("gen_ai.prompt", None))
    if isinstance(prompt, dict):
        if isinstance(prompt.get("messages"), list):
            return chat_messages(prompt["messages"])
        if isinstance(prompt.get("prompt"), str):
            return [{"role": "user", "parts": [{"type": "text", "content": prompt["prompt"]}]}]
        left["gen_ai.prompt"] = raw_prompt
        return []
    if isinstance(prompt, list):
        return chat_messages(prompt)
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
    return []


def _take_completion(left: dict[str, Any], raw_completion: Any) -> tuple[list[Message], list[str]]:
    """Output messages and finish reasons from ``gen_ai.output.messages`` or
    ``gen_ai.completion`` (a message list, an OpenAI-style response body or plain text)."""
    completion = maybe_json(
        left.pop("gen_ai.output.messages", None) or left.pop("gen_ai.completion", None)
    )
    if isinstance(completion, dict):
        outputs, reasons = completion_messages(completion)
        if isinstance(completion.get("id"), str):
            left.setdefault("gen_ai.response.id", completion["id"])
        if not outputs and set(completion) - {"id"}:
            left["gen_ai.completion"] = raw_completion
        return outputs, reasons
    if isinstance(completion, list):
        return chat_messages(completion), []
    if isinstance(completion, str) and completion:
        return [{"role": "assistant", "parts": [{"type": "text", "content": completion}]}], []
    return [], []


def _indexed_messages(
    left: dict[str, Any], indexed: tuple[tuple[str, str, int, str], ...]
) -> dict[str, list[Message]]:
    """OpenLLMetry ``gen_ai.prompt.0.role`` and OpenInference ``llm.input_messages.0.message.*``.

    ``indexed`` lists those names, as ``SpanNames.indexed`` parsed them, in the order of ``left``.
    """
    if not indexed:
        return {}
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for key, side, index, field in indexed:
        found.setdefault((side, index), {})[field] = left.pop(key)
    messages: dict[str, list[Message]] = {}
    for (side, _), fields in sorted(found.items()):
        role = str(fields.pop("role", "assistant" if side == "output" else "user"))
        content = fields.pop("content", None)
        parts: list[Any] = [] if content is None else [{"type": "text", "content": content}]
        parts.extend({"type": "other", "field": k, "content": v} for k, v in fields.items())
        messages.setdefault(side, []).append({"role": role, "parts": parts})
    return messages
