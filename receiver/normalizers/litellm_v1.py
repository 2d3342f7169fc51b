"""LiteLLM's legacy ``generic_api`` payload (``litellm.generic_api_use_v1 = True``), read back.

The v1 payload is a flat dict whose every value went through ``str()``: dicts and lists arrive as
Python reprs (``{'role': 'user'}``), LiteLLM's response objects as constructor reprs
(``ModelResponse(id='...', choices=[Choices(message=Message(content='Hi', ...))], ...)``), and a
missing value as the string ``"None"``. ``current_shape`` turns it into the current
``StandardLoggingPayload`` shape, so one mapping serves both generations.

Reprs are read with ``ast.parse`` and a walk that only ever builds data (nothing is evaluated):
literals stay literals, an object's constructor repr becomes a dict of its keyword fields, and
anything else (a bare name, an arithmetic expression, ``datetime.datetime(2025, 1, 24)``) is None.
A repr longer than ``MAX_REPR_CHARS`` stays the text it is: ``ast.parse`` holds the GIL for the
whole parse, about 0.6 ms per KiB, and the event loop that answers every sender waits meanwhile.

What v1 carries beyond its own fields sits in ``metadata['hidden_params']`` (LiteLLM's call id,
provider, API base, the provider's answer headers and response model): it is lifted to where the
current payload keeps it. A v1 payload names the call only by the provider's response id, which
distinct calls can share (a cached answer, a provider that reuses ids); where LiteLLM's own call id
is missing the start time is part of the event's identity.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Final

from foundation.secrets import redact_text
from receiver.normalizers.common import as_dict

MAX_REPR_CHARS: Final = 128 * 1024
_NONE_STRINGS: Final = ("None", "")
_CONTAINERS: Final = (ast.Dict, ast.List, ast.Tuple, ast.Set, ast.Call)


def is_v1(item: dict[str, Any]) -> bool:
    return "modelParameters" in item or ("cost" in item and "response_cost" not in item)


def current_shape(item: dict[str, Any]) -> dict[str, Any]:
    """The v1 payload as the current one: the fields the LiteLLM normalizer reads."""
    metadata = as_dict(read_repr(item.get("metadata")))
    hidden = as_dict(metadata.pop("hidden_params", None))
    usage = as_dict(read_repr(item.get("usage")))
    response = read_repr(item.get("response"))
    if isinstance(response, dict):
        response.setdefault("usage", usage)
        if _present(hidden.get("provider_response_model")):
            # a streamed answer's repr names the requested model; this is what the provider said
            response["model"] = hidden["provider_response_model"]
    return {
        "_payload_version": "v1",
        "litellm_call_id": _scalar(hidden.get("litellm_call_id")),
        "id": _scalar(item.get("id")),
        "call_type": _scalar(item.get("call_type")),
        "cache_hit": _scalar(item.get("cache_hit")),
        "startTime": _scalar(item.get("startTime")),
        "endTime": _scalar(item.get("endTime")),
        "model": _scalar(item.get("model")),
        "end_user": _scalar(item.get("user")),
        "custom_llm_provider": _scalar(hidden.get("custom_llm_provider")),
        "model_parameters": read_repr(item.get("modelParameters")),
        "messages": read_repr(item.get("messages")),
        "response": response,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "metadata": metadata,
        "hidden_params": hidden,
        "response_cost": _scalar(item.get("cost")),
        # v1 is only ever built from a successful response (it reads response_obj["usage"]).
        "status": "success",
    }


def identity(item: dict[str, Any]) -> tuple[str, ...]:
    """What tells this v1 call from another when LiteLLM's call id is missing (see the module)."""
    return ("v1", str(item.get("id")), str(item.get("startTime")))


def read_repr(value: Any) -> Any:
    """A Python repr back into data (see the module docstring); other values unchanged."""
    if not isinstance(value, str):
        return value
    if len(value) > MAX_REPR_CHARS:
        # Kept as the text it is, credentials masked as in any text that quotes a structure.
        return redact_text(value)
    if value in _NONE_STRINGS:
        return None
    try:
        tree = ast.parse(value.strip(), mode="eval").body
        # Only a container or an object is a repr; ``hello`` or ``42`` is a text that was sent.
        return _data(tree) if isinstance(tree, _CONTAINERS) else value
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return value  # not a repr: a plain string, as sent


def _data(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.Dict):
        return {
            str(_data(key)): _data(value)
            for key, value in zip(node.keys, node.values, strict=True)
            if key is not None  # a ``**spread``: not data
        }
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_data(element) for element in node.elts]
    if isinstance(node, ast.Call) and node.keywords:  # Usage(prompt_tokens=10, ...)
        return {kw.arg: _data(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        number = _data(node.operand)
        is_number = isinstance(number, int | float) and not isinstance(number, bool)
        return -number if is_number else None
    return None


def _constant(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return None  # bytes, complex, Ellipsis: nothing JSON holds


def _present(value: Any) -> bool:
    return isinstance(value, str) and value not in _NONE_STRINGS


def _scalar(value: Any) -> Any:
    """A top-level v1 value: its ``str(None)`` is no value at all."""
    return None if isinstance(value, str) and value == "None" else value
