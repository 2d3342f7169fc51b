"""LiteLLM proxy ``generic_api`` callback: ``StandardLoggingPayload`` items in, LLMEvents out.

The callback posts a JSON array (``log_format: json_array``, the default), NDJSON or one object
per request, and never retries. Field names moved between LiteLLM releases (``litellm_call_id``
became ``call_id`` in some; times are float epoch seconds, numeric strings or naive datetime
strings), and ``generic_api_use_v1`` still sends the old payload in which every value went through
``str()``: it is converted to the current shape first, so one mapping serves both.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

from foundation.secrets import redact_text
from foundation.times import rfc3339_ns
from receiver.normalizers.base import IngestContext, Normalized, UnusableItem
from receiver.normalizers.common import (
    as_bool,
    as_dict,
    as_float,
    as_int,
    base_event,
    chat_messages,
    completion_messages,
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

FORMAT: Final[SourceFormat] = "litellm"

# LiteLLM's provider ids (the LlmProviders enum) where the GenAI semconv well-known name differs.
_SEMCONV_PROVIDER = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
    "moonshot": "moonshot_ai",
}
# call_type without its async "a" prefix; image_generation, transcription, rerank... stay as named
_OPERATIONS = {
    "completion": "chat",
    "responses": "chat",
    "anthropic_messages": "chat",
    "text_completion": "text_completion",
    "embedding": "embeddings",
}
# Already mapped elsewhere, or carrying prompt text that must stay under the RELAY_CONTENT policy.
_METADATA_SKIP = {
    "user_api_key_hash",
    "user_api_key",
    "user_api_key_alias",
    "usage_object",
    "prompt_management_metadata",
    "vector_store_request_metadata",
    "mcp_tool_call_metadata",
    "requester_ip_address",
    "user_agent",
}
_REQUEST_PARAMETERS = ("temperature", "max_tokens", "top_p", "top_k", "seed")
_PARAMETERS_SKIP = {"tools", "functions", "messages", "prompt", "input", "extra_body", "stream"}
_HEX = re.compile(r"[0-9a-f]+")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_MAX_EPOCH_S = 253_402_300_799  # 9999-12-31
_CACHED = ("prompt_tokens_details", "cached_tokens")
_CACHE_CREATION = ("prompt_tokens_details", "cache_creation_tokens")


def normalize(body: bytes, ctx: IngestContext) -> Normalized:
    result = Normalized()
    for index, item in enumerate(json_items(body)):
        label = f"[{index}]"
        if not isinstance(item, dict):
            result.reject(label, "expected a StandardLoggingPayload object")
            continue
        call_id = next(
            (str(item[k]) for k in ("litellm_call_id", "call_id", "id") if item.get(k)), None
        )
        if call_id is None:
            result.reject(label, "payload without litellm_call_id, call_id or id")
            continue
        result.attempt(call_id, _event, item, call_id, ctx)
    return result


def _event(item: dict[str, Any], call_id: str, ctx: IngestContext) -> LLMEvent:
    if _is_v1(item):
        item = _from_v1(item)
    times = [_time_ns(item.get("startTime")), _time_ns(item.get("endTime"))]
    known = [t for t in times if t is not None]
    if not known:
        raise UnusableItem("startTime and endTime are both missing or unreadable")
    start_ns, end_ns = known[0], known[-1]  # one known time stands for both

    metadata, hidden = as_dict(item.get("metadata")), as_dict(item.get("hidden_params"))
    event_id = stable_id(FORMAT, call_id)
    event = base_event(event_id=event_id, received_at=ctx.received_at, fmt=FORMAT, gateway=FORMAT)
    event["trace_id"], event["span_id"], parent = _trace_ids(item, metadata, event_id)
    if parent:
        event["parent_span_id"] = parent
    event["start_time"], event["end_time"] = rfc3339_ns(start_ns), rfc3339_ns(end_ns)
    if end_ns >= start_ns:
        event["duration_ms"] = (end_ns - start_ns) / 1_000_000

    parameters = as_dict(item.get("model_parameters"))
    stream = as_bool(item.get("stream"))
    stream = as_bool(parameters.get("stream")) if stream is None else stream
    if stream is not None:
        event["stream"] = stream
    first_token_ns = _time_ns(item.get("completionStartTime"))
    if stream and first_token_ns is not None and start_ns <= first_token_ns <= end_ns:
        # completionStartTime equals endTime for a blocking call: it is TTFT only when streaming
        event["ttft_ms"] = (first_token_ns - start_ns) / 1_000_000

    call_type = str(item.get("call_type") or "")
    base_call = call_type.removeprefix("litellm.")
    calls = (*_OPERATIONS, "image_generation", "transcription", "speech", "moderation", "rerank")
    base_call = base_call[1:] if base_call[1:] in calls else base_call  # acompletion
    event["operation"] = _OPERATIONS.get(base_call, base_call) or "chat"

    provider = item.get("custom_llm_provider")
    api_base = item.get("api_base") or hidden.get("api_base")
    if isinstance(provider, str) and provider:
        event["provider"] = _SEMCONV_PROVIDER.get(provider.lower(), provider.lower())
    upstream = event.get("provider") or url_host(api_base)
    if upstream:
        event["upstream"] = upstream
    response = item.get("response")
    model = item.get("model") or item.get("model_group") or hidden.get("litellm_model_name")
    if isinstance(model, str) and model:
        event["request_model"] = model
    response_model = as_dict(response).get("model")
    if isinstance(response_model, str) and response_model:
        event["response_model"] = response_model

    event["usage"] = cast(Usage, _usage(item, response, hidden, metadata))
    event["cost"] = cast(Cost, _cost(item, hidden))
    attributes: dict[str, Any] = {}
    status_fields = as_dict(item.get("status_fields"))
    failed = "failure" in (item.get("status"), status_fields.get("llm_api_status"))
    event["status"] = "error" if failed else "ok"
    if failed:
        event["error"] = cast(Error, _error(item, attributes))
    rate_limit = _rate_limit(as_dict(hidden.get("additional_headers")), attributes)
    if rate_limit:
        event["rate_limit"] = cast(RateLimit, rate_limit)
    _who(event, item, metadata)
    _content(event, item.get("messages"), response)
    _attributes(attributes, item, call_id, metadata, hidden, parameters, failed)
    flatten_into(attributes, "server.address", url_host(api_base))
    event["attributes"] = attributes
    return event


def _time_ns(value: Any) -> int | None:
    """Epoch seconds (float or numeric string) or a datetime string; naive datetimes are UTC."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = Decimal(str(value).strip())
        valid = seconds.is_finite() and 0 < seconds < _MAX_EPOCH_S
        ns = int(seconds * 1_000_000_000) if valid else None
    except InvalidOperation:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    return ns if ns is not None and 0 < ns < _MAX_EPOCH_S * 1_000_000_000 else None


def _hex_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    candidate = value.replace("-", "").strip().lower()
    valid = len(candidate) == 32 and _HEX.fullmatch(candidate) and candidate.strip("0")
    return candidate if valid else None


def _trace_ids(
    item: dict[str, Any], metadata: dict[str, Any], event_id: str
) -> tuple[str, str, str | None]:
    """The caller's W3C trace when it passed one, else LiteLLM's per-request trace id (a UUID)."""
    trace_id, span_id = derived_trace_ids(event_id)
    requester = as_dict(metadata.get("requester_metadata"))
    headers = as_dict(metadata.get("requester_custom_headers"))
    for source in (requester, metadata, headers):
        match = _TRACEPARENT.match(str(source.get("traceparent", "")).strip().lower())
        if match and match[1].strip("0") and match[2].strip("0"):
            return match[1], span_id, match[2]
    for candidate in (requester.get("trace_id"), metadata.get("trace_id"), item.get("trace_id")):
        if hex_id := _hex_id(candidate):
            return hex_id, span_id, None
    if isinstance(item.get("trace_id"), str) and item["trace_id"]:
        # A custom (non-hex) LiteLLM trace id still groups the retries/fallbacks of one request.
        trace_id = derived_trace_ids(stable_id(FORMAT, "trace", item["trace_id"]))[0]
    return trace_id, span_id, None


def _usage(
    item: dict[str, Any], response: Any, hidden: dict[str, Any], metadata: dict[str, Any]
) -> dict[str, int]:
    objects = [as_dict(as_dict(response).get("usage")), as_dict(hidden.get("usage_object"))]
    objects += [as_dict(metadata.get("usage_object"))]

    def first(*paths: tuple[str, ...]) -> int | None:
        for source in objects:
            for path in paths:
                value: Any = source
                for key in path:
                    value = as_dict(value).get(key)
                if (number := as_int(value)) is not None and number >= 0:
                    return number
        return None

    usage: dict[str, int] = {}
    for target, name in (
        ("input_tokens", "prompt_tokens"),
        ("output_tokens", "completion_tokens"),
        ("total_tokens", "total_tokens"),
    ):
        value = as_int(item.get(name))
        value = first((name,)) if value is None or value < 0 else value
        if value is not None:
            usage[target] = value
    for target, paths in (
        ("cache_read_input_tokens", (_CACHED, ("cache_read_input_tokens",))),
        ("cache_write_input_tokens", (("cache_creation_input_tokens",), _CACHE_CREATION)),
        ("reasoning_output_tokens", (("completion_tokens_details", "reasoning_tokens"),)),
    ):
        if (value := first(*paths)) is not None:
            usage[target] = value
    return finish_usage(usage)


def _cost(item: dict[str, Any], hidden: dict[str, Any]) -> dict[str, Any]:
    breakdown = as_dict(item.get("cost_breakdown"))
    total = as_float(item.get("response_cost"))
    total = as_float(hidden.get("response_cost")) if total is None else total
    total = as_float(breakdown.get("total_cost")) if total is None else total
    # With failure debug info LiteLLM could not price the call: its 0 is not a figure.
    if total is None or item.get("response_cost_failure_debug_info"):
        return {"currency": "USD", "source": "unknown"}
    cost: dict[str, Any] = {"total": total, "currency": "USD", "source": "gateway"}
    for target in ("input", "output"):
        if (value := as_float(breakdown.get(f"{target}_cost"))) is not None:
            cost[target] = value
    return cost


def _error(item: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    info = as_dict(item.get("error_information"))
    error_str = item.get("error_str") if isinstance(item.get("error_str"), str) else ""
    # "litellm.RateLimitError: AnthropicException - ..." names the class when error_class is empty
    prefix = re.match(r"(?:litellm\.)?(\w+(?:Error|Exception))\b", error_str or "")
    error: dict[str, Any] = {
        "type": str(info.get("error_class") or (prefix[1] if prefix else "") or "error")
    }
    message = info.get("error_message") or error_str
    if message:
        error["message"] = redact_text(str(message))[:2000]
    status = as_int(info.get("error_code"))
    if status is not None and 100 <= status <= 599:
        error["http_status"] = status
    for name, value in info.items():  # the traceback is dropped: long, and it may quote secrets
        if name not in ("error_class", "error_message", "error_code", "traceback") and value:
            flatten_into(attributes, f"litellm.error.{name.removeprefix('error_')}", value)
    return error


def _rate_limit(headers: dict[str, Any], attributes: dict[str, Any]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for raw_name, raw_value in headers.items():
        name = str(raw_name).lower().replace("-", "_").removeprefix("llm_provider_")
        kind, _, what = name.removeprefix("x_ratelimit_").partition("_")
        if not name.startswith("x_ratelimit_") or what not in ("requests", "tokens"):
            continue
        value = as_int(raw_value)
        if kind == "reset":
            flatten_into(attributes, f"litellm.ratelimit.reset_{what}", raw_value)
        elif kind in ("limit", "remaining") and value is not None and value >= 0:
            limits[f"{what}_{kind}"] = value  # remaining 0 is kept: the limit is exhausted
    return limits


def _who(event: LLMEvent, item: dict[str, Any], metadata: dict[str, Any]) -> None:
    api_key: dict[str, str] = {}
    if isinstance(metadata.get("user_api_key_alias"), str) and metadata["user_api_key_alias"]:
        api_key["name"] = metadata["user_api_key_alias"]
    digest = metadata.get("user_api_key_hash") or metadata.get("user_api_key")
    if isinstance(digest, str) and digest:
        # LiteLLM stores sha256(key) in hex; its prefix is exactly what key_hash(key) gives, so
        # the same key hashes the same whichever gateway reported it. Anything else may be a key.
        is_sha256 = len(digest) == 64 and _HEX.fullmatch(digest.lower())
        api_key["hash"] = "sha256:" + digest.lower()[:16] if is_sha256 else key_hash(digest)
    if api_key:
        event["api_key"] = cast(ApiKey, api_key)
    # The end user (the request's "user") first; else the LiteLLM user who owns the key.
    owner = metadata.get("user_api_key_user_id")
    for user in (item.get("end_user"), metadata.get("user_api_key_end_user_id"), owner):
        if isinstance(user, str) and user:
            event["user_id"] = user
            break
    requester = as_dict(metadata.get("requester_metadata"))
    session = requester.get("session_id") or metadata.get("session_id")
    if isinstance(session, str) and session:
        event["session_id"] = session


def _content(event: LLMEvent, messages: Any, response: Any) -> None:
    if isinstance(messages, str) and messages:
        messages = [{"role": "user", "content": messages}]
    elif isinstance(messages, dict):
        messages = [messages if "role" in messages else {"role": "user", "content": messages}]
    if isinstance(messages, list) and messages:
        event["input_messages"] = chat_messages(messages)

    output, reasons = completion_messages(response)
    response = as_dict(response)
    if not output and isinstance(response.get("output"), list):  # Responses API
        said = [o for o in response["output"] if isinstance(o, dict) and o.get("type") == "message"]
        output = chat_messages({"role": "assistant", **o} for o in said)
    elif not output and response.get("role") and "content" in response:  # anthropic_messages
        output = chat_messages([response])
        reasons = [str(response["stop_reason"])] if response.get("stop_reason") else []
    if output:
        event["output_messages"] = output
    if reasons:
        event["finish_reasons"] = reasons


def _attributes(
    attributes: dict[str, Any],
    item: dict[str, Any],
    call_id: str,
    metadata: dict[str, Any],
    hidden: dict[str, Any],
    parameters: dict[str, Any],
    failed: bool,
) -> None:
    response_id = as_dict(item.get("response")).get("id") or item.get("id")
    flatten_into(attributes, "gen_ai.response.id", response_id)
    flatten_into(attributes, "litellm.call_id", call_id)
    for name in ("trace_id", "call_type", "model_group", "model_id", "cache_key", "request_tags"):
        flatten_into(attributes, f"litellm.{name}", item.get(name))
    flatten_into(attributes, "litellm.model_name", hidden.get("litellm_model_name"))
    flatten_into(attributes, "litellm.overhead_time_ms", hidden.get("litellm_overhead_time_ms"))
    flatten_into(attributes, "litellm.payload_version", item.get("_payload_version"))
    cache_hit = as_bool(item.get("cache_hit"))
    if cache_hit is not None:  # LiteLLM's response cache, not provider prompt caching
        attributes["gateway.cache_hit"] = cache_hit
    if as_float(item.get("saved_cache_cost")):
        attributes["litellm.saved_cache_cost"] = as_float(item["saved_cache_cost"])
    flatten_into(attributes, "client.address", item.get("requester_ip_address"))
    flatten_into(attributes, "user_agent.original", item.get("user_agent"))

    guardrail_status = as_dict(item.get("status_fields")).get("guardrail_status")
    flatten_into(attributes, "litellm.guardrail_status", guardrail_status)
    if failed and guardrail_status == "guardrail_intervened":
        attributes["gateway.guardrail_denied"] = True
    guardrails = [g for g in item.get("guardrail_information") or () if isinstance(g, dict)]
    for index, guardrail in enumerate(guardrails[:16]):  # request/response bodies are content
        for name in ("guardrail_name", "guardrail_mode", "guardrail_status", "guardrail_action"):
            flatten_into(attributes, f"litellm.guardrails.{index}.{name}", guardrail.get(name))

    for name, value in metadata.items():  # user_api_key_team_id -> litellm.team_id, ...
        target = "litellm." + name.removeprefix("user_api_key_")
        if name not in _METADATA_SKIP and target not in attributes:
            flatten_into(attributes, target, value)
    for name, value in parameters.items():
        if name in _REQUEST_PARAMETERS:
            flatten_into(attributes, f"gen_ai.request.{name}", value)
        elif name not in _PARAMETERS_SKIP:
            flatten_into(attributes, f"litellm.model_parameters.{name}", value)
    for name, value in as_dict(item.get("cost_breakdown")).items():
        if name not in ("total_cost", "input_cost", "output_cost"):
            flatten_into(attributes, f"litellm.cost.{name}", value)
    model_map = as_dict(item.get("model_map_information")).get("model_map_key")
    flatten_into(attributes, "litellm.model_map_key", model_map)
    flatten_into(attributes, "litellm.built_in_tools", item.get("standard_built_in_tools_params"))


# -- the legacy payload (litellm.generic_api_use_v1): every value str()-ed, Python reprs inside --


def _is_v1(item: dict[str, Any]) -> bool:
    return "modelParameters" in item or ("cost" in item and "response_cost" not in item)


def _literal(value: Any) -> Any:
    """A Python repr (``{'role': 'user'}``) back into data, when it is made of literals only."""
    if not isinstance(value, str) or len(value) > 1_000_000:
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, OverflowError, MemoryError, RecursionError):
        return value


def _from_v1(item: dict[str, Any]) -> dict[str, Any]:
    usage_text = str(item.get("usage") or "")
    usage = _literal(usage_text)
    if not isinstance(usage, dict):  # "Usage(completion_tokens=20, prompt_tokens=10, ...)"
        usage = {}
        for name, number in re.findall(r"\b(\w+)=(\d+)", usage_text):
            usage.setdefault(name, int(number))
        usage["prompt_tokens_details"] = {"cached_tokens": usage.get("cached_tokens")}
        usage["completion_tokens_details"] = {"reasoning_tokens": usage.get("reasoning_tokens")}
    metadata = _literal(item.get("metadata"))
    if not isinstance(metadata, dict):  # a repr with objects in it: keep its plain string pairs
        metadata = dict(re.findall(r"'(\w+)': '([^'\\]*)'", str(metadata or "")))
    return {
        "_payload_version": "v1",
        "id": item.get("id"),
        "call_type": item.get("call_type"),
        "cache_hit": item.get("cache_hit"),
        "startTime": item.get("startTime"),
        "endTime": item.get("endTime"),
        "model": item.get("model"),
        "end_user": item.get("user"),
        "model_parameters": _literal(item.get("modelParameters")),
        "messages": _literal(item.get("messages")),
        "response": _v1_response(item.get("response"), usage),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "metadata": metadata,
        "response_cost": item.get("cost"),
        # v1 was only ever built from a successful response (it reads response_obj["usage"]).
        "status": "success",
    }


def _v1_response(text: Any, usage: dict[str, Any]) -> Any:
    parsed = _literal(text)
    if isinstance(parsed, dict) or not isinstance(parsed, str):
        return parsed
    # "ModelResponse(id=..., model='gpt-4o', choices=[Choices(finish_reason='stop', index=0,
    # message=Message(content='Hi', role='assistant', ...))], ...)": lift what the repr shows.
    quoted = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    contents = re.findall(r"\bcontent=" + quoted, parsed)
    reasons = re.findall(r"\bfinish_reason='(\w+)'", parsed)
    choices = [
        {"message": {"role": "assistant", "content": _literal(c)}, "finish_reason": r}
        for c, r in zip(contents, reasons + [None] * len(contents), strict=False)
    ]
    model = re.search(r"\bmodel='([^']+)'", parsed)
    response: dict[str, Any] = {"choices": choices, "usage": usage}
    if model:
        response["model"] = model[1]
    return response
