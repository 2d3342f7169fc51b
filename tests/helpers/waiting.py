"""Waiting on a condition instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sized
from typing import TypeVar

T = TypeVar("T")
S = TypeVar("S", bound=Sized)


async def eventually(
    check: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll ``check`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message} (last: {last!r})"
            )
        await asyncio.sleep(interval)


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """The synchronous ``eventually``, for tests that drive a relay subprocess."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        result = check()
        if result:
            return result
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message or 'condition'} (last: {last!r})"
            )
        time.sleep(interval)


def at_least(count: int, get: Callable[[], S]) -> Callable[[], S | None]:
    """A check for ``eventually``: what ``get`` returns, once it has ``count`` items."""

    def check() -> S | None:
        found = get()
        return found if len(found) >= count else None

    return check
