"""``python -m bench.memos`` keeps measuring what it says: each memo it switches off exists (a
renamed memo fails here rather than being measured as worthless), and switching it off changes no
event, only the time taken."""

from __future__ import annotations

import orjson
import pytest

from bench import memos
from bench.payloads import SCENARIOS, build
from foundation.times import now
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
