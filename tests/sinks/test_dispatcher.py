"""The dispatcher outlives any failure: a sink's bug on one event, a row that holds no event.

The sink is the real file sink, with a fault injected in front of it where a test needs one.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from sinks.base import Batch, DispatchSettings, ProbeResult, SendResult
from sinks.dead_letters import DeadLetters
from sinks.dispatcher import Dispatcher
from sinks.file import FileSink, FileSinkConfig
from sinks.selection import Selection
from sinks.spool import Spool
from telemetry.metrics import Metrics
from tests.helpers.payloads import stored_event
from tests.helpers.waiting import eventually

SETTINGS = DispatchSettings(batch_size=8, flush_interval=0.01, initial_backoff=0.01)


class BuggyOnPoison:
    """The file sink behind a bug that fails (not a ``SinkError``) on any batch with a poison."""

    name = "file"

    def __init__(self, inner: FileSink) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    async def send(self, batch: Batch) -> SendResult | None:
        if any(event.get("request_model") == "poison" for event in batch):
            raise KeyError("a bug meeting an odd event")
        return await self.inner.send(batch)

    async def probe(self) -> ProbeResult:
        return await self.inner.probe()

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    opened = Spool(tmp_path / "spool.sqlite3", 1 << 30, ["file"])
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def deliver_all(
    spool: Spool,
    sink: FileSink | BuggyOnPoison,
    tmp_path: Path,
    settings: DispatchSettings = SETTINGS,
) -> Dispatcher:
    dead_letters = DeadLetters(tmp_path / "dead-letter")
    dispatcher = Dispatcher(sink, settings, spool, dead_letters, Metrics())
    await sink.start()
    dispatcher.start()
    try:
        await spool.wait_resolved("file")
        assert dispatcher.running
    finally:
        await dispatcher.stop(1.0)
        await sink.close()
        dead_letters.close()
    return dispatcher


def written(path: Path) -> list[str]:
    return [orjson.loads(line)["event_id"] for line in path.read_bytes().splitlines()]


def dead_lettered(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "dead-letter" / "file.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_a_sink_bug_on_one_event_dead_letters_that_event_only(
    tmp_path: Path, spool: Spool
) -> None:
    events = [stored_event(i) for i in range(20)]
    events[13]["request_model"] = "poison"
    await spool.append([orjson.dumps(e) for e in events])
    output = tmp_path / "out.jsonl"
    sink = BuggyOnPoison(FileSink(FileSinkConfig(output)))

    dispatcher = await deliver_all(spool, sink, tmp_path)

    assert written(output) == [e["event_id"] for e in events if e is not events[13]]
    (line,) = dead_lettered(tmp_path)
    assert line["reason"] == "rejected"
    assert line["event"] == events[13]
    assert "a bug meeting an odd event" in str(line["error"])
    assert dispatcher.status.dead_lettered == 1


async def test_a_row_that_is_not_an_event_is_kept_raw_and_skipped(
    tmp_path: Path, spool: Spool
) -> None:
    before, after = stored_event(1), stored_event(2)
    rows = [orjson.dumps(before), b"\xff not json", b"[1, 2]", orjson.dumps(after)]
    await spool.append(rows)
    output = tmp_path / "out.jsonl"

    await deliver_all(spool, FileSink(FileSinkConfig(output)), tmp_path)

    assert written(output) == [before["event_id"], after["event_id"]]
    kept = dead_lettered(tmp_path)
    assert [base64.b64decode(str(line["raw_base64"])) for line in kept] == rows[1:3]
    assert {line["reason"] for line in kept} == {"undecodable"}


@pytest.mark.parametrize("padding", [0, 300_000])  # on the loop, and off it for a large batch
async def test_an_event_the_selection_cannot_handle_is_dead_lettered_alone(
    tmp_path: Path, spool: Spool, padding: int
) -> None:
    """A replayed line is only checked for being a JSON object: one whose shape the selection
    cannot read must not hold the sink's other events back for ever."""
    events = [stored_event(i, padding=padding // 8) for i in range(8)]
    odd: dict[str, object] = {**events[3], "attributes": ["not", "an", "object"]}
    events[3] = odd  # type: ignore[call-overload]
    await spool.append([orjson.dumps(e) for e in events])
    output = tmp_path / "out.jsonl"
    selection = Selection(sink="file", content="hash", sample_rate=0.999999)
    settings = replace(SETTINGS, selection=selection)

    dispatcher = await deliver_all(spool, FileSink(FileSinkConfig(output)), tmp_path, settings)

    assert written(output) == [e["event_id"] for e in events if e is not odd]
    (line,) = dead_lettered(tmp_path)
    assert line["reason"] == "unselectable" and line["event"] == odd
    assert "the sink's selection failed: AttributeError" in str(line["error"])
    assert dispatcher.status.dead_lettered == 1


async def test_a_sink_never_started_keeps_the_batch_spooled(tmp_path: Path, spool: Spool) -> None:
    """The relay's own bug (a send before start) is a fault of the loop: nothing is dead-lettered,
    the status says what is wrong, and once the sink is started the events are delivered."""
    events = [stored_event(i) for i in range(5)]
    await spool.append([orjson.dumps(e) for e in events])
    output = tmp_path / "out.jsonl"
    sink = FileSink(FileSinkConfig(output))
    dead_letters = DeadLetters(tmp_path / "dead-letter")
    dispatcher = Dispatcher(sink, SETTINGS, spool, dead_letters, Metrics())
    dispatcher.start()
    try:
        await eventually(lambda: dispatcher.status.last_error, message="the fault in the status")
        assert "before start()" in str(dispatcher.status.last_error)
        assert spool.backlog("file") == len(events)
        assert not (tmp_path / "dead-letter" / "file.jsonl").exists()
        await sink.start()  # the loop retries after its pause (1 s) and delivers
        await spool.wait_resolved("file")
    finally:
        await dispatcher.stop(1.0)
        await sink.close()
        dead_letters.close()
    assert written(output) == [e["event_id"] for e in events]
    assert dispatcher.status.dead_lettered == 0
