"""What the receivers need of the service that stores their events: one small protocol.

The receivers authenticate, read, normalize and answer; storing is the service's (the spool and
its sinks live above this package). ``create_app`` in ``service.app`` puts the running relay in
the application under ``INTAKE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from aiohttp import web

from schemas import LLMEvent
from schemas.content import ContentPolicy
from telemetry.metrics import Metrics


class IntakeFullError(Exception):
    """The events cannot be stored now (the spool is full); the message says why."""


class Intake(Protocol):
    """Where accepted events go, and the settings the receivers apply on the way."""

    @property
    def ingest_tokens(self) -> Mapping[str, str | None]:
        """Bearer token -> tenant (None when the token carries none); empty: no authentication."""

    @property
    def max_body_bytes(self) -> int:
        """The largest body taken, compressed or not."""

    @property
    def body_timeout(self) -> float:
        """Seconds the whole body may take to arrive after the request head."""

    @property
    def content(self) -> ContentPolicy:
        """What the spool keeps of prompts and completions: the least strict policy any sink
        sends with (each sink's dispatcher applies its own)."""

    @property
    def cost_table(self) -> bool:
        """Whether events without a reported cost are priced from a table (``receiver.pricing``)."""

    @property
    def metrics(self) -> Metrics: ...

    def refusal(self) -> str | None:
        """Why no event can be stored now (shutting down, spool full or failing); None: they can."""

    async def store(self, encoded: Sequence[bytes], events: Sequence[LLMEvent]) -> None:
        """Store durably before the sender is answered; raise ``IntakeFullError`` when it cannot."""


INTAKE: Final = web.AppKey[Intake]("intake")
