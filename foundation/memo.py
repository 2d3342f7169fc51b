"""The one bounded memo: answers of pure functions whose inputs repeat from event to event.

Senders repeat most of what they send (attribute names, providers, models, the second an event
ended), so remembering an answer can pay; but a sender can also make every value unique, or as long
as the body limit allows, and a memory of those would grow without end. ``Memo`` holds at most
``limit`` entries and is emptied whole when full (cheaper than tracking recency, and the repeating
keys are back after a few events); callers keep values they know to be unique or long out of it.

Each memo in the code base earns its place with a figure from ``make bench`` (see BENCHMARKS.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")
_Result = TypeVar("_Result")


class Memo(Generic[_Key, _Value]):
    """A dictionary of at most ``limit`` answers, emptied when full.

    ``get`` is the dictionary's own method (no Python call in between, for hot loops); ``put``
    stores an answer and returns it.
    """

    __slots__ = ("_known", "get", "limit")

    def __init__(self, limit: int) -> None:
        self._known: dict[_Key, _Value] = {}
        self.get: Callable[[_Key], _Value | None] = self._known.get
        self.limit = limit

    def put(self, key: _Key, value: _Value) -> _Value:
        known = self._known
        if len(known) >= self.limit:
            known.clear()
        known[key] = value
        return value

    def clear(self) -> None:
        self._known.clear()

    def __len__(self) -> int:
        return len(self._known)


def remember(limit: int) -> Callable[[Callable[[Any], _Result]], Callable[[Any], _Result]]:
    """Remember a one-argument function's answers in a ``Memo`` (for small keys: numbers, short
    fixed-shape text). Answers are shared: callers must not change them."""

    def decorate(function: Callable[[Any], _Result]) -> Callable[[Any], _Result]:
        memo: Memo[Any, _Result] = Memo(limit)
        lookup, put = memo.get, memo.put

        @functools.wraps(function)
        def call(key: Any) -> _Result:
            answer = lookup(key)
            return put(key, function(key)) if answer is None else answer

        return call

    return decorate


def remember_short(
    maxsize: int, max_chars: int = 64
) -> Callable[[Callable[[Any], _Result]], Callable[[Any], _Result]]:
    """Remember a function of text for strings of at most ``max_chars`` characters only; anything
    else (longer text, other types) is passed to the function every time."""

    def decorate(function: Callable[[Any], _Result]) -> Callable[[Any], _Result]:
        memo: Memo[str, _Result] = Memo(maxsize)
        lookup, put = memo.get, memo.put

        @functools.wraps(function)
        def call(value: Any) -> _Result:
            if type(value) is str and len(value) <= max_chars:
                answer = lookup(value)
                return put(value, function(value)) if answer is None else answer
            return function(value)

        return call

    return decorate
