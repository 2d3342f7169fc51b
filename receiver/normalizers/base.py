"""The contract of an input format: bytes in, LLMEvents out, nothing dropped without a count.

A normalizer is one function, ``(body, context) -> Normalized``. It raises ``InputError`` when the
body as a whole cannot be read (the sender gets a 400 with the message); an item it cannot use is
listed in ``rejected`` with the reason, and an item that is valid but not an LLM call (a non-LLM
span, an Otoroshi ``GatewayEvent``) is counted in ``skipped``. Nothing else in the batch is lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import LLMEvent


class InputError(ValueError):
    """The request body cannot be read at all; the message is shown to the sender."""


class UnusableItem(ValueError):
    """One item cannot become an LLMEvent; the message says why, without quoting values."""


@dataclass(frozen=True, slots=True)
class Rejection:
    item: str
    reason: str


@dataclass(frozen=True, slots=True)
class IngestContext:
    received_ns: int
    received_at: str
    content_type: str = "application/json"


@dataclass(slots=True)
class Normalized:
    events: list[LLMEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def reject(self, item: str, reason: str) -> None:
        self.rejected.append(Rejection(item, reason))

    def attempt(self, item: str, build: Callable[..., LLMEvent], *args: Any) -> None:
        """Keep the event ``build(*args)`` makes, or reject only this item, with the reason."""
        try:
            self.events.append(build(*args))
        except UnusableItem as problem:
            self.reject(item, str(problem))
        except Exception as error:  # one odd item must not cost the rest of the batch
            self.reject(item, f"internal error while normalizing ({type(error).__name__})")


Normalizer = Callable[[bytes, IngestContext], Normalized]
