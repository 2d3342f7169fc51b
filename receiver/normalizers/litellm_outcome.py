"""What a LiteLLM call consumed and how it ended: usage, cost, error and rate limits.

LiteLLM reports a failed call with 0 tokens and a ``response_cost`` of 0 (it prices only answers);
those are placeholders for "not reported", so a failure without counts has no usage and an
unknown cost. An error's ``error_code`` is the HTTP status unless the provider's exception had a
code of its own (OpenAI's ``model_not_found``): LiteLLM's ``normalized_error`` (``400_...``) then
still names the status.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from foundation.secrets import redact_text
from receiver.normalizers.common import as_dict, as_float, as_int, finish_usage, flatten_into

_CACHED: Final = ("prompt_tokens_details", "cached_tokens")
_CACHE_CREATION: Final = ("prompt_tokens_details", "cache_creation_tokens")
_DETAILS: Final = (
    ("cache_read_input_tokens", (_CACHED, ("cache_read_input_tokens",))),
    ("cache_write_input_tokens", (("cache_creation_input_tokens",), _CACHE_CREATION)),
    ("reasoning_output_tokens", (("completion_tokens_details", "reasoning_tokens"),)),
)
# LiteLLM's normalized_error: the HTTP status its error class stands for, then a cluster name
_NORMALIZED_STATUS: Final = re.compile(r"^([1-5]\d\d)_")


def usage_counts(
    item: dict[str, Any],
    response: Any,
    hidden: dict[str, Any],
    metadata: dict[str, Any],
    failed: bool,
) -> dict[str, int]:
    objects = [as_dict(as_dict(response).get("usage")), as_dict(hidden.get("usage_object"))]
    objects += [as_dict(metadata.get("usage_object"))]

    def first(*paths: tuple[str, ...]) -> int | None:
        return _first_count(objects, paths)

    counts: dict[str, int] = {}
    for target, name in (
        ("input_tokens", "prompt_tokens"),
        ("output_tokens", "completion_tokens"),
        ("total_tokens", "total_tokens"),
    ):
        value = as_int(item.get(name))
        value = first((name,)) if value is None or value < 0 else value
        if value is not None:
            counts[target] = value
    counts.update(detail_counts(*objects))
    if failed and not any(counts.values()):
        return {}  # LiteLLM's zeros for a call that got no answer: nothing was counted
    return finish_usage(counts)


def detail_counts(*usage_objects: dict[str, Any]) -> dict[str, int]:
    """Cached, cache-write and reasoning counts from LiteLLM usage objects, first found wins
    (also read by the OTLP normalizer: LiteLLM's ``otel`` callback sends its usage object)."""
    counts = {}
    for target, paths in _DETAILS:
        if (value := _first_count(usage_objects, paths)) is not None:
            counts[target] = value
    return counts


def _first_count(objects: Sequence[dict[str, Any]], paths: Sequence[tuple[str, ...]]) -> int | None:
    for source in objects:
        for path in paths:
            value: Any = source
            for key in path:
                value = as_dict(value).get(key)
            if (number := as_int(value)) is not None and number >= 0:
                return number
    return None


def gateway_cost(item: dict[str, Any], hidden: dict[str, Any], failed: bool) -> dict[str, Any]:
    breakdown = as_dict(item.get("cost_breakdown"))
    total = as_float(item.get("response_cost"))
    total = as_float(hidden.get("response_cost")) if total is None else total
    total = as_float(breakdown.get("total_cost")) if total is None else total
    # With failure debug info LiteLLM could not price the call, and it does not price a failed
    # call at all: either way its 0 is a placeholder, not a figure.
    unpriced = item.get("response_cost_failure_debug_info") or (failed and total == 0)
    if total is None or unpriced:
        return {"currency": "USD", "source": "unknown"}
    figures: dict[str, Any] = {"total": total, "currency": "USD", "source": "gateway"}
    for target in ("input", "output"):
        if (value := as_float(breakdown.get(f"{target}_cost"))) is not None:
            figures[target] = value
    return figures


def error_details(item: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    info = as_dict(item.get("error_information"))
    error_str = item.get("error_str") if isinstance(item.get("error_str"), str) else ""
    # "litellm.RateLimitError: AnthropicException - ..." names the class when error_class is empty
    prefix = re.match(r"(?:litellm\.)?(\w+(?:Error|Exception))\b", error_str or "")
    details: dict[str, Any] = {
        "type": str(info.get("error_class") or (prefix[1] if prefix else "") or "error")
    }
    message = info.get("error_message") or error_str
    if message:
        details["message"] = redact_text(str(message))[:2000]
    # error_code is the HTTP status, unless the provider's exception had a code of its own
    # ("model_not_found"); LiteLLM's normalized_error then still starts with the status.
    status = as_int(info.get("error_code"))
    normalized = _NORMALIZED_STATUS.match(str(info.get("normalized_error") or ""))
    if status is None or not 100 <= status <= 599:
        flatten_into(attributes, "litellm.error.code", info.get("error_code") or None)
        status = int(normalized[1]) if normalized else None
    if status is not None:
        details["http_status"] = status
    for name, value in info.items():  # the traceback is dropped: long, and it may quote secrets
        if name not in ("error_class", "error_message", "error_code", "traceback") and value:
            flatten_into(attributes, f"litellm.error.{name.removeprefix('error_')}", value)
    return details


def rate_limits(headers: dict[str, Any], attributes: dict[str, Any]) -> dict[str, int]:
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
