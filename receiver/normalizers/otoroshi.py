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

from decimal import Decimal, InvalidOperation
from typing import Any, cast

import orjson

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
    rfc3339_ns,
    stable_id,
    url_host,
)
from receiver.normalizers.jsonitems import json_items
from receiver.secrets import redact_text
from schemas import LLMEvent
from schemas.llm_event import ApiKey, Cost, Error, RateLimit, Usage

FORMAT = "otoroshi"
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
        at_id = item.get("@id")
        if isinstance(at_id, int) and not isinstance(at_id, bool):
            at_id = str(at_id)
        if not isinstance(at_id, str) or not at_id.strip():
            result.reject(label, "LLMUsageAudit without @id: no stable event_id can be derived")
            continue
        result.attempt(at_id.strip(), _event, item, at_id.strip(), ctx)
    return result


def _kind(item: dict[str, Any]) -> str:
    audit, kind = item.get("audit"), item.get("@type")
    if isinstance(audit, str) and audit:
        return audit[:64]
    if isinstance(kind, str) and kind:
        return kind[:64]
    # A projection may drop the envelope; the LLM payload still says what it is.
    return LLM_AUDIT if "consumed_using" in item and "provider_kind" in item else "unknown"


def _event(item: dict[str, Any], at_id: str, ctx: IngestContext) -> LLMEvent:
    end_ns = _ms_to_ns(item.get("@timestamp"))
    if end_ns is None or not 0 < end_ns < _MAX_EPOCH_MS * 1_000_000:
        raise UnusableItem("@timestamp is missing or not epoch milliseconds")
    event_id = stable_id(FORMAT, at_id)
    event = base_event(event_id=event_id, received_at=ctx.received_at, fmt=FORMAT, gateway=FORMAT)
    event["trace_id"], event["span_id"] = derived_trace_ids(event_id)

    # @timestamp is stamped once the call is over. ``duration`` is the provider's own processing
    # time for OpenAI-family providers and wall-clock time for the others; either way it is the
    # best start estimate there is. Errors and cache hits have none: the event is then instant.
    duration_ns = _ms_to_ns(item.get("duration"))
    if duration_ns is not None and not 0 <= duration_ns <= end_ns:
        duration_ns = None
    event["start_time"] = rfc3339_ns(end_ns - (duration_ns or 0))
    event["end_time"] = rfc3339_ns(end_ns)
    if duration_ns is not None:
        event["duration_ms"] = duration_ns / 1_000_000

    consumed = item.get("consumed_using")
    consumed = consumed if isinstance(consumed, str) else ""
    family, _, mode = consumed.rpartition("/")
    stream_chunks = [c for c in item.get("output_stream") or () if isinstance(c, dict)]
    event["operation"] = _OPERATIONS.get(family) or _OPERATIONS.get(consumed) or consumed or "chat"
    if mode in ("streaming", "blocking") or stream_chunks:
        event["stream"] = mode == "streaming" or bool(stream_chunks)

    details = as_dict(item.get("provider_details"))
    kind = item.get("provider_kind") or details.get("provider")
    if isinstance(kind, str) and kind:
        kind = kind.lower()
        event["provider"] = event["upstream"] = _SEMCONV_PROVIDER.get(kind, kind)

    output = as_dict(item.get("output"))
    metadata = as_dict(output.get("metadata"))
    input_body = as_dict(item.get("input_body"))
    last_chunk_model = next((c["model"] for c in reversed(stream_chunks) if c.get("model")), None)
    response_model = item.get("model") or output.get("model") or last_chunk_model
    request_model = (
        response_model or input_body.get("model") or as_dict(details.get("options")).get("model")
    )
    if isinstance(request_model, str) and request_model:
        event["request_model"] = request_model
    if isinstance(response_model, str) and response_model:
        event["response_model"] = response_model

    # Usage fallbacks, in order: the top-level slug (absent on errors and cache hits), the
    # response metadata, an embedding's OpenAI-style usage, the last streamed chunk with usage.
    sources = [item.get("usage"), metadata.get("usage"), output.get("usage")]
    sources += [chunk.get("usage") for chunk in reversed(stream_chunks)]
    event["usage"] = cast(Usage, _usage(next((as_dict(s) for s in sources if as_dict(s)), {})))
    event["cost"] = cast(Cost, _cost(item.get("costs") or metadata.get("costs")))

    error = item.get("error")
    event["status"] = "error" if error not in (None, {}, "") else "ok"
    attributes: dict[str, Any] = {}
    if event["status"] == "error":
        event["error"] = cast(Error, _error(error, attributes))

    rate_limit = _rate_limit(item.get("rate_limit") or metadata.get("rate_limit"))
    if rate_limit:
        event["rate_limit"] = cast(RateLimit, rate_limit)
    _who(event, item, attributes)
    _content(event, item, output, input_body, stream_chunks)
    _attributes(attributes, item, at_id, consumed, details, metadata, stream_chunks)
    event["attributes"] = attributes

    # Checked on the serialized event first (escaped as JSON escapes it): sweeping every string
    # of every event would cost more than the rest of the normalization.
    dump = orjson.dumps(event)
    found = [s for s in _secret_values(item) if orjson.dumps(s)[1:-1] in dump]
    # Longest first: one secret may contain another (a rotation's nextSecret, say).
    secrets = sorted(found, key=len, reverse=True)
    return cast(LLMEvent, _swept(event, secrets)) if secrets else event


def _ms_to_ns(value: Any) -> int | None:
    """Milliseconds (a JSON number or numeric string) as integer nanoseconds, exactly."""
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


def _usage(raw: dict[str, Any]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for target, names in (
        ("input_tokens", ("prompt_tokens", "input_tokens")),
        ("output_tokens", ("generation_tokens", "completion_tokens", "output_tokens")),
        ("reasoning_output_tokens", ("reasoning_tokens",)),
        ("total_tokens", ("total_tokens",)),
    ):
        value = next((as_int(raw[n]) for n in names if n in raw), None)
        if value is not None and value >= 0:  # Otoroshi writes -1 for "the provider did not say"
            usage[target] = value
    # Otoroshi's generation_tokens is the provider's completion count, which already includes
    # reasoning tokens; the total is therefore input + output, never + reasoning again.
    return finish_usage(usage)


def _cost(costs: Any) -> dict[str, Any]:
    costs = as_dict(costs)
    currency = str(costs.get("currency") or "dollar").strip().lower()
    if not costs or currency not in ("dollar", "dollars", "usd", "$"):
        return {"currency": "USD", "source": "unknown"}
    cost: dict[str, Any] = {"currency": "USD", "source": "gateway"}
    for target in ("total", "input", "output"):
        value = as_float(costs.get(f"{target}_cost"))
        if value is not None:
            cost[target] = value
    return cost


def _error(error: Any, attributes: dict[str, Any]) -> dict[str, Any]:
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
    return result


def _rate_limit(raw: Any) -> dict[str, int]:
    limits: dict[str, int] = {}
    for name in ("requests_limit", "requests_remaining", "tokens_limit", "tokens_remaining"):
        value = as_int(as_dict(raw).get(name))
        if value is not None and value >= 0:  # -1: the upstream sent no x-ratelimit-* header
            limits[name] = value
    return limits


def _who(event: LLMEvent, item: dict[str, Any], attributes: dict[str, Any]) -> None:
    apikey = as_dict(item.get("apikey"))
    # The clientId is never copied: with allowClientIdOnly it authenticates on its own.
    api_key: dict[str, str] = {}
    if isinstance(apikey.get("clientName"), str) and apikey["clientName"]:
        api_key["name"] = apikey["clientName"]
    if isinstance(apikey.get("clientId"), str) and apikey["clientId"]:
        api_key["hash"] = key_hash(apikey["clientId"])
    if api_key:
        event["api_key"] = cast(ApiKey, api_key)
    flatten_into(attributes, "otoroshi.apikey.tags", apikey.get("tags"))
    flatten_into(attributes, "otoroshi.apikey.metadata", apikey.get("metadata"))

    user = as_dict(item.get("user"))  # a PrivateAppsUser: its token and profile stay behind
    user_id = user.get("email") or user.get("name")
    if isinstance(user_id, str) and user_id:
        event["user_id"] = user_id
    for name in ("name", "email", "realm"):
        flatten_into(attributes, f"otoroshi.user.{name}", user.get(name))
    flatten_into(attributes, "otoroshi.user.auth_config_id", user.get("authConfigId"))


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

    generations = [g for g in output.get("generations") or () if isinstance(g, dict)]
    said = [g["message"] for g in generations if isinstance(g.get("message"), dict)]
    messages = chat_messages({"role": "assistant", **message} for message in said)
    reasons = [str(g["finish_reason"]) for g in generations if g.get("finish_reason")]
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
    chunks: list[dict[str, Any]],
) -> None:
    flatten_into(attributes, "otoroshi.id", at_id)
    flatten_into(attributes, "otoroshi.consumed_using", consumed or None)
    for name in ("@env", "request_id", "deployment_id", "resource_name"):  # the last two: Azure
        flatten_into(attributes, f"otoroshi.{name.lstrip('@')}", item.get(name))
    for name, value in item.items():  # enrichment: instance-name, cluster-mode...
        if name.startswith(("instance-", "cluster-")):
            flatten_into(attributes, "otoroshi." + name.replace("-", "."), value)
    flatten_into(attributes, "otoroshi.provider_kind", item.get("provider_kind"))
    flatten_into(attributes, "otoroshi.provider.id", item.get("provider") or details.get("id"))
    flatten_into(attributes, "otoroshi.provider.name", details.get("name"))
    base_url = as_dict(details.get("connection")).get("base_url")
    flatten_into(attributes, "server.address", url_host(base_url))
    route = as_dict(item.get("route"))
    flatten_into(attributes, "otoroshi.route.id", route.get("id"))
    flatten_into(attributes, "otoroshi.route.name", route.get("name"))
    flatten_into(
        attributes, "otoroshi.route.domains", as_dict(route.get("frontend")).get("domains")
    )
    flatten_into(attributes, "otoroshi.tenant", as_dict(route.get("_loc")).get("tenant"))

    cache = as_dict(item.get("cache") or metadata.get("cache"))
    if cache:  # the gateway's response cache (simple/semantic), not provider prompt caching
        flatten_into(attributes, "otoroshi.cache", cache)
        attributes["gateway.cache_hit"] = str(cache.get("status", "")).lower() == "hit"
    costs = as_dict(item.get("costs") or metadata.get("costs"))
    flatten_into(attributes, "otoroshi.costs.reasoning_cost", costs.get("reasoning_cost"))
    if str(costs.get("currency", "dollar")).lower() not in ("dollar", "dollars", "usd", "$"):
        flatten_into(attributes, "otoroshi.costs", costs)  # kept as reported, not as USD
    flatten_into(attributes, "otoroshi.impacts", item.get("impacts") or metadata.get("impacts"))
    flatten_into(attributes, "otoroshi.budgets", item.get("budgets") or metadata.get("budget"))
    flatten_into(attributes, "otoroshi.consumer_rate_limit", item.get("consumer_rate_limit"))
    if chunks:
        attributes["otoroshi.stream.chunks"] = len(chunks)


def _secret_values(item: dict[str, Any]) -> set[str]:
    apikey = as_dict(item.get("apikey"))
    candidates = (
        apikey.get("clientSecret"),
        as_dict(apikey.get("rotation")).get("nextSecret"),
        as_dict(item.get("user")).get("token"),
        as_dict(as_dict(item.get("provider_details")).get("connection")).get("token"),
    )
    # Very short values would blank out ordinary words; they are not keys anyone issues.
    return {value for value in candidates if isinstance(value, str) and len(value) >= 8}


def _swept(value: Any, secrets: list[str]) -> Any:
    """A copy of ``value`` in which every occurrence of a known secret is masked."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "[REDACTED]")
        return value
    if isinstance(value, dict):
        return {key: _swept(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_swept(item, secrets) for item in value]
    return value
