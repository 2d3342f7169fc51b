"""One sink's selection on a batch: sampling keys and rates, what is always kept, and content
shaped on a copy with its own JSON while the shared event stays as stored."""

from __future__ import annotations

import copy
import os
from typing import Any

import orjson
import pytest

from schemas import LLMEvent
from sinks.event_filter import EventFilter
from sinks.selection import Selection, sample_key
from tests.helpers.payloads import stored_event


def event(index: int = 1, **fields: Any) -> LLMEvent:
    return {**stored_event(index), **fields}  # type: ignore[typeddict-item]


def select(selection: Selection, events: list[LLMEvent]) -> list[LLMEvent]:
    return selection.select(events, [orjson.dumps(e) for e in events]).events


def test_the_sampling_key_is_the_session_then_the_trace_then_the_call() -> None:
    trace = os.urandom(16).hex()
    assert sample_key(event(session_id="s", trace_id=trace)) == "session:s"
    assert sample_key(event(trace_id=trace)) == "trace:" + trace
    # An all-zero trace id is no trace (the W3C invalid id): each call stands alone.
    assert sample_key(event(7)) == "event:e000007"


def test_sampling_keeps_the_rate_and_lower_rates_keep_subsets() -> None:
    events = [event(i, trace_id=os.urandom(16).hex()) for i in range(20_000)]
    kept = {
        rate: {e["trace_id"] for e in select(Selection(sample_rate=rate), events)}
        for rate in (0.1, 0.5)
    }
    assert abs(len(kept[0.1]) / 20_000 - 0.1) < 0.01
    assert abs(len(kept[0.5]) / 20_000 - 0.5) < 0.015
    assert kept[0.1] < kept[0.5]
    assert select(Selection(sample_rate=0.0), events) == []


def test_errors_and_expensive_calls_are_kept_whatever_their_hash() -> None:
    costly = {"total": 0.5, "currency": "USD", "source": "gateway"}
    cheap = {"total": 0.001, "currency": "USD", "source": "gateway"}
    events = [event(1, status="error"), event(2, cost=costly), event(3, cost=cheap)]
    none = Selection(sample_rate=0.0, keep_cost_above=0.1)
    assert [e["event_id"] for e in select(none, events)] == ["e000001", "e000002"]
    strict = Selection(sample_rate=0.0, keep_errors=False)
    assert select(strict, events) == []


def test_what_is_left_out_is_counted_by_reason() -> None:
    events = [event(i, status="error" if i % 2 else "ok") for i in range(10)]
    selection = Selection(
        filter=EventFilter.compile('event.status == "ok"'), sample_rate=0.0, keep_errors=False
    )
    selected = selection.select(events, [orjson.dumps(e) for e in events])
    assert (selected.filtered, selected.sampled_out, selected.events) == (5, 5, [])


MESSAGES = [{"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}]


def test_a_stricter_policy_shapes_a_copy_with_its_own_json() -> None:
    stored = event(input_messages=MESSAGES, attributes={"gen_ai.prompt": "What is 2+2?"})
    before = copy.deepcopy(stored)
    body = orjson.dumps(stored)
    selected = Selection(sink="datadog", content="redact").select([stored], [body])
    (sent,) = selected.events
    assert "input_messages" not in sent and "gen_ai.prompt" not in sent["attributes"]
    assert sent["attributes"]["relay.content_policy"] == "redact"
    assert selected.encoded == [orjson.dumps(sent)]
    assert stored == before  # the other sinks' event


@pytest.mark.parametrize("policy", ["full", "hash"])
def test_content_already_stricter_is_sent_as_stored(policy: str) -> None:
    stored = event(attributes={"relay.content_policy": "redact"})
    body = orjson.dumps(stored)
    selected = Selection(content=policy).select([stored], [body])  # type: ignore[arg-type]
    assert selected.events[0] is stored and selected.encoded == [body]


def test_a_size_limit_leaves_short_events_as_stored() -> None:
    stored = event(input_messages=MESSAGES)
    body = orjson.dumps(stored)
    selected = Selection(sink="otlp", content_max_bytes=64).select([stored], [body])
    assert selected.events[0] is stored and selected.encoded == [body]
