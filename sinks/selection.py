"""What of the spooled events one sink gets, and in what form: its filter, its sampling, its content
policy and its content-size limit, applied by the sink's dispatcher to each batch before sending.

The Collector puts processors in a pipeline per exporter; here each sink reads the one spool and
selects for itself, so that switching a sink's selection (and restarting) applies to its backlog
too, and an event left out of one sink is still delivered to the others. Every event is in the LLM
metrics whatever the sinks select: metrics are counted at ingest.

In order, for each event:

1. **filter** (``RELAY_<SINK>_FILTER``, ``sinks.event_filter``): an event it rejects is left out
   (``filtered``), and so is one it fails on (``filter_failed``: the expression needs fixing);
2. **sampling** (``RELAY_<SINK>_SAMPLE_RATE``): an event is kept when a hash of its key is below
   the rate. The key is the event's ``session_id`` when it has one, else its ``trace_id``, else its
   ``event_id``: every call of a session, or every span of a trace, is kept or left out together
   (a trace only some of whose calls name a session can be split),
   on every worker and after every restart, and a sink sampled at 10 % gets a subset of one
   sampled at 50 %. The hash is BLAKE2b's first 64 bits rather than the trace id's own bits,
   since not every sender's trace ids are random (the OpenTelemetry samplers assume they are).
   Errors (``RELAY_<SINK>_SAMPLE_KEEP_ERRORS``, on by default) and calls that cost more than
   ``RELAY_<SINK>_SAMPLE_KEEP_COST_ABOVE`` USD are kept whatever their hash, on their own;
3. **content policy** (``RELAY_<SINK>_CONTENT``, ``schemas.content``), when stricter than the one
   the event was stored under;
4. **content-size limit** (``RELAY_<SINK>_CONTENT_MAX_BYTES``): each text longer is cut, marked.

An event changed by 3 or 4 is a copy with its own JSON; the spooled one is shared with the other
sinks and is never changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson

from schemas import LLMEvent
from schemas.content import (
    MESSAGE_SIDES,
    ContentPolicy,
    apply_policy,
    is_stricter,
    stored_policy,
    truncate_content,
)
from sinks.event_filter import EventFilter, FilterError

_HASH_SPACE: Final = 1 << 64
_NO_TRACE: Final = "0" * 32


@dataclass(frozen=True, slots=True)
class Selection:
    """One sink's selection; the default selects every event as stored."""

    sink: str = ""
    filter: EventFilter | None = None
    sample_rate: float = 1.0
    keep_errors: bool = True
    keep_cost_above: float | None = None
    # None: the event as stored (the relay resolves it to RELAY_CONTENT at start).
    content: ContentPolicy | None = None
    content_max_bytes: int | None = None
    _threshold: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_threshold", int(self.sample_rate * _HASH_SPACE))

    @property
    def selects_all(self) -> bool:
        """Whether every event goes out as stored, whatever the policy it was stored under."""
        return (
            self.filter is None
            and self.sample_rate >= 1.0
            and self.content is None
            and (self.content_max_bytes is None)
        )

    def select(self, events: Sequence[LLMEvent], encoded: Sequence[bytes]) -> Selected:
        """The events this sink gets, each with its JSON, and what was left out, and why.

        An event the selection itself fails on (a spooled event of the wrong shape: a replayed
        line is only checked for being a JSON object) is set aside in ``failed``, for the
        dispatcher to dead-letter, rather than stall the sink on it.
        """
        selected = Selected()
        for event, body in zip(events, encoded, strict=True):
            try:
                self._select_one(event, body, selected)
            except Exception as error:  # this event's, whatever it is: the others go on
                selected.failed.append((event, body, f"{type(error).__name__}: {error}"))
        return selected

    def _select_one(self, event: LLMEvent, body: bytes, selected: Selected) -> None:
        if self.filter is not None:
            try:
                if not self.filter.matches(event):
                    selected.filtered += 1
                    return
            except FilterError as error:
                selected.filter_failed += 1
                selected.filter_error = str(error)
                return
        if self.sample_rate < 1.0 and not self._sampled(event):
            selected.sampled_out += 1
            return
        shaped = self._shape(event)
        selected.events.append(shaped)
        selected.encoded.append(body if shaped is event else orjson.dumps(shaped))

    def _sampled(self, event: LLMEvent) -> bool:
        if self.keep_errors and event.get("status") == "error":
            return True
        if self.keep_cost_above is not None:
            total = (event.get("cost") or {}).get("total")
            if isinstance(total, int | float) and total > self.keep_cost_above:
                return True
        return sample_hash(sample_key(event)) < self._threshold

    def _shape(self, event: LLMEvent) -> LLMEvent:
        """The event as this sink sends it: itself, or a changed copy."""
        policy, limit = self.content, self.content_max_bytes
        stricter = policy is not None and is_stricter(policy, stored_policy(event))
        if not stricter and (limit is None or not _has_content(event)):
            return event
        copy: LLMEvent = {**event}
        if "attributes" in event:
            copy["attributes"] = dict(event["attributes"])
        if stricter:
            assert policy is not None
            apply_policy(copy, policy)
        if limit is not None:
            setting = f"RELAY_{self.sink.upper()}_CONTENT_MAX_BYTES"
            if not truncate_content(copy, limit, setting) and not stricter:
                return event  # nothing was long enough: the stored JSON stands
        return copy


@dataclass(slots=True)
class Selected:
    events: list[LLMEvent] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    filtered: int = 0
    sampled_out: int = 0
    filter_failed: int = 0  # the filter failed on them: left out too
    filter_error: str = ""  # the last such failure
    # (event, its JSON, why) for each event the selection could not handle
    failed: list[tuple[LLMEvent, bytes, str]] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return bool(self.filtered or self.sampled_out or self.filter_failed)


def sample_key(event: LLMEvent) -> str:
    """What keeps calls together under sampling: the session, else the trace, else the call."""
    session = event.get("session_id")
    if session:
        return f"session:{session}"
    trace = event.get("trace_id")
    if trace and trace != _NO_TRACE:
        return f"trace:{trace}"
    return f"event:{event.get('event_id', '')}"


def sample_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _has_content(event: LLMEvent) -> bool:
    return any(side in event for side in MESSAGE_SIDES) or bool(event.get("attributes"))
