"""Each LLMEvent as one OpenTelemetry GenAI span, in an OTLP ``ExportTraceServiceRequest``.

A batch becomes one request: one ``ResourceSpans`` per gateway and tenant (``service.name`` =
gateway, ``tenant.id``), scope ``llm-broadcast-relay``. Every OTLP destination (``sinks.otlp`` and
its presets, Datadog's OTLP mode) sends what this module writes.

A span has kind CLIENT, name ``{operation} {request_model}``, the event's own ids and times, and
status ERROR with ``error.type`` (``_OTHER`` when unknown) on failures, unset otherwise. Its
attributes are listed in ``span_attributes``; each is set only when the event has the value:

- GenAI semantic conventions v1.41 names, typed as the spec says (``gen_ai.usage.*`` ints,
  ``gen_ai.response.finish_reasons`` a string array, ``gen_ai.response.time_to_first_chunk`` a
  double in seconds, ``gen_ai.conversation.id`` from ``session_id``). The cache write count is
  v1.41's ``gen_ai.usage.cache_creation.input_tokens``; ``gen_ai.usage.total_tokens`` (OpenRouter's
  name) is the only usage name semconv lacks. The total and the reasoning count also go out under
  OpenInference's names (``llm.token_count.total``, ``...completion_details.reasoning``): Arize
  Phoenix derives the other counts from the GenAI names, but no reasoning count, and a total only
  as input + output (so none for an embeddings call), while it keeps what a span already carries.
- Cost, in USD, as doubles: ``gen_ai.usage.cost`` (total), ``gen_ai.usage.input_cost`` and
  ``gen_ai.usage.output_cost``. Semconv has no cost attribute; these extend OpenRouter's own
  ``gen_ai.usage.*_cost`` names, and are absent, never 0, when the gateway reported no cost. The
  same values go out under OpenInference's names too, ``llm.cost.total``, ``llm.cost.prompt`` and
  ``llm.cost.completion``, the names OpenInference stores (Arize Phoenix among them) define for a
  call's cost. Phoenix (20.x) keeps them on the span but still prices its cost column from token
  counts and its own model table: the gateway's figure is the one in these attributes. Where the
  figure comes from is ``gen_ai.usage.cost_source``: ``gateway`` (what the gateway reported, as
  billed) or ``table`` (estimated by the relay from a price table because the gateway reported
  none; ``gen_ai.usage.cost_table`` names the table and its version, ``genai-prices 0.2.3``). Both
  are absent when the cost is unknown.
- Routing: ``gen_ai.route.gateway``, ``gen_ai.route.upstream``, ``gen_ai.route.api_key.name`` /
  ``.hash``, ``gen_ai.route.rate_limit.<field>``; ``user.id``; ``http.response.status_code``.
- Content: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` as JSON strings, only when the
  event still has them after the content policy, in the shapes of semconv's
  ``gen_ai-input-messages.json`` / ``gen_ai-output-messages.json`` (``content_messages``). Each
  output message carries the ``finish_reason`` those schemas require: a reason the message already
  had; else the event's only finish reason; else its reason at the message's index when there are
  as many reasons as messages (a count that differs says nothing about which is which); else
  ``error`` on a failed call, and otherwise ``""``, the relay's "not reported", since inventing
  ``stop`` would hide a truncated answer. Without the field a reader that validates the list
  (Arize Phoenix) drops every output message, and with them the model's answer.
- Bookkeeping: ``relay.event_id`` (to drop at-least-once duplicates), ``relay.source.format``,
  ``relay.test`` (true on test-button spans, absent otherwise).

Every other ``event.attributes`` key (request parameters and the like, secrets already removed)
is carried under its own name unless it would shadow one of the above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from foundation.times import unix_ns
from foundation.version import __version__
from schemas import LLMEvent
from sinks import otlp_wire
from sinks.base import PermanentError

SCOPE_NAME: Final = "llm-broadcast-relay"
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"


def encode_request(events: Sequence[LLMEvent], resource: Mapping[str, Any] | None = None) -> bytes:
    """The protobuf ``ExportTraceServiceRequest`` for a batch (not compressed): one
    ``ResourceSpans`` per gateway and tenant, written by ``sinks.otlp_wire``.

    ``resource`` adds or replaces resource attributes for a destination that files spans by them
    (Datadog takes its ml_app from ``service.name``); ``None`` values are dropped.
    """
    groups: dict[tuple[str, str | None], list[bytes]] = {}
    for event in events:
        source: Mapping[str, Any] = event.get("source") or {}
        key = (str(source.get("gateway") or "unknown"), source.get("tenant"))
        try:
            encoded = encode_span(event)
        except (KeyError, ValueError, TypeError) as error:
            # One malformed event: the dispatcher bisects the batch to dead-letter only it.
            event_id = event.get("event_id")
            raise PermanentError(f"cannot encode event {event_id!r}: {error!r}") from error
        groups.setdefault(key, []).append(encoded)
    body = otlp_wire.export_request(
        otlp_wire.resource_spans(
            {"service.name": gateway, "tenant.id": tenant, **(resource or {})},
            SCOPE_NAME,
            __version__,
            SCHEMA_URL,
            spans,
        )
        for (gateway, tenant), spans in groups.items()
    )
    return body


def encode_span(event: LLMEvent) -> bytes:
    operation, model = event["operation"], event.get("request_model")
    parent = event.get("parent_span_id")
    error_message = None
    if event.get("status") == "error":
        error_message = event.get("error", {}).get("message", "")[:1024]
    return otlp_wire.span(
        trace_id=bytes.fromhex(event["trace_id"]),
        span_id=bytes.fromhex(event["span_id"]),
        parent_span_id=bytes.fromhex(parent) if parent else None,
        name=f"{operation} {model}" if model else operation,
        kind=otlp_wire.SPAN_KIND_CLIENT,
        start_ns=_time(event["start_time"]),
        end_ns=_time(event["end_time"]),
        attributes=span_attributes(event),
        error_message=error_message,
    )


def _time(text: str) -> int:
    nanos = unix_ns(text)
    if not nanos:
        raise ValueError(f"{text!r} is not an RFC 3339 UTC time")
    return nanos


def span_attributes(event: LLMEvent) -> dict[str, Any]:
    """The mapping in the module docstring; ``None`` means absent and is dropped on encoding."""
    source: Mapping[str, Any] = event.get("source") or {}
    usage: Mapping[str, Any] = event.get("usage", {})
    cost: Mapping[str, Any] = event.get("cost", {})
    api_key: Mapping[str, Any] = event.get("api_key", {})
    ttft = event.get("ttft_ms")
    mapped: dict[str, Any] = {
        "gen_ai.operation.name": event.get("operation"),
        "gen_ai.provider.name": event.get("provider"),
        "gen_ai.request.model": event.get("request_model"),
        "gen_ai.response.model": event.get("response_model"),
        "gen_ai.request.stream": event.get("stream"),
        "gen_ai.usage.input_tokens": usage.get("input_tokens"),
        "gen_ai.usage.output_tokens": usage.get("output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": usage.get("cache_read_input_tokens"),
        "gen_ai.usage.cache_creation.input_tokens": usage.get("cache_write_input_tokens"),
        "gen_ai.usage.reasoning.output_tokens": usage.get("reasoning_output_tokens"),
        "gen_ai.usage.total_tokens": usage.get("total_tokens"),
        "llm.token_count.total": usage.get("total_tokens"),
        "llm.token_count.completion_details.reasoning": usage.get("reasoning_output_tokens"),
        "gen_ai.response.finish_reasons": event.get("finish_reasons"),
        "gen_ai.response.time_to_first_chunk": None if ttft is None else ttft / 1000,
        "gen_ai.conversation.id": event.get("session_id"),
        "gen_ai.route.gateway": source.get("gateway"),
        "gen_ai.route.upstream": event.get("upstream"),
        "gen_ai.usage.cost": double(cost.get("total")),
        "gen_ai.usage.input_cost": double(cost.get("input")),
        "gen_ai.usage.output_cost": double(cost.get("output")),
        "llm.cost.total": double(cost.get("total")),
        "llm.cost.prompt": double(cost.get("input")),
        "llm.cost.completion": double(cost.get("output")),
        "gen_ai.usage.cost_source": None if cost.get("source") == "unknown" else cost.get("source"),
        "gen_ai.usage.cost_table": cost.get("table"),
        "gen_ai.route.api_key.name": api_key.get("name"),
        "gen_ai.route.api_key.hash": api_key.get("hash"),
        **{f"gen_ai.route.rate_limit.{k}": v for k, v in event.get("rate_limit", {}).items()},
        "user.id": event.get("user_id"),
        "relay.event_id": event.get("event_id"),
        "relay.source.format": source.get("format"),
        "relay.test": True if source.get("test") else None,
    }
    if event.get("status") == "error":
        error: Mapping[str, Any] = event.get("error", {})
        mapped["error.type"] = error.get("type") or "_OTHER"
        mapped["http.response.status_code"] = error.get("http_status")
    mapped.update(content_messages(event))
    carried = {k: v for k, v in (event.get("attributes") or {}).items() if k not in mapped}
    return carried | mapped


def double(value: float | None) -> float | None:
    """A cost of exactly 1 stays a double, so that TraceQL compares it with other costs."""
    return None if value is None else float(value)


# -- content: semconv's input and output message shapes -------------------------------------------

# The error a failed call's output messages finish with (semconv's FinishReason value).
ERROR_FINISH: Final = "error"
# What the relay writes when nobody reported why the generation ended.
UNREPORTED_FINISH: Final = ""


def content_messages(event: LLMEvent) -> dict[str, str]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` as JSON strings, each present only
    when the event has that side."""
    found: dict[str, str] = {}
    if "input_messages" in event:
        inputs = [_message(message) for message in event["input_messages"]]
        found["gen_ai.input.messages"] = orjson.dumps(inputs).decode()
    if "output_messages" in event:
        outputs = [_message(message) for message in event["output_messages"]]
        for message, reason in zip(outputs, finish_reasons(event, len(outputs)), strict=True):
            if not isinstance(message.get("finish_reason"), str):
                message["finish_reason"] = reason
        found["gen_ai.output.messages"] = orjson.dumps(outputs).decode()
    return found


def finish_reasons(event: LLMEvent, count: int) -> list[str]:
    """The finish reason of each of ``count`` output messages (the rule in the module docstring)."""
    reported = event.get("finish_reasons") or []
    if len(reported) == 1:
        return reported * count
    if len(reported) == count:
        return list(reported)
    fallback = ERROR_FINISH if event.get("status") == "error" else UNREPORTED_FINISH
    return [fallback] * count


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as semconv's ChatMessage / OutputMessage: ``role`` a string, ``parts`` a list,
    ``name`` only when it is a string. Other keys stay (the schemas allow them)."""
    shaped = {k: v for k, v in message.items() if v is not None}
    shaped["role"] = str(message.get("role") or "user")
    shaped["parts"] = [_part(part) for part in message.get("parts") or ()]
    if not isinstance(shaped.get("name"), str):
        shaped.pop("name", None)
    return shaped


def _part(part: Any) -> dict[str, Any]:
    """A part as semconv's schemas read it. A text part's ``content`` must be a string, or a
    validating reader takes the part for an unknown kind and shows no text: anything else is
    written as its JSON, and so is a part that is not even an object (as a text part)."""
    if not isinstance(part, Mapping):
        return {"type": "text", "content": part if isinstance(part, str) else _json(part)}
    shaped = {k: v for k, v in part.items() if v is not None or k in ("arguments", "response")}
    shaped["type"] = str(part.get("type") or "text")
    content = shaped.get("content")
    if shaped["type"] == "text" and not isinstance(content, str):
        shaped["content"] = "" if content is None else _json(content)
    return shaped


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
