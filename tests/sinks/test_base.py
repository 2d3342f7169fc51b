"""``Batch``: the dispatcher's events with the JSON the spool already holds for each."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sinks.base import Batch
from sinks.file import FileSink, FileSinkConfig
from tests.helpers.payloads import stored_event as event


def spooled(count: int) -> Batch:
    events = [event(i) for i in range(count)]
    return Batch(events, [orjson.dumps(e) for e in events])


def test_a_slice_is_a_batch_whose_json_matches_its_events() -> None:
    batch = spooled(5)
    for part in (batch[:2], batch[2:], batch[1:4]):
        assert isinstance(part, Batch)
        assert [orjson.loads(line) for line in part.json] == list(part)
    assert batch[3]["event_id"] == "e000003"
    assert len(batch) == 5


def test_events_and_json_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 events but 1 JSON"):
        Batch([event(1), event(2)], [b"{}"])


def test_batch_of_encodes_events_given_without_their_json() -> None:
    events = [event(1), event(2)]
    batch = Batch.of(events)
    assert list(batch.json) == [orjson.dumps(e) for e in events]
    assert list(batch) == events
    assert len(Batch.of([])) == 0


async def test_the_file_sink_writes_a_batch_as_it_writes_plain_events(tmp_path: Path) -> None:
    outputs = []
    for name, events in (("plain", Batch.of([event(1), event(2)])), ("batch", spooled(3)[1:])):
        path = tmp_path / f"{name}.jsonl"
        sink = FileSink(FileSinkConfig(path=path))
        await sink.start()
        await sink.send(events)
        await sink.close()
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b"\n") == 2
