"""What a sender reported, and the LLMEvent fields that must carry it.

The conformance tests pair three records of one LLM call: the fake LLM's exchange (what was
really asked and answered), the span the sender exported (what it reported) and the relay's
event. A field is expected when the sender reported its value; the value expected is the one
the exchange holds. So a field a sender never reports is not demanded of the relay, and a value
the relay puts in the wrong field (a response model as the request model) fails.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.helpers.fake_llm import Exchange


@dataclass
class Call:
    """One LLM call as the fake, the sender and the relay each recorded it."""

    scenario: str
    exchange: Exchange
    span: dict[str, Any]
    event: dict[str, Any]

    @property
    def reported(self) -> Reported:
        return Reported(self.span)


def leaves(value: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every (key, scalar) inside a value, JSON or Python-literal strings decoded."""
    if depth > 12:
        return
    if isinstance(value, str) and value[:1] in ("{", "["):
        decoded = _decoded(value)
        if decoded is not None:
            yield from leaves(decoded, depth + 1)
            return
    if isinstance(value, dict):
        for key, item in value.items():
            for sub_key, leaf in leaves(item, depth + 1):
                yield (f"{key}.{sub_key}" if sub_key else str(key)), leaf
    elif isinstance(value, list | tuple):
        for item in value:
            yield from leaves(item, depth + 1)
    else:
        yield "", value


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


class Reported:
    """One exported span's attributes and events, searchable by value and by key words."""

    def __init__(self, span: dict[str, Any]) -> None:
        self.span = span
        self.pairs: list[tuple[str, Any]] = []
        for key, value in span["attributes"].items():
            for sub_key, leaf in leaves(value):
                self.pairs.append((f"{key}.{sub_key}" if sub_key else key, leaf))

    def has(self, value: Any, *words: str) -> bool:
        """Whether ``value`` was reported under a key holding one of ``words`` (any key when
        none are given). Numbers compare as numbers, whatever type the sender used."""
        for key, leaf in self.pairs:
            if words and not any(word in key.lower() for word in words):
                continue
            if leaf == value or (isinstance(value, str) and value and str(leaf) == value):
                return True
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    if float(leaf) == float(value):
                        return True
                except (TypeError, ValueError):
                    pass
        return False

    def keys_with(self, *words: str) -> list[str]:
        return [key for key, _ in self.pairs if any(word in key.lower() for word in words)]

    def first_event_ns(self, *names: str) -> int | None:
        times = [e["time_ns"] for e in self.span["events"] if e["name"] in names]
        return min(times) if times else None


def usage_reported(exchange: Exchange, reported: Reported) -> dict[str, int]:
    """The usage fields the sender reported, with the exchange's counts."""
    usage = exchange.response.get("usage") or {}
    if exchange.status >= 400 or not usage:
        return {}
    candidates = {
        "input_tokens": (usage.get("prompt_tokens"), ("prompt", "input")),
        "output_tokens": (usage.get("completion_tokens"), ("completion", "output")),
        "total_tokens": (usage.get("total_tokens"), ("total",)),
        "cache_read_input_tokens": (
            (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            ("cache",),
        ),
        "reasoning_output_tokens": (
            (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"),
            ("reasoning",),
        ),
    }
    return {
        field: count
        for field, (count, words) in candidates.items()
        if count is not None
        and any(reported.has(count, word) for word in words)
        and reported.keys_with("token")
    }
