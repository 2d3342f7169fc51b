"""``python -m bench.memos`` keeps measuring what it says: each memo it switches off exists (a
renamed memo fails here rather than being measured as worthless), and switching it off changes no
event, only the time taken."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bench import memos
from bench.payloads import SCENARIOS, build
from foundation.memo import Memo
from foundation.times import now
from receiver.normalizers import otlp_attributes, otoroshi
from receiver.normalizers.base import IngestContext
from telemetry.metrics import Metrics


def events_of(scenario: str, bodies: list[bytes]) -> list[bytes]:
    content_type = SCENARIOS[scenario].content_type
    out = []
    for body in bodies:
        ns, at = now()
        context = IngestContext(ns, at, content_type)
        for event in memos.NORMALIZERS[scenario](body, context).events:
            event.pop("received_at")
            out.append(orjson.dumps(event, option=orjson.OPT_SORT_KEYS))
    return out


@pytest.mark.parametrize("name", sorted(memos.MEMOS))
def test_each_memo_switches_off_and_back_without_changing_events(name: str) -> None:
    switch_off, scenarios = memos.MEMOS[name]
    for scenario in scenarios:
        bodies = build(scenario, 2)
        expected = events_of(scenario, bodies)
        with switch_off():
            assert events_of(scenario, bodies) == expected
            assert memos.pipeline(scenario, bodies, Metrics()) == len(expected)
        assert events_of(scenario, bodies) == expected


@pytest.mark.parametrize(
    ("name", "scenario", "memo"),
    [
        ("otlp: attribute names per span", "otlp-json", lambda: otlp_attributes._NAMES_SEEN),
        ("otoroshi: enrichment key layouts", "otoroshi", lambda: otoroshi._ENRICHMENT_BY_LAYOUT),
    ],
)
def test_a_memo_switched_off_is_not_consulted(
    name: str, scenario: str, memo: Callable[[], Memo[Any, Any]]
) -> None:
    """Warm, then switched off: the memo the code reads stays empty, so no answer comes from it."""
    bodies = build(scenario, 2)
    memos.pipeline(scenario, bodies, Metrics())
    assert len(memo()) > 0
    switch_off, _ = memos.MEMOS[name]
    with switch_off():
        memos.pipeline(scenario, bodies, Metrics())
        assert len(memo()) == 0
    assert len(memo()) > 0
