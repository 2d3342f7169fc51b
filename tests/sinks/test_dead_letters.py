"""Dead letters: both line shapes, and nothing torn or lost when the disk fills up."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import orjson
import pytest

from sinks.dead_letters import DeadLetters, replay_records
from tests.helpers.payloads import stored_event as event
from tests.helpers.tmpfs import fill_up, small_tmpfs

RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def read_records(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_refused_events_are_written_one_per_line(tmp_path: Path) -> None:
    dead_letters = DeadLetters(tmp_path / "dead-letter")
    try:
        await dead_letters.write("tempo", [event(1), event(2)], "permanent", "HTTP 400: bad span")
    finally:
        dead_letters.close()
    path = tmp_path / "dead-letter" / "tempo.jsonl"
    assert dead_letters.path("tempo") == path
    records = read_records(path)
    assert [list(record) for record in records] == [
        ["dead_lettered_at", "sink", "reason", "error", "event"]
    ] * 2
    assert [record["event"] for record in records] == [event(1), event(2)]
    first = records[0]
    assert (first["sink"], first["reason"], first["error"]) == (
        "tempo",
        "permanent",
        "HTTP 400: bad span",
    )
    assert RFC3339_NS.match(str(first["dead_lettered_at"]))


async def test_undecodable_rows_are_kept_byte_for_byte(tmp_path: Path) -> None:
    bodies = [b'{"event_id": "e1", trunc', b"\xff\xfe not utf-8 \n with a newline", b""]
    dead_letters = DeadLetters(tmp_path / "dead-letter")
    try:
        await dead_letters.write("datadog", [event(1)], "permanent", "HTTP 400")
        await dead_letters.write_undecodable("datadog", bodies, "undecodable", "not JSON")
    finally:
        dead_letters.close()
    records = read_records(tmp_path / "dead-letter" / "datadog.jsonl")
    assert records[0]["event"] == event(1)
    raw = records[1:]
    assert [list(record) for record in raw] == [
        ["dead_lettered_at", "sink", "reason", "error", "raw_base64"]
    ] * 3
    assert [base64.b64decode(str(record["raw_base64"])) for record in raw] == bodies
    assert {(r["sink"], r["reason"], r["error"]) for r in raw} == {
        ("datadog", "undecodable", "not JSON")
    }
    assert RFC3339_NS.match(str(raw[0]["dead_lettered_at"]))


async def test_full_disk_leaves_no_torn_line_and_the_retry_lands_once(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        dead_letters = DeadLetters(disk / "dead-letter")
        path = dead_letters.path("tempo")
        try:
            await dead_letters.write("tempo", [event(0)], "permanent", "HTTP 400")
            before = path.read_bytes()
            ballast = fill_up(disk)
            # More than the room left in the file's last page: the disk takes part, then refuses.
            batch = [event(i, padding=400) for i in range(1, 51)]
            with pytest.raises(OSError, match="No space left"):
                await dead_letters.write("tempo", batch, "permanent", "HTTP 400")
            assert path.read_bytes() == before
            ballast.unlink()
            await dead_letters.write("tempo", batch, "permanent", "HTTP 400")
        finally:
            dead_letters.close()
        events = [record["event"] for record in read_records(path)]
    assert events == [event(i, padding=400) if i else event(0) for i in range(51)]


async def test_torn_line_left_by_a_crash_is_cut_before_appending(tmp_path: Path) -> None:
    dead_letters = DeadLetters(tmp_path / "dead-letter")
    path = dead_letters.path("tempo")
    try:
        await dead_letters.write("tempo", [event(1)], "permanent", "HTTP 400")
        with path.open("ab") as handle:
            handle.write(b'{"dead_lettered_at":"2026-')
        await dead_letters.write("tempo", [event(2)], "permanent", "HTTP 400")
    finally:
        dead_letters.close()
    assert [record["event"] for record in read_records(path)] == [event(1), event(2)]


async def test_what_is_written_reads_back_for_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one reader of the format takes back every event written, with the sink that refused
    it, skips the undecodable rows with a word on stderr, and reads file-sink lines as events."""
    dead_letters = DeadLetters(tmp_path / "dead-letter")
    try:
        await dead_letters.write("datadog", [event(1), event(2)], "rejected", "HTTP 400")
        await dead_letters.write_undecodable("datadog", [b"\xff"], "undecodable", "not JSON")
        await dead_letters.write("datadog", [event(3)], "too_old", "older than 23 h")
    finally:
        dead_letters.close()
    records = list(replay_records(dead_letters.path("datadog")))
    assert records == [("datadog", event(1)), ("datadog", event(2)), ("datadog", event(3))]
    assert "line 3" in capsys.readouterr().err
    file_sink = tmp_path / "llm-events.jsonl"
    file_sink.write_bytes(orjson.dumps(event(4)) + b"\n" + orjson.dumps(event(5)) + b"\n")
    assert list(replay_records(file_sink)) == [(None, event(4)), (None, event(5))]
