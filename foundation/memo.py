"""A cache for pure functions of text that senders choose (names, parameters, URLs).

Such text mostly repeats from event to event, so remembering the answer pays; but a sender can
also make it as long as the body limit allows, and an ordinary cache of it would pin that much
memory per entry. ``remember_short`` caches only short strings and calls the function as it is
for anything else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

_Result = TypeVar("_Result")


def remember_short(
    maxsize: int, max_chars: int = 64
) -> Callable[[Callable[[Any], _Result]], Callable[[Any], _Result]]:
    """``functools.lru_cache(maxsize)`` for strings of at most ``max_chars`` characters."""

    def decorate(function: Callable[[Any], _Result]) -> Callable[[Any], _Result]:
        cached = functools.lru_cache(maxsize=maxsize)(function)

        @functools.wraps(function)
        def call(value: Any) -> _Result:
            if type(value) is str and len(value) <= max_chars:
                return cached(value)
            return function(value)

        return call

    return decorate
