"""Otoroshi LLM extension: data-exporter events in, one LLMEvent per ``LLMUsageAudit``.

The webhook exporter posts a JSON array (the HTTP-call exporter and hand-made senders may post one
object or NDJSON). Without the recommended ``{"include": [{"audit": "LLMUsageAudit"}]}`` filter the
stream also holds ``GatewayEvent``, ``AlertEvent``, ``McpAudit``...: those are counted by kind and
skipped. Otoroshi re-queues a whole batch when a POST fails at the network level, so ``@id`` is
the identity of an event and re-sends get the same ``event_id``.

The audit event carries credentials in clear (``apikey.clientSecret``, ``user.token``,
``provider_details.connection.token``): only chosen fields are copied, and as a last guard every
string of the finished event is swept for those exact values (a provider error may quote its key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

import orjson

from foundation.memo import Memo
from foundation.secrets import mask_known, redact_text
from foundation.times import rfc3339_ns
from receiver.normalizers.base import IngestContext, Normalized, UnusableItem
from receiver.normalizers.common import (
    as_dict,
    as_float,
    as_int,
    base_event,
    chat_messages,
    derived_trace_ids,
    finish_usage,
    flatten_into,
    key_hash,
    stable_id,
    url_host,
)
from receiver.normalizers.jsonitems import json_items
from schemas import LLMEvent
from schemas.llm_event import ApiKey, Cost, Error, RateLimit, SourceFormat, Usage

FORMAT: Final[SourceFormat] = "otoroshi"
LLM_AUDIT = "LLMUsageAudit"

# Otoroshi's provider kinds where the GenAI semconv well-known name differs.
_SEMCONV_PROVIDER = {
    "azure-openai": "azure.ai.openai",
    "azure-ai-foundry": "azure.ai.inference",
    "mistral": "mistral_ai",
    "x-ai": "x_ai",
    "gemini": "gcp.gemini",
}
_OPERATIONS = {
    "chat/completion": "chat",
    "responses": "chat",
    "completion": "text_completion",
    "embedding_model/embedding": "embeddings",
    "image_model/generate": "image_generation",
    "image_model/edit": "image_edit",
    "audio_model/translate": "audio_translation",
    "audio_model/stt": "audio_transcription",
    "moderation_model/moderate": "moderation",
    "video_model/generate": "video_generation",
    "ocr_model/ocr": "ocr",
}
_MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31: beyond it the timestamp is garbage, not a time
_MAX_EPOCH_NS = _MAX_EPOCH_MS * 1_000_000
_USD = ("dollar", "dollars", "usd", "$")
# Otoroshi's name(s) for each usage count, first present wins.
_USAGE_NAMES = (
    ("input_tokens", ("prompt_tokens", "input_tokens")),
    ("output_tokens", ("generation_tokens", "completion_tokens", "output_tokens")),
    ("reasoning_output_tokens", ("reasoning_tokens",)),
    ("total_tokens", ("total_tokens",)),
)
_COST_NAMES = (("total", "total_cost"), ("input", "input_cost"), ("output", "output_cost"))
_RATE_LIMIT_NAMES = ("requests_limit", "requests_remaining", "tokens_limit", "tokens_remaining")
_ENRICHMENT_PREFIXES = ("instance-", "cluster-")
# Bounds of the tables that remember per-exporter constants (key layouts, strings, URLs).
_MAX_LAYOUTS = 256
_MAX_LAYOUT_CHARS = 4096
_MAX_REMEMBERED = 256


def normalize(body: bytes, ctx: IngestContext) -> Normalized:
    result = Normalized()
    for index, item in enumerate(json_items(body)):
        label = f"[{index}]"
        if not isinstance(item, dict):
            result.reject(label, "expected an Otoroshi event object")
            continue
        kind = _kind(item)
        if kind != LLM_AUDIT:
            result.skipped[kind] += 1
            continue
        at_id = _at_id(item.get("@id"))
        if at_id is None:
            result.reject(label, "LLMUsageAudit without @id: no stable event_id can be derived")
            continue
        result.attempt(at_id, _event, item, at_id, ctx)
    return result


def _kind(item: dict[str, Any]) -> str:
    audit, kind = item.get("audit"), item.get("@type")
    if isinstance(audit, str) and audit:
        return audit[:64]
    if isinstance(kind, str) and kind:
        return kind[:64]
    # A projection may drop the envelope; the LLM payload still says what it is.
    return LLM_AUDIT if "consumed_using" in item and "provider_kind" in item else "unknown"


def _at_id(value: Any) -> str | None:
    """``@id`` as a non-blank string; a JSON number (some senders send it so) counts as one."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _event(item: dict[str, Any], at_id: str, ctx: IngestContext) -> LLMEvent:
    end_ns = _ms_to_ns(item.get("@timestamp"))
    if end_ns is None or not 0 < end_ns < _MAX_EPOCH_NS:
        raise UnusableItem("@timestamp is missing or not epoch milliseconds")
    event_id = stable_id(FORMAT, at_id)
    event = base_event(event_id=event_id, received_at=ctx.received_at, fmt=FORMAT, gateway=FORMAT)
    event["trace_id"], event["span_id"] = derived_trace_ids(event_id)

    # @timestamp is stamped once the call is over. ``duration`` is the provider's own processing
    # time for OpenAI-family providers and wall-clock time for the others; either way it is the
    # best start estimate there is. Errors and cache hits have none: the event is then instant,
    # and its end time text serves as the start too.
    duration_ns = _ms_to_ns(item.get("duration"))
    if duration_ns is not None and not 0 <= duration_ns <= end_ns:
        duration_ns = None
    end_time = rfc3339_ns(end_ns)
    event["start_time"] = rfc3339_ns(end_ns - duration_ns) if duration_ns else end_time
    event["end_time"] = end_time
    if duration_ns is not None:
        event["duration_ms"] = duration_ns / 1_000_000

    consumed = item.get("consumed_using")
    consumed = consumed if isinstance(consumed, str) else ""
    family, _, mode = consumed.rpartition("/")
    raw_chunks = item.get("output_stream")
    stream_chunks = [c for c in raw_chunks if isinstance(c, dict)] if raw_chunks else []
    event["operation"] = _OPERATIONS.get(family) or _OPERATIONS.get(consumed) or consumed or "chat"
    if mode in ("streaming", "blocking") or stream_chunks:
        event["stream"] = mode == "streaming" or bool(stream_chunks)

    # Each sub-object is looked up once here and handed to the helpers that read it.
    details = as_dict(item.get("provider_details"))
    output = as_dict(item.get("output"))
    metadata = as_dict(output.get("metadata"))
    input_body = as_dict(item.get("input_body"))
    costs = as_dict(item.get("costs") or metadata.get("costs"))
    apikey = as_dict(item.get("apikey"))
    user = as_dict(item.get("user"))  # a PrivateAppsUser: its token and profile stay behind

    kind = item.get("provider_kind") or details.get("provider")
    if isinstance(kind, str) and kind:
        kind = kind.lower()
        event["provider"] = event["upstream"] = _SEMCONV_PROVIDER.get(kind, kind)

    response_model = item.get("model") or output.get("model") or _last_chunk_model(stream_chunks)
    request_model = (
        response_model or input_body.get("model") or as_dict(details.get("options")).get("model")
    )
    if isinstance(request_model, str) and request_model:
        event["request_model"] = request_model
    if isinstance(response_model, str) and response_model:
        event["response_model"] = response_model

    event["usage"] = _usage(_usage_source(item, metadata, output, stream_chunks))
    event["cost"] = _cost(costs)

    error = item.get("error")
    attributes: dict[str, Any] = {}
    if error not in (None, {}, ""):
        event["status"] = "error"
        event["error"] = _error(error, attributes)
    else:
        event["status"] = "ok"

    rate_limit = _rate_limit(as_dict(item.get("rate_limit") or metadata.get("rate_limit")))
    if rate_limit:
        event["rate_limit"] = rate_limit
    _who(event, apikey, user, attributes)
    _content(event, item, output, input_body, stream_chunks)
    _attributes(attributes, item, at_id, consumed, details, metadata, costs, stream_chunks)
    event["attributes"] = attributes

    # Checked on the serialized event first (escaped as JSON escapes it): sweeping every string
    # of every event would cost more than the rest of the normalization.
    dump = orjson.dumps(event)
    candidates = _secret_values(apikey, user, details)
    found = [s for s in candidates if orjson.dumps(s)[1:-1] in dump]
    if not found:
        return event
    # Longest first: one secret may contain another (a rotation's nextSecret, say).
    return cast(LLMEvent, mask_known(event, sorted(found, key=len, reverse=True)))


def _ms_to_ns(value: Any) -> int | None:
    """Milliseconds (a JSON number or numeric string) as integer nanoseconds, exactly."""
    # The usual case, a JSON integer, is exact as it is: Decimal is only needed for the rest.
    if type(value) is int:
        return value * 1_000_000 if -_MAX_EPOCH_MS <= value <= _MAX_EPOCH_MS else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    # The bound check comes first: int() of a huge exponent ("1e999999999") would never finish.
    if not number.is_finite() or not -_MAX_EPOCH_MS <= number <= _MAX_EPOCH_MS:
        return None
    return int(number * 1_000_000)


def _last_chunk_model(chunks: list[dict[str, Any]]) -> Any:
    """The model named by the last streamed chunk that names one (the fallback of last resort)."""
    return next((c["model"] for c in reversed(chunks) if c.get("model")), None)


def _usage_source(
    item: dict[str, Any],
    metadata: dict[str, Any],
    output: dict[str, Any],
    chunks: list[dict[str, Any]],
) -> dict[str, Any]:
    """The first non-empty usage object, in fallback order.

    The top-level slug (absent on errors and cache hits), the response metadata, an embedding's
    OpenAI-style usage, then the last streamed chunk with usage.
    """
    for source in (item.get("usage"), metadata.get("usage"), output.get("usage")):
        if isinstance(source, dict) and source:
            return source
    for chunk in reversed(chunks):
        source = chunk.get("usage")
        if isinstance(source, dict) and source:
            return source
    return {}


def _usage(raw: dict[str, Any]) -> Usage:
    usage: dict[str, int] = {}
    for target, names in _USAGE_NAMES:
        for name in names:
            if name in raw:
                value = as_int(raw[name])
                if value is not None and value >= 0:  # Otoroshi writes -1 for "did not say"
                    usage[target] = value
                break
    # Otoroshi's generation_tokens is the provider's completion count, which already includes
    # reasoning tokens; the total is therefore input + output, never + reasoning again.
    return cast(Usage, finish_usage(usage))


def _cost(costs: dict[str, Any]) -> Cost:
    if not costs or str(costs.get("currency") or "dollar").strip().lower() not in _USD:
        return {"currency": "USD", "source": "unknown"}
    cost: dict[str, Any] = {"currency": "USD", "source": "gateway"}
    for target, name in _COST_NAMES:
        value = as_float(costs.get(name))
        if value is not None:
            cost[target] = value
    return cast(Cost, cost)


def _error(error: Any, attributes: dict[str, Any]) -> Error:
    """Guardrail denials, ``{"exception": ...}`` and provider error bodies, as one shape."""
    if not isinstance(error, dict):
        return {"type": "error", "message": redact_text(str(error))[:2000]}
    inner = error.get("error")
    result: dict[str, Any] = {}
    if isinstance(inner, str):  # a guardrail: {"error", "error_description", "phase"}
        result["type"] = inner
        message = error.get("error_description") or error.get("message")
        if inner == "guardrail_denied":
            attributes["gateway.guardrail_denied"] = True
        flatten_into(attributes, "otoroshi.error.phase", error.get("phase"))
    elif isinstance(inner, dict):  # provider body: {"error": {"message", "type", "code"}}
        result["type"] = str(inner.get("type") or inner.get("code") or "provider_error")
        message = inner.get("message")
    elif "exception" in error:
        result["type"] = "exception"
        message = error["exception"]
    else:
        result["type"] = "provider_error"
        message = error.get("message")
    if message is not None:
        result["message"] = redact_text(str(message))[:2000]
    for name in ("status", "status_code", "http_status", "code"):
        status = as_int(error.get(name))
        if status is not None and 100 <= status <= 599:
            result["http_status"] = status
            break
    return cast(Error, result)


def _rate_limit(raw: dict[str, Any]) -> RateLimit:
    limits: dict[str, int] = {}
    for name in _RATE_LIMIT_NAMES:
        value = as_int(raw.get(name))
        if value is not None and value >= 0:  # -1: the upstream sent no x-ratelimit-* header
            limits[name] = value
    return cast(RateLimit, limits)


def _who(
    event: LLMEvent, apikey: dict[str, Any], user: dict[str, Any], attributes: dict[str, Any]
) -> None:
    if apikey:
        # The clientId is never copied: with allowClientIdOnly it authenticates on its own.
        api_key: dict[str, str] = {}
        name, client_id = apikey.get("clientName"), apikey.get("clientId")
        if isinstance(name, str) and name:
            api_key["name"] = name
        if isinstance(client_id, str) and client_id:
            api_key["hash"] = key_hash(client_id)
        if api_key:
            event["api_key"] = cast(ApiKey, api_key)
        _flatten_present(
            attributes,
            (
                ("otoroshi.apikey.tags", apikey.get("tags")),
                ("otoroshi.apikey.metadata", apikey.get("metadata")),
            ),
        )
    if user:
        user_id = user.get("email") or user.get("name")
        if isinstance(user_id, str) and user_id:
            event["user_id"] = user_id
        _flatten_present(
            attributes,
            (
                ("otoroshi.user.name", user.get("name")),
                ("otoroshi.user.email", user.get("email")),
                ("otoroshi.user.realm", user.get("realm")),
                ("otoroshi.user.auth_config_id", user.get("authConfigId")),
            ),
        )


def _content(
    event: LLMEvent,
    item: dict[str, Any],
    output: dict[str, Any],
    input_body: dict[str, Any],
    chunks: list[dict[str, Any]],
) -> None:
    prompt = item.get("input_prompt")
    if isinstance(prompt, list) and prompt:
        event["input_messages"] = chat_messages(prompt)
    elif isinstance(input_body.get("input"), str | list) and input_body["input"]:
        event["input_messages"] = chat_messages([{"role": "user", "content": input_body["input"]}])

    said: list[dict[str, Any]] = []
    reasons: list[str] = []
    for generation in output.get("generations") or ():
        if isinstance(generation, dict):
            message = generation.get("message")
            if isinstance(message, dict):
                said.append({"role": "assistant", **message})
            if generation.get("finish_reason"):
                reasons.append(str(generation["finish_reason"]))
    messages = chat_messages(said) if said else []
    streamed: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            text = as_dict(choice.get("delta")).get("content")
            if isinstance(text, str):
                streamed.setdefault(as_int(choice.get("index")) or 0, []).append(text)
            if choice.get("finish_reason"):
                reasons.append(str(choice["finish_reason"]))
    if not messages and streamed:  # Otoroshi normally aggregates; rebuild only if it did not
        texts = ["".join(parts) for _, parts in sorted(streamed.items())]
        messages = [{"role": "assistant", "parts": [{"type": "text", "content": t}]} for t in texts]
    if messages:
        event["output_messages"] = messages
    if reasons:
        event["finish_reasons"] = list(dict.fromkeys(reasons))


def _attributes(
    attributes: dict[str, Any],
    item: dict[str, Any],
    at_id: str,
    consumed: str,
    details: dict[str, Any],
    metadata: dict[str, Any],
    costs: dict[str, Any],
    chunks: list[dict[str, Any]],
) -> None:
    # The two ids differ in every event: flatten_into directly, as remembering them is useless.
    flatten_into(attributes, "otoroshi.id", at_id)
    _flatten_present(
        attributes,
        (("otoroshi.consumed_using", consumed or None), ("otoroshi.env", item.get("@env"))),
    )
    flatten_into(attributes, "otoroshi.request_id", item.get("request_id"))
    _flatten_present(
        attributes,
        (
            ("otoroshi.deployment_id", item.get("deployment_id")),  # this one and the next: Azure
            ("otoroshi.resource_name", item.get("resource_name")),
        ),
    )
    # Otoroshi's enrichment: instance-name, cluster-mode...
    _flatten_present(attributes, [(key, item[name]) for name, key in _enrichment_keys(item)])
    route = as_dict(item.get("route"))
    _flatten_present(
        attributes,
        (
            ("otoroshi.provider_kind", item.get("provider_kind")),
            ("otoroshi.provider.id", item.get("provider") or details.get("id")),
            ("otoroshi.provider.name", details.get("name")),
            ("server.address", url_host(as_dict(details.get("connection")).get("base_url"))),
            ("otoroshi.route.id", route.get("id")),
            ("otoroshi.route.name", route.get("name")),
            ("otoroshi.route.domains", as_dict(route.get("frontend")).get("domains")),
            ("otoroshi.tenant", as_dict(route.get("_loc")).get("tenant")),
        ),
    )

    cache = as_dict(item.get("cache") or metadata.get("cache"))
    if cache:  # the gateway's response cache (simple/semantic), not provider prompt caching
        flatten_into(attributes, "otoroshi.cache", cache)
        attributes["gateway.cache_hit"] = str(cache.get("status", "")).lower() == "hit"
    _flatten_present(attributes, (("otoroshi.costs.reasoning_cost", costs.get("reasoning_cost")),))
    if str(costs.get("currency", "dollar")).lower() not in _USD:
        flatten_into(attributes, "otoroshi.costs", costs)  # kept as reported, not as USD
    _flatten_present(
        attributes,
        (
            ("otoroshi.impacts", item.get("impacts") or metadata.get("impacts")),
            ("otoroshi.budgets", item.get("budgets") or metadata.get("budget")),
            ("otoroshi.consumer_rate_limit", item.get("consumer_rate_limit")),
        ),
    )
    if chunks:
        attributes["otoroshi.stream.chunks"] = len(chunks)


def _flatten_present(attributes: dict[str, Any], fields: Iterable[tuple[str, Any]]) -> None:
    """``flatten_into`` for each ``(key, value)``, done as cheaply as the value allows.

    Most optional fields are null in a given event: ``flatten_into`` would ignore them, so they
    are skipped here without a call. Most strings (environment, instance, provider, route...) are
    the same in event after event, and vetting one for secrets costs more than the rest of its
    attribute: what ``flatten_into`` makes of a short string is remembered, in a bounded LRU
    table (so values unique to each event, the ids, are not passed here: they would churn it).
    """
    for key, value in fields:
        if value is None:
            continue
        if type(value) is str and len(key) + len(value) <= _MAX_REMEMBERED:
            attributes.update(_flattened_text(key, value))
        else:
            flatten_into(attributes, key, value)


def _flattened_text(key: str, value: str) -> Mapping[str, Any]:
    """The attributes ``flatten_into`` adds for one string: a function of key and value only,
    remembered. Shared by every event that has this string, hence read-only (a dict, as
    ``update`` copies a dict fastest)."""
    added = _FLATTENED.get((key, value))
    if added is None:
        added = {}
        flatten_into(added, key, value)
        _FLATTENED.put((key, value), added)
    return added


_FLATTENED: Final[Memo[tuple[str, str], dict[str, Any]]] = Memo(4096)
# Otoroshi's enrichment keys and their attribute names, per key layout (see _enrichment_keys).
_ENRICHMENT_BY_LAYOUT: Final[Memo[tuple[str, ...], tuple[tuple[str, str], ...]]] = Memo(
    _MAX_LAYOUTS
)


def _enrichment_keys(item: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The ``instance-*`` and ``cluster-*`` keys of an event, in its order, with their attributes.

    Testing the prefix of each of the ~40 keys costs more than any other attribute. The events of
    one exporter all have the same keys in the same order, so the answer is kept per key layout,
    in a table cleared when full and holding only layouts of reasonable size (a sender can make
    keys as long as the body limit allows).
    """
    layout = tuple(item)
    keys = _ENRICHMENT_BY_LAYOUT.get(layout)
    if keys is None:
        keys = tuple(
            (name, "otoroshi." + name.replace("-", "."))
            for name in layout
            if name.startswith(_ENRICHMENT_PREFIXES)
        )
        if sum(map(len, layout)) <= _MAX_LAYOUT_CHARS:
            _ENRICHMENT_BY_LAYOUT.put(layout, keys)
    return keys


def _secret_values(
    apikey: dict[str, Any], user: dict[str, Any], details: dict[str, Any]
) -> set[str]:
    candidates = (
        apikey.get("clientSecret"),
        as_dict(apikey.get("rotation")).get("nextSecret"),
        user.get("token"),
        as_dict(details.get("connection")).get("token"),
    )
    # Very short values would blank out ordinary words; they are not keys anyone issues.
    return {value for value in candidates if isinstance(value, str) and len(value) >= 8}
