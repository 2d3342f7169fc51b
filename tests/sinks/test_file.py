"""The file sink: JSON Lines, size rotation, retention, compressed backups zcat/zstdcat can read."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import orjson
import pytest

from foundation.settings import EnvReader
from sinks.base import Batch, RetryableError
from sinks.file import FileSink, FileSinkConfig
from tests.helpers.payloads import stored_event as event
from tests.helpers.tmpfs import fill_up, small_tmpfs


def read_lines(command: list[str], path: Path) -> list[dict[str, object]]:
    output = subprocess.run([*command, str(path)], check=True, capture_output=True).stdout
    return [orjson.loads(line) for line in output.splitlines()]


async def test_one_event_per_line(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(path=tmp_path / "out" / "events.jsonl"))
    await sink.start()
    await sink.send(Batch.of([event(1), event(2)]))
    await sink.send(Batch.of([event(3)]))
    await sink.close()
    lines = (tmp_path / "out" / "events.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [orjson.loads(line)["event_id"] for line in lines[:-1]] == [
        "e000001",
        "e000002",
        "e000003",
    ]
    assert orjson.loads(lines[0])["attributes"]["text"] == "line\nbreak"


@pytest.mark.parametrize(
    ("compress", "reader", "suffix"),
    [
        ("gzip", ["zcat"], ".gz"),
        ("zstd", ["zstdcat"], ".zst"),
        ("none", ["cat"], ""),
    ],
)
async def test_rotation_compresses_and_keeps_max_backups(
    tmp_path: Path, compress: str, reader: list[str], suffix: str
) -> None:
    path = tmp_path / "events.jsonl"
    config = FileSinkConfig(path=path, max_bytes=20_000, max_backups=3, compress=compress)  # type: ignore[arg-type]
    sink = FileSink(config)
    await sink.start()
    for batch in range(12):
        await sink.send(Batch.of([event(batch * 10 + i, padding=400) for i in range(10)]))
    await sink.close()
    rotated = sink.rotated_files()
    assert len(rotated) == 3
    assert all(p.name.startswith("events-") and p.name.endswith(".jsonl" + suffix) for p in rotated)
    assert not list(tmp_path.glob("*.partial"))
    seen: list[str] = []
    for backup in rotated:
        lines = read_lines(reader, backup)
        assert lines
        seen.extend(str(line["event_id"]) for line in lines)
    seen.extend(str(orjson.loads(line)["event_id"]) for line in path.read_bytes().splitlines())
    # Retention drops the oldest files whole; what is kept is contiguous and ends with the newest.
    numbers = [int(s[1:]) for s in seen]
    assert numbers == sorted(numbers)
    assert numbers[-1] == 119
    assert numbers == list(range(numbers[0], 120))
    assert path.stat().st_size <= 20_000


async def test_writes_happen_off_the_event_loop(tmp_path: Path) -> None:
    sink = FileSink(
        FileSinkConfig(path=tmp_path / "events.jsonl", max_bytes=1 << 20, compress="gzip")
    )
    await sink.start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    for batch in range(5):
        await sink.send(Batch.of([event(batch * 500 + i, padding=1000) for i in range(500)]))
    ticker.cancel()
    await sink.close()
    # The loop kept running while batches were written and rotated files compressed.
    assert ticks > 50


async def test_unwritable_directory_is_retryable_and_probe_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    sink = FileSink(FileSinkConfig(path=blocker / "events.jsonl"))
    await sink.start()
    with pytest.raises(RetryableError, match="cannot write"):
        await sink.send(Batch.of([event(1)]))
    result = await sink.probe()
    assert not result.ok
    assert str(blocker) in result.message
    await sink.close()


async def test_probe_reports_path_and_free_space(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(path=tmp_path / "new" / "events.jsonl"))
    result = await sink.probe()
    assert result.ok
    assert str(tmp_path / "new" / "events.jsonl") in result.message
    assert int(result.details["free_bytes"]) > 0
    assert not list((tmp_path / "new").iterdir())


async def test_lifecycle_close_twice_and_without_start(tmp_path: Path) -> None:
    never_started = FileSink(FileSinkConfig(path=tmp_path / "a.jsonl"))
    await never_started.close()
    await never_started.close()
    sink = FileSink(FileSinkConfig(path=tmp_path / "b.jsonl"))
    await sink.start()
    await sink.send(Batch.of([event(1)]))
    await sink.close()
    await sink.close()
    assert (tmp_path / "b.jsonl").read_bytes().count(b"\n") == 1


async def test_a_send_before_start_or_after_close_is_a_bug_naming_the_sink(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(path=tmp_path / "c.jsonl"))
    with pytest.raises(RuntimeError, match="the file sink was sent a batch before start"):
        await sink.send(Batch.of([event(1)]))
    await sink.start()
    await sink.close()
    with pytest.raises(RuntimeError, match="file sink"):
        await sink.send(Batch.of([event(1)]))
    assert not (tmp_path / "c.jsonl").exists()


async def test_full_disk_leaves_no_torn_line_and_the_retry_lands_once(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        path = disk / "events.jsonl"
        sink = FileSink(FileSinkConfig(path=path, compress="none"))
        await sink.start()
        try:
            await sink.send(Batch.of([event(0)]))
            before = path.read_bytes()
            ballast = fill_up(disk)
            # More than the room left in the file's last page: the disk takes part, then refuses.
            batch = [event(i, padding=400) for i in range(1, 51)]
            with pytest.raises(RetryableError, match="No space left"):
                await sink.send(Batch.of(batch))
            assert path.read_bytes() == before
            ballast.unlink()
            await sink.send(Batch.of(batch))
        finally:
            await sink.close()
        ids = [orjson.loads(line)["event_id"] for line in path.read_bytes().splitlines()]
    assert ids == [f"e{i:06d}" for i in range(51)]


async def test_torn_line_left_by_a_crash_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    whole = orjson.dumps(event(1)) + b"\n"
    path.write_bytes(whole + orjson.dumps(event(2))[:40])
    sink = FileSink(FileSinkConfig(path=path))
    await sink.start()
    await sink.send(Batch.of([event(2), event(3)]))
    await sink.close()
    ids = [orjson.loads(line)["event_id"] for line in path.read_bytes().splitlines()]
    assert ids == ["e000001", "e000002", "e000003"]


def test_default_config_from_env(tmp_path: Path) -> None:
    env = EnvReader({})
    config = FileSinkConfig.from_env(env, tmp_path)
    assert env.problems == []
    assert config.path == tmp_path / "llm-events.jsonl"
    assert (config.max_bytes, config.max_backups, config.compress) == (100 << 20, 10, "gzip")


def test_bad_settings_are_all_named(tmp_path: Path) -> None:
    env = EnvReader(
        {
            "RELAY_FILE_MAX_MB": "lots",
            "RELAY_FILE_COMPRESS": "brotli",
            "RELAY_FILE_MAX_BACKUPS": "-1",
        }
    )
    FileSinkConfig.from_env(env, tmp_path)
    assert len(env.problems) == 3
    for name in ("RELAY_FILE_MAX_MB", "RELAY_FILE_COMPRESS", "RELAY_FILE_MAX_BACKUPS"):
        assert any(problem.startswith(name) for problem in env.problems)


async def test_rotation_on_a_full_disk_keeps_the_backup_uncompressed(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 1 << 20) as disk:
        path = disk / "events.jsonl"
        sink = FileSink(FileSinkConfig(path=path, max_bytes=64 * 1024, compress="gzip"))
        await sink.start()
        first = [event(i, padding=1000) for i in range(60)]  # about 70 KiB: one rotation due
        try:
            await sink.send(Batch.of(first))
            ballast = fill_up(disk)
            later = [event(100)]
            with pytest.raises(RetryableError):  # rotated, not compressed, then no room to write
                await sink.send(Batch.of(later))
            assert not list(disk.glob("*.partial")), "a partial copy kept taking space"
            ballast.unlink()
            await sink.send(Batch.of(later))
        finally:
            await sink.close()
        (backup,) = sink.rotated_files()
        assert backup.suffix == ".jsonl"  # readable as it is
        lines = [*backup.read_bytes().splitlines(), *path.read_bytes().splitlines()]
    ids = [orjson.loads(line)["event_id"] for line in lines]
    assert ids == [e["event_id"] for e in first + later]
