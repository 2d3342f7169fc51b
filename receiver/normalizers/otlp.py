"""OTLP traces (OpenRouter Broadcast, any GenAI-instrumented app) as LLMEvents.

Senders mix convention generations: GenAI semconv old and new (``gen_ai.system`` /
``gen_ai.provider.name``, ``prompt_tokens`` / ``input_tokens``), OpenInference ``llm.*``,
OpenLLMetry, and OpenRouter's own (``gen_ai.usage.input_tokens.cached``, ``openrouter.*`` or
``trace.metadata.openrouter.*``, numbers as strings, arrays as JSON strings). Each field below lists
the names it accepts, first match wins; every attribute not used for a field is kept in
``attributes``, and an alias whose value differs from the one chosen is kept too, so nothing is
dropped silently. Spans that are not LLM calls (tools, agents, HTTP) are skipped and counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from foundation.memo import remember_short
from foundation.times import rfc3339_ns
from receiver.normalizers.base import IngestContext, Normalized
from receiver.normalizers.common import (
    as_bool,
    as_float,
    as_int,
    as_str_list,
    base_event,
    chat_messages,
    completion_messages,
    finish_usage,
    maybe_json,
    stable_id,
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

PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.system", "llm.provider", "llm.vendor")
REQUEST_MODEL = (
    "gen_ai.request.model",
    "llm.request.model_name",
    "llm.model_name",
    "llm.request.model",
    "embedding.model_name",
)
RESPONSE_MODEL = ("gen_ai.response.model", "llm.response.model_name", "llm.response.model")
USAGE: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "input_tokens",
        (
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
            "llm.usage.prompt_tokens",
        ),
    ),
    (
        "output_tokens",
        (
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
            "llm.usage.completion_tokens",
        ),
    ),
    (
        "total_tokens",
        ("gen_ai.usage.total_tokens", "llm.token_count.total", "llm.usage.total_tokens"),
    ),
    (
        "cache_read_input_tokens",
        (
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "gen_ai.usage.input_tokens.cached",
            "llm.token_count.prompt_details.cache_read",
        ),
    ),
    (
        "cache_write_input_tokens",
        (
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ),
    ),
    (
        "reasoning_output_tokens",
        (
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.output_tokens.reasoning",
            "llm.token_count.completion_details.reasoning",
        ),
    ),
)
COST: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("total", ("gen_ai.usage.total_cost", "gen_ai.usage.cost", "llm.cost.total")),
    ("input", ("gen_ai.usage.input_cost", "llm.cost.prompt")),
    ("output", ("gen_ai.usage.output_cost", "llm.cost.completion")),
)
FINISH_REASONS = (
    "gen_ai.response.finish_reasons",
    "gen_ai.response.finish_reason",
    "llm.finish_reason",
    "llm.response.finish_reason",
)
UPSTREAM = (
    "openrouter.provider_slug",
    "trace.metadata.openrouter.provider_slug",
    "openrouter.provider_name",
    "trace.metadata.openrouter.provider_name",
)
API_KEY_NAME = ("openrouter.api_key_name", "trace.metadata.openrouter.api_key_name")
SESSION = ("gen_ai.conversation.id", "session.id")
USER = ("user.id", "enduser.id", "llm.user")
STREAM = ("gen_ai.request.stream", "llm.is_streaming")
TTFT_SECONDS = ("gen_ai.response.time_to_first_chunk",)
OPERATION = ("gen_ai.operation.name",)
REQUEST_TYPE = ("llm.request.type",)
ERROR_TYPE = ("error.type",)
HTTP_STATUS = ("http.response.status_code", "http.status_code")
# Every table ``_Taker.take`` is given. No name is in two tables (checked at import below): so
# one look at a span's names tells which tables have something to take, see ``_Names``.
ALIAS_TABLES: Final[tuple[tuple[str, ...], ...]] = (
    PROVIDER,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    *(keys for _, keys in USAGE),
    *(keys for _, keys in COST),
    FINISH_REASONS,
    UPSTREAM,
    API_KEY_NAME,
    SESSION,
    USER,
    STREAM,
    TTFT_SECONDS,
    OPERATION,
    REQUEST_TYPE,
    ERROR_TYPE,
    HTTP_STATUS,
)
# Request parameters OpenRouter sends as strings; semconv types them, and sinks need the numbers.
TYPED_PARAMETERS: Final[dict[str, Callable[[Any], Any]]] = {
    "gen_ai.request.temperature": as_float,
    "gen_ai.request.top_p": as_float,
    "gen_ai.request.frequency_penalty": as_float,
    "gen_ai.request.presence_penalty": as_float,
    "gen_ai.request.max_tokens": as_int,
    "gen_ai.request.seed": as_int,
    "gen_ai.request.top_k": as_int,
    "gen_ai.request.choice.count": as_int,
}
_INDEXED = re.compile(
    r"^(gen_ai\.(?:prompt|completion)|llm\.(?:input|output)_messages)\.(\d+)\.(.+)$"
)
_MODEL_FIELDS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("request_model", REQUEST_MODEL),
    ("response_model", RESPONSE_MODEL),
)
_OPENROUTER_PREFIXES: Final = ("openrouter.", "trace.metadata.openrouter.")
_LLM_NAMES: Final = frozenset((*REQUEST_MODEL, *RESPONSE_MODEL, "llm.request.type"))


def _table_by_alias(tables: Iterable[tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    by_alias: dict[str, tuple[str, ...]] = {}
    for table in tables:
        for alias in table:
            if alias in by_alias:
                raise ValueError(f"{alias!r} is in two alias tables")
            if alias in TYPED_PARAMETERS or _INDEXED.match(alias):
                raise ValueError(f"{alias!r} is an alias and a typed or indexed name")
            by_alias[alias] = table
    return by_alias


_TABLE_BY_ALIAS: Final = _table_by_alias(ALIAS_TABLES)
_ALIASES: Final = frozenset(_TABLE_BY_ALIAS)


@dataclass(frozen=True, slots=True)
class _Names:
    """What only depends on a span's attribute names, worked out once per list of names.

    Spans from one sender nearly always carry the same names in the same order, and finding
    aliases, prefixes and indexed messages among a few dozen names costs more than the rest of
    a take. As no alias is a typed or an indexed name, taking fields leaves those in place.
    """

    # A table's first alias (no name is in two tables) -> its aliases present, in table order.
    aliases: dict[str, tuple[str, ...]]
    openrouter: bool  # some name is ``openrouter.*`` or ``trace.metadata.openrouter.*``
    indexed: tuple[tuple[str, str, int, str], ...]  # (name, side, index, field), in name order
    typed: tuple[tuple[str, Callable[[Any], Any]], ...]  # TYPED_PARAMETERS present, table order

    @classmethod
    def of(cls, names: tuple[str, ...]) -> _Names:
        present = _ALIASES.intersection(names)
        aliases = {
            table[0]: tuple(alias for alias in table if alias in present)
            for table in {_TABLE_BY_ALIAS[alias] for alias in present}
        }
        indexed = []
        for name in names:
            match = _INDEXED.match(name)
            if match:
                prefix, index, field = match.groups()
                side = "input" if prefix in ("gen_ai.prompt", "llm.input_messages") else "output"
                indexed.append((name, side, int(index), field.removeprefix("message.")))
        return cls(
            aliases=aliases,
            openrouter=any(name.startswith(_OPENROUTER_PREFIXES) for name in names),
            indexed=tuple(indexed),
            typed=tuple((k, convert) for k, convert in TYPED_PARAMETERS.items() if k in names),
        )


# Names seen lately. Entries are bounded in count and size: a sender inventing names for every
# span only gets uncached lookups.
_NAMES_SEEN: dict[tuple[str, ...], _Names] = {}
_NAMES_SEEN_MAX: Final = 256
_NAMES_SEEN_MAX_NAMES: Final = 128  # names per entry
_NAMES_SEEN_MAX_CHARS: Final = 8192  # characters of all names per entry


def _names_of(attributes: dict[str, Any]) -> _Names:
    names = tuple(attributes)
    known = _NAMES_SEEN.get(names)
    if known is not None:
        return known
    known = _Names.of(names)
    if len(names) <= _NAMES_SEEN_MAX_NAMES and sum(map(len, names)) <= _NAMES_SEEN_MAX_CHARS:
        if len(_NAMES_SEEN) >= _NAMES_SEEN_MAX:
            _NAMES_SEEN.clear()
        _NAMES_SEEN[names] = known
    return known


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
    if kind is not None:
        return kind in _OPENINFERENCE_OPERATIONS
    return not _LLM_NAMES.isdisjoint(attributes)


class _Taker:
    """Takes fields out of a span's attributes; what is left becomes ``event.attributes``.

    A span has a few dozen attributes and the alias tables ~60 names, most of them absent from
    any one span: ``take`` only looks at the aliases ``_Names`` found in the span.
    """

    __slots__ = ("_aliases", "left", "names")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.left = dict(attributes)
        self.names = names = _names_of(attributes)
        self._aliases = names.aliases

    def take(self, keys: tuple[str, ...], convert: Callable[[Any], Any] = lambda v: v) -> Any:
        """The first usable value of the aliases ``keys``, one of ``ALIAS_TABLES``.

        Each table is taken at most once per span: as no name is in two tables, the aliases
        ``_Names`` found are then all still in ``left``.
        """
        present = self._aliases.get(keys[0])  # cheaper to hash than the whole table
        if present is None:
            return None
        left = self.left
        if len(present) == 1:  # the common case: one name, no alias to compare
            key = present[0]
            value = convert(left[key])
            if value is None or value == "":
                return None  # unusable: the raw value stays in attributes
            del left[key]
            return value
        # The conversions are pure and total: converting every alias, each once, changes nothing.
        taken = []
        chosen: Any = None
        for key in present:
            raw = left.pop(key)
            value = convert(raw)
            taken.append((key, raw, value))
            if chosen is None and value is not None and value != "":
                chosen = value
        for key, raw, value in taken:
            # An alias that says something else than the chosen value stays visible.
            if raw is not None and value != chosen and str(raw) != str(chosen):
                left[key] = raw
        return chosen


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else (None if value is None else str(value))


def _token(value: Any) -> str | None:
    """A provider name as a semconv-style token: ``Google AI Studio`` -> ``google_ai_studio``."""
    text = _text(value)
    return _tokenized(text) if text else None


@remember_short(maxsize=4096)  # a handful of provider names repeat
def _tokenized(text: str) -> str | None:
    return re.sub(r"[^a-z0-9.-]+", "_", text.strip().lower()).strip("_") or None


def _finish_reasons(value: Any) -> list[str] | None:
    """``as_str_list``, each call with its own list: events must not share one."""
    reasons = _finish_reasons_once(value)
    return None if reasons is None else list(reasons)


@remember_short(maxsize=1024)
def _finish_reasons_once(value: Any) -> tuple[str, ...] | None:
    # Senders repeat a few spellings ('["stop"]', "stop") and decoding them is one of the
    # dearest takes: converted once each.
    reasons = as_str_list(value)
    return None if reasons is None else tuple(reasons)


def span_event(span: FlatSpan, ctx: IngestContext, fmt: str) -> LLMEvent:
    attrs = _Taker(span.attributes)
    resource = span.resource
    service = resource.get("service.name")
    is_openrouter = service == "openrouter" or attrs.names.openrouter
    gateway = (
        "openrouter" if is_openrouter else (service if service in KNOWN_GATEWAYS else "unknown")
    )
    test = (
        attrs.left.get("source") == "observability-test-button"
        or attrs.left.get("span.metadata.test") == "true"
    )

    if span.start_ns == 0 and span.end_ns == 0:
        raise SpanError("span has neither startTimeUnixNano nor endTimeUnixNano")
    start_ns = span.start_ns or span.end_ns
    end_ns = span.end_ns or span.start_ns
    if end_ns < start_ns:
        raise SpanError("endTimeUnixNano is before startTimeUnixNano")

    event_id = stable_id("otlp", span.trace_id, span.span_id)
    event = base_event(
        event_id=event_id, received_at=ctx.received_at, fmt=fmt, gateway=gateway, test=test
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

    event["operation"] = _operation(attrs)
    provider = attrs.take(PROVIDER, _token)
    if provider:
        event["provider"] = provider
    upstream = attrs.take(UPSTREAM, _token) or (provider if is_openrouter else None)
    if upstream:
        event["upstream"] = upstream
    for field, keys in _MODEL_FIELDS:
        model = attrs.take(keys, _text)
        if model:
            event[field] = model  # type: ignore[literal-required]
    stream = attrs.take(STREAM, as_bool)
    if stream is not None:
        event["stream"] = stream

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

    error_type = attrs.take(ERROR_TYPE, _text)
    if span.status_code == STATUS_ERROR or error_type:
        event["status"] = "error"
        exception = span.exception or {}
        error: dict[str, Any] = {
            "type": error_type or _text(exception.get("exception.type")) or "_OTHER"
        }
        message = span.status_message or _text(exception.get("exception.message"))
        if message:
            error["message"] = message
        http_status = attrs.take(HTTP_STATUS, as_int)
        if http_status is not None and 100 <= http_status <= 599:
            error["http_status"] = http_status
        event["error"] = error  # type: ignore[typeddict-item]
    else:
        event["status"] = "ok"
    reasons = attrs.take(FINISH_REASONS, _finish_reasons)
    if reasons:
        event["finish_reasons"] = reasons

    user = attrs.take(USER, _text)
    if user:
        event["user_id"] = user
    session = attrs.take(SESSION, _text)
    if session:
        event["session_id"] = session
    key_name = attrs.take(API_KEY_NAME, _text)
    if key_name:
        event["api_key"] = {"name": key_name}

    _take_content(attrs, event)
    attributes = attrs.left
    for key, convert in attrs.names.typed:
        if isinstance(attributes.get(key), str):
            typed = convert(attributes[key])
            if typed is not None:
                attributes[key] = typed
    attributes.update(span.notes)
    if span.name:
        attributes["otlp.span.name"] = span.name
    for key, value in resource.items():
        attributes[f"resource.{key}"] = value
    if attributes:
        event["attributes"] = attributes
    return event


def _operation(attrs: _Taker) -> str:
    operation = attrs.take(OPERATION, _text)
    if operation:
        return str(operation)
    request_type = attrs.take(REQUEST_TYPE, _text)
    if request_type:
        return _LLM_REQUEST_TYPES.get(str(request_type), str(request_type))
    kind = attrs.left.get("openinference.span.kind")
    return _OPENINFERENCE_OPERATIONS.get(kind, "chat") if isinstance(kind, str) else "chat"


def _take_content(attrs: _Taker, event: LLMEvent) -> None:
    left = attrs.left
    indexed = _indexed_messages(left, attrs.names.indexed)
    inputs: list[Message] = []
    outputs: list[Message] = []
    reasons: list[str] = []

    instructions = maybe_json(left.pop("gen_ai.system_instructions", None))
    if isinstance(instructions, list):
        inputs.append({"role": "system", "parts": instructions})
    elif isinstance(instructions, str) and instructions:
        inputs.append({"role": "system", "parts": [{"type": "text", "content": instructions}]})

    raw_prompt = left.get("gen_ai.input.messages") or left.get("gen_ai.prompt")
    prompt = maybe_json(left.pop("gen_ai.input.messages", None) or left.pop("gen_ai.prompt", None))
    if isinstance(prompt, dict):
        if isinstance(prompt.get("messages"), list):
            inputs.extend(chat_messages(prompt["messages"]))
        elif isinstance(prompt.get("prompt"), str):
            inputs.append(
                {"role": "user", "parts": [{"type": "text", "content": prompt["prompt"]}]}
            )
        else:
            left["gen_ai.prompt"] = raw_prompt
    elif isinstance(prompt, list):
        inputs.extend(chat_messages(prompt))
    elif isinstance(prompt, str) and prompt:
        inputs.append({"role": "user", "parts": [{"type": "text", "content": prompt}]})
    inputs.extend(indexed.get("input", ()))

    raw_completion = left.get("gen_ai.output.messages") or left.get("gen_ai.completion")
    completion = maybe_json(
        left.pop("gen_ai.output.messages", None) or left.pop("gen_ai.completion", None)
    )
    if isinstance(completion, dict):
        outputs, reasons = completion_messages(completion)
        if isinstance(completion.get("id"), str):
            left.setdefault("gen_ai.response.id", completion["id"])
        if not outputs and set(completion) - {"id"}:
            left["gen_ai.completion"] = raw_completion
    elif isinstance(completion, list):
        outputs = chat_messages(completion)
    elif isinstance(completion, str) and completion:
        outputs = [{"role": "assistant", "parts": [{"type": "text", "content": completion}]}]
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


def _indexed_messages(
    left: dict[str, Any], indexed: tuple[tuple[str, str, int, str], ...]
) -> dict[str, list[Message]]:
    """OpenLLMetry ``gen_ai.prompt.0.role`` and OpenInference ``llm.input_messages.0.message.*``.

    ``indexed`` lists those names, as ``_Names.indexed`` parsed them, in the order of ``left``.
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
