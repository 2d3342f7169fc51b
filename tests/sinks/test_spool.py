"""The spool: durable appends, shared commits, per-sink cursors, cleanup, the size cap."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from sinks.spool import Spool, SpoolFullError
from tests.helpers.tmpfs import fill_up, small_tmpfs


async def opened(path: Path, sinks: list[str], max_bytes: int = 1 << 30) -> Spool:
    spool = Spool(path, max_bytes, sinks)
    await spool.open()
    return spool


async def test_appends_survive_a_reopen_and_each_sink_has_its_own_cursor(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = await opened(path, ["a", "b"])
    await spool.append([b"one", b"two", b"three"])
    records = await spool.read("a", 2, 1 << 20)
    assert [r.body for r in records] == [b"one", b"two"]
    await spool.ack("a", records[-1].seq)
    await spool.close()

    spool = await opened(path, ["a", "b"])
    assert (spool.backlog("a"), spool.backlog("b")) == (1, 3)
    assert [r.body for r in await spool.read("a", 10, 1 << 20)] == [b"three"]
    assert [r.body for r in await spool.read("b", 10, 1 << 20)] == [b"one", b"two", b"three"]
    await spool.close()


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    spool = await opened(tmp_path / "spool.sqlite3", ["a"])
    commits = 0
    original = spool._commit

    def counting(*args: object) -> None:
        nonlocal commits
        commits += 1
        original(*args)  # type: ignore[arg-type]

    spool._commit = counting  # type: ignore[method-assign, assignment]
    await asyncio.gather(*(spool.append([f"e{i}".encode()]) for i in range(200)))
    assert spool.backlog("a") == 200
    assert commits < 200 / 4, f"{commits} commits for 200 appends"
    await spool.close()


async def test_cleanup_frees_only_what_every_sink_is_done_with(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = await opened(path, ["fast", "slow"])
    await spool.append([b"x" * 100] * 10)
    assert spool.stored_bytes == 1000
    await spool.ack("fast", spool.last_seq)
    assert spool.stored_bytes == 1000  # "slow" still needs them
    await spool.ack("slow", 4)
    assert spool.stored_bytes == 600
    await spool.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 6


async def test_full_spool_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    spool = await opened(tmp_path / "spool.sqlite3", ["a"], max_bytes=1000)
    await spool.append([b"x" * 600])
    with pytest.raises(SpoolFullError, match="RELAY_SPOOL_MAX_BYTES=1000"):
        await spool.append([b"y" * 600])
    assert spool.backlog("a") == 1
    await spool.ack("a", spool.last_seq)
    await spool.append([b"y" * 600])  # room again once delivered
    await spool.close()


async def test_a_new_sink_starts_now_and_a_removed_one_keeps_its_events_until_forgotten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = await opened(path, ["old"])
    await spool.append([b"1", b"2"])
    await spool.close()
    spool = await opened(path, ["new"])
    assert spool.backlog("new") == 0
    assert spool.removed == {"old": 2}
    # What the removed sink is owed is still there to dead-letter, then it stops pinning.
    assert [r.body for r in await spool.read("old", 10, 1 << 20)] == [b"1", b"2"]
    await spool.forget("old")
    assert spool.stored_bytes == 0
    await spool.close()
    spool = await opened(path, ["new"])
    assert spool.removed == {}
    await spool.close()


async def test_recent_events_are_read_decoded_and_older_ones_from_disk(tmp_path: Path) -> None:
    from sinks import spool as spool_module

    spool = await opened(tmp_path / "spool.sqlite3", ["a", "b"])
    total = spool_module.TAIL_EVENTS + 100
    bodies = [orjson.dumps({"n": i}) for i in range(total)]
    await spool.append(bodies, [{"n": i} for i in range(total)])  # type: ignore[typeddict-unknown-key]
    # "a" is behind the in-memory tail: its first events come from the database, as JSON.
    early = await spool.read("a", 10, 1 << 20)
    assert [r.event for r in early] == [None] * 10
    assert [orjson.loads(r.body)["n"] for r in early] == list(range(10))
    await spool.ack("a", total - 5)
    recent = await spool.read("a", 10, 1 << 20)
    assert [r.event for r in recent] == [{"n": i} for i in range(total - 5, total)]
    await spool.close()


async def test_a_full_disk_at_open_leaves_the_spool_where_it_is(tmp_path: Path) -> None:
    """Only damage moves a spool aside: a disk that is full at start is not damage."""
    with small_tmpfs(tmp_path / "disk", 4 << 20) as disk:
        path = disk / "spool.sqlite3"
        spool = await opened(path, ["a"])
        await spool.append([b"kept-1", b"kept-2"])
        await spool.close()  # a clean close removes the -shm file: the next open must make it
        ballast = fill_up(disk)
        with pytest.raises(sqlite3.Error):
            await opened(path, ["a"])
        assert not (disk / "damaged").exists()
        ballast.unlink()
        spool = await opened(path, ["a"])
        assert spool.problems == []
        assert [r.body for r in await spool.read("a", 10, 1 << 20)] == [b"kept-1", b"kept-2"]
        await spool.close()


async def test_closing_while_a_commit_fails_does_not_hang(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 4 << 20) as disk:
        spool = await opened(disk / "spool.sqlite3", ["a"])
        fill_up(disk)
        append = asyncio.ensure_future(spool.append([b"x" * (1 << 20)]))
        await asyncio.wait_for(spool.close(), 10)
        with pytest.raises(SpoolFullError, match="spool write failed"):
            await append
