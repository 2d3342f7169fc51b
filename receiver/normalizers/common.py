"""Small conversions every normalizer shares: times, ids, lenient numbers, messages, key hashes."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson

from foundation.secrets import is_secret_key, is_secret_value
from schemas import SCHEMA_ID, LLMEvent, Message


def stable_id(*parts: str) -> str:
    """A deterministic id from the source's own identifiers, so a re-sent event keeps its id."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def derived_trace_ids(event_id: str) -> tuple[str, str]:
    """Trace and span ids for sources that have none (webhooks), derived from the event id."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()
    return digest[:32], digest[32:48]


def key_hash(secret: str) -> str:
    """How an API key is represented: a SHA-256-based fingerprint, never the key itself."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else (senders send null and odd types)."""
    return value if isinstance(value, dict) else {}


INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def as_int(value: Any) -> int | None:
    """An integer from an int, a float or a numeric string (senders send all three); None for
    what no 64-bit field holds (NaN, infinity, 30 digits), which no count or status is."""
    if type(value) is int:  # typed OTLP values mostly are: one test
        return value if INT64_MIN <= value <= INT64_MAX else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            try:
                real = float(value)
            except ValueError:
                return None
            if not math.isfinite(real):
                return None
            number = int(real)
    else:
        return None
    return number if INT64_MIN <= number <= INT64_MAX else None


def as_float(value: Any) -> float | None:
    if type(value) is float:  # typed OTLP values mostly are: one test
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    if isinstance(value, int):
        return bool(value)
    return None


def as_str_list(value: Any) -> list[str] | None:
    """A list of strings from a list, a JSON-encoded list (OpenRouter) or a single string."""
    if value is None:
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                decoded = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                return [value]
            if isinstance(decoded, list):
                return [str(item) for item in decoded if item is not None]
        return [value] if stripped else None
    if isinstance(value, list | tuple):
        return [str(item) for item in value if item is not None]
    return [str(value)]


def maybe_json(value: Any) -> Any:
    """Decode a value that senders often ship as a JSON string; leave anything else alone."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _parts_from_content(content: Any) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        parts: list[Any] = []
        for item in content:
            if isinstance(item, str):
                parts.append({"type": "text", "content": item})
            elif isinstance(item, dict):
                kind = item.get("type", "text")
                if kind == "text" or "text" in item:
                    parts.append({"type": "text", "content": item.get("text", item.get("content"))})
                else:
                    parts.append({"type": str(kind), "content": item})
        return parts
    return [{"type": "text", "content": content}]


def chat_messages(messages: Iterable[Any], default_role: str = "user") -> list[Message]:
    """OpenAI-style ``[{role, content, tool_calls?}]`` as GenAI semconv ``[{role, parts}]``.

    Messages already in the GenAI shape (with ``parts``) pass through, held to that shape.
    ``default_role`` is the role of a message that names none (``assistant`` for outputs).
    """
    result: list[Message] = []
    for message in messages:
        if not isinstance(message, dict):
            result.append({"role": default_role, "parts": _parts_from_content(message)})
            continue
        if isinstance(message.get("parts"), list):
            result.append(_genai_message(message, default_role))
            continue
        if message.get("role") == "tool" and message.get("tool_call_id"):
            # A tool's result, answering the call with this id (semconv's own part type).
            response = {
                "type": "tool_call_response",
                "id": str(message["tool_call_id"]),
                "response": message.get("content"),
            }
            result.append({"role": "tool", "parts": [response]})
            continue
        parts = _parts_from_content(message.get("content"))
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                function = as_dict(call.get("function"))
                parts.append(
                    {
                        "type": "tool_call",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": maybe_json(function.get("arguments")),
                    }
                )
        converted: Message = {"role": str(message.get("role") or default_role), "parts": parts}
        if message.get("name"):
            converted["name"] = str(message["name"])
        result.append(converted)
    return result


def _genai_message(message: dict[str, Any], default_role: str) -> Message:
    """A message a sender gave in the GenAI shape, held to that shape: a text role, parts that
    are objects with a text ``type`` (a bare value becomes a part of its own), text names."""
    parts: list[Any] = []
    for part in message["parts"]:
        if isinstance(part, dict):
            kind = part.get("type")
            parts.append(part if isinstance(kind, str) else {**part, "type": str(kind or "other")})
        elif isinstance(part, str):
            parts.append({"type": "text", "content": part})
        elif part is not None:
            parts.append({"type": "other", "content": part})
    role = str(message.get("role") or default_role)
    shaped: dict[str, Any] = {**message, "role": role, "parts": parts}
    for key in ("name", "finish_reason"):
        if key in shaped and not isinstance(shaped[key], str):
            if shaped[key] is None:
                del shaped[key]
            else:
                shaped[key] = str(shaped[key])
    return shaped  # type: ignore[return-value]


def completion_messages(response: Any) -> tuple[list[Message], list[str]]:
    """An OpenAI-style response body (``choices``) as output messages and finish reasons."""
    messages: list[Message] = []
    reasons: list[str] = []
    if not isinstance(response, dict):
        return messages, reasons
    for choice in response.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or choice.get("delta")
        if isinstance(message, dict):
            messages.extend(chat_messages([{"role": "assistant", **message}]))
        elif "text" in choice:
            messages.append(
                {"role": "assistant", "parts": [{"type": "text", "content": choice["text"]}]}
            )
        if choice.get("finish_reason"):
            reasons.append(str(choice["finish_reason"]))
    return messages, reasons


def base_event(
    *, event_id: str, received_at: str, fmt: str, gateway: str, test: bool = False
) -> LLMEvent:
    """The identity fields every event starts with, in the order they are written."""
    return {
        "schema": SCHEMA_ID,
        "event_id": event_id,
        "received_at": received_at,
        "source": {"format": fmt, "gateway": gateway, "test": test},  # type: ignore[typeddict-item]
    }


def finish_usage(usage: dict[str, int]) -> dict[str, int]:
    """Fill ``total_tokens`` from input + output when the source gave both but no total."""
    if "total_tokens" not in usage and "input_tokens" in usage and "output_tokens" in usage:
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return usage


# -- webhook payloads (Otoroshi, LiteLLM): nested objects into flat, secret-free attributes --

_MAX_FLAT_DEPTH = 6
_MAX_FLAT_LIST = 32


def flatten_into(out: dict[str, Any], prefix: str, value: Any, depth: int = 0) -> None:
    """Nested JSON as dotted attribute keys (``otoroshi.impacts.energy.unit``), secrets removed.

    Every key and value goes through ``foundation.secrets``' predicates: a credential-named key is
    dropped with its whole subtree (a ``connection`` object keeps ``base_url``, loses ``token``)
    and a credential-shaped value is dropped wherever it sits. Lists of scalars stay lists, lists
    of objects are indexed (``budgets.0.budget_id``); beyond ``_MAX_FLAT_DEPTH`` levels or
    ``_MAX_FLAT_LIST`` list items nothing is kept, as an attribute map is no place for documents.
    """
    if value is None or depth > _MAX_FLAT_DEPTH or is_secret_key(prefix):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            flatten_into(out, f"{prefix}.{key}", item, depth + 1)
    elif isinstance(value, list):
        if all(isinstance(item, str | int | float | bool) for item in value):
            if value and not any(is_secret_value(item) for item in value):
                out[prefix] = value
            return
        for index, item in enumerate(value[:_MAX_FLAT_LIST]):
            flatten_into(out, f"{prefix}.{index}", item, depth + 1)
    elif not (isinstance(value, str) and is_secret_value(value)):
        out[prefix] = value


def url_host(url: Any) -> str | None:
    """The host of a base URL (``api.openai.com``), never its user-info or query."""
    if not isinstance(url, str) or not url:
        return None
    try:
        host = urlsplit(url if "//" in url else "//" + url).hostname
    except ValueError:
        return None
    return host or None
