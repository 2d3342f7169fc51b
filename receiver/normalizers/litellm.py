"""LiteLLM proxy ``generic_api`` callback: ``StandardLoggingPayload`` items in, LLMEvents out.

The callback posts a JSON array (``log_format: json_array``, the default), NDJSON or one object
per request, and never retries. Field names moved between LiteLLM releases (``litellm_call_id``
became ``call_id`` in some; times are float epoch seconds, numeric strings or naive datetime
strings), and ``generic_api_use_v1`` still sends the old payload in which every value went through
``str()``: ``litellm_v1`` converts it to the current shape first, so one mapping serves both.

LiteLLM fills some fields whatever happened: a failed call has 0 tokens and a ``response_cost`` of
0, and ``session_id`` is empty unless ``request_correlation_in_logs`` is on (the caller's session
then travels as ``trace_id``). Those placeholders are read as what they are, not as figures.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

from foundation.times import rfc3339_ns
from receiver.normalizers import litellm_outcome, litellm_v1
from receiver.normalizers.base import IngestContext, Normalized, UnusableItem
from receiver.normalizers.common import (
    as_bool,
    as_dict,
    as_float,
    base_event,
    chat_messages,
    completion_messages,
    derived_trace_ids,
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
# LiteLLM's call types (``completion``, async ``acompletion``, ``litellm.aembedding``) as GenAI
# operations; those that are no LLM call in the GenAI sense keep their own name. The OTLP
# normalizer reads them too: LiteLLM's ``otel`` callback names the operation after the call type.
CALL_TYPES: Final = {
    "completion": "chat",
    "responses": "chat",
    "anthropic_messages": "chat",
    "text_completion": "text_completion",
    "embedding": "embeddings",
    **{name: name for name in ("image_generation", "transcription", "speech", "moderation")},
    "rerank": "rerank",
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
# How LiteLLM writes the trace id it generates for a request (uuid4): any other trace id was set
# by the caller (litellm_session_id, metadata session_id or trace_id).
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_MAX_EPOCH_S = 253_402_300_799  # 9999-12-31


def normalize(body: bytes, ctx: IngestContext) -> Normalized:
    result = Normalized()
    for index, item in enumerate(json_items(body)):
        label = f"[{index}]"
        if not isinstance(item, dict):
            result.reject(label, "expected a StandardLoggingPayload object")
            continue
        v1 = litellm_v1.is_v1(item)
        if v1:
            item = litellm_v1.current_shape(item)
        names = ("litellm_call_id", "call_id") if v1 else ("litellm_call_id", "call_id", "id")
        call_id = next((str(item[k]) for k in names if item.get(k)), None)
        if call_id is not None:
            result.attempt(call_id, _event, item, call_id, (call_id,), ctx)
        elif v1 and item.get("id"):  # a v1 payload's id is the provider's response id
            identity = litellm_v1.identity(item)
            result.attempt(str(item["id"]), _event, item, None, identity, ctx)
        else:
            result.reject(label, "payload without litellm_call_id, call_id or id")
    return result


def _event(
    item: dict[str, Any], call_id: str | None, identity: tuple[str, ...], ctx: IngestContext
) -> LLMEvent:
    metadata, hidden = as_dict(item.get("metadata")), as_dict(item.get("hidden_params"))
    event_id = stable_id(FORMAT, *identity)
    event = base_event(event_id=event_id, received_at=ctx.received_at, fmt=FORMAT, gateway=FORMAT)
    event["trace_id"], event["span_id"], parent = _trace_ids(item, metadata, event_id)
    if parent:
        event["parent_span_id"] = parent
    parameters = as_dict(item.get("model_parameters"))
    _times(event, item, parameters)
    event["operation"] = _operation(item.get("call_type"))
    api_base = item.get("api_base") or hidden.get("api_base")
    _models(event, item, hidden, api_base)

    attributes: dict[str, Any] = {}
    status_fields = as_dict(item.get("status_fields"))
    failed = "failure" in (item.get("status"), status_fields.get("llm_api_status"))
    response = item.get("response")
    event["usage"] = cast(
        Usage, litellm_outcome.usage_counts(item, response, hidden, metadata, failed)
    )
    event["cost"] = cast(Cost, litellm_outcome.gateway_cost(item, hidden, failed))
    event["status"] = "error" if failed else "ok"
    if failed:
        event["error"] = cast(Error, litellm_outcome.error_details(item, attributes))
    rate_limit = litellm_outcome.rate_limits(as_dict(hidden.get("additional_headers")), attributes)
    if rate_limit:
        event["rate_limit"] = cast(RateLimit, rate_limit)
    _who(event, item, metadata, parameters)
    _content(event, item.get("messages"), response)
    _attributes(attributes, item, call_id, metadata, hidden, parameters, failed)
    flatten_into(attributes, "server.address", url_host(api_base))
    event["attributes"] = attributes
    return event


def _times(event: LLMEvent, item: dict[str, Any], parameters: dict[str, Any]) -> None:
    times = [_time_ns(item.get("startTime")), _time_ns(item.get("endTime"))]
    known = [t for t in times if t is not None]
    if not known:
        raise UnusableItem("startTime and endTime are both missing or unreadable")
    start_ns, end_ns = known[0], known[-1]  # one known time stands for both
    event["start_time"], event["end_time"] = rfc3339_ns(start_ns), rfc3339_ns(end_ns)
    if end_ns >= start_ns:
        event["duration_ms"] = (end_ns - start_ns) / 1_000_000
    stream = as_bool(item.get("stream"))
    stream = as_bool(parameters.get("stream")) if stream is None else stream
    if stream is not None:
        event["stream"] = stream
    first_token_ns = _time_ns(item.get("completionStartTime"))
    if stream and first_token_ns is not None and start_ns <= first_token_ns <= end_ns:
        # completionStartTime equals endTime for a blocking call: it is TTFT only when streaming
        event["ttft_ms"] = (first_token_ns - start_ns) / 1_000_000


def call_operation(call_type: Any) -> str | None:
    """The operation a LiteLLM call type stands for; ``None`` when it is not one."""
    base_call = str(call_type or "").removeprefix("litellm.")
    if base_call not in CALL_TYPES and base_call[1:] in CALL_TYPES:  # acompletion
        base_call = base_call[1:]
    return CALL_TYPES.get(base_call)


def _operation(call_type: Any) -> str:
    if not isinstance(call_type, str):
        return "chat"  # LiteLLM always writes a text here: anything else says nothing
    return call_operation(call_type) or call_type.removeprefix("litellm.") or "chat"


def _models(event: LLMEvent, item: dict[str, Any], hidden: dict[str, Any], api_base: Any) -> None:
    provider = item.get("custom_llm_provider")
    if isinstance(provider, str) and provider:
        event["provider"] = _SEMCONV_PROVIDER.get(provider.lower(), provider.lower())
    upstream = event.get("provider") or url_host(api_base)
    if upstream:
        event["upstream"] = upstream
    model = item.get("model") or item.get("model_group") or hidden.get("litellm_model_name")
    if isinstance(model, str) and model:
        event["request_model"] = model
    response_model = as_dict(item.get("response")).get("model")
    if isinstance(response_model, str) and response_model:
        event["response_model"] = response_model


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


def _who(
    event: LLMEvent, item: dict[str, Any], metadata: dict[str, Any], parameters: dict[str, Any]
) -> None:
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
    # The end user first: the proxy's end_user, or the request's "user" as an SDK caller passed
    # it (LiteLLM keeps it only among the model parameters); else the user who owns the key.
    owner = metadata.get("user_api_key_user_id")
    end_user = item.get("end_user") or metadata.get("user_api_key_end_user_id")
    for user in (end_user, parameters.get("user"), owner):
        if isinstance(user, str) and user:
            event["user_id"] = user
            break
    if session := _session(item, metadata):
        event["session_id"] = session


def _session(item: dict[str, Any], metadata: dict[str, Any]) -> str | None:
    requester = as_dict(metadata.get("requester_metadata"))
    for session in (
        item.get("session_id"),
        requester.get("session_id"),
        metadata.get("session_id"),
    ):
        if isinstance(session, str) and session:
            return session
    # Unless request_correlation_in_logs is on, LiteLLM sends the caller's session id as the
    # trace id (and session_id empty): in that mode its trace id is the session-grouping field.
    # A trace id it generated itself is a uuid4, so a caller's uuid session id is not told apart.
    trace = item.get("trace_id")
    if isinstance(trace, str) and trace and not _UUID.match(trace.lower()):
        return trace
    return None


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
    call_id: str | None,
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
