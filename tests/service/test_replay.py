"""`replay` as users run it: the CLI as a subprocess, against loopback peers.

Each source (a dead-letter file, a file-sink file, a spool) is delivered once and exit 0 means every
event read was delivered; every way it cannot be delivered is one line on stderr and a non-zero
exit, never a traceback, and replay never appends to the file it reads.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import orjson

from tests.helpers.otlp_peer import OK, event_ids
from tests.helpers.payloads import otlp_json_spans, stored_event
from tests.helpers.ports import free_port
from tests.helpers.relay import ROOT, RelayProcess
from tests.helpers.scripted_server import Answer, ScriptedServer
from tests.helpers.waiting import eventually

JSON = {"Content-Type": "application/json"}


def delivered_ids(server: ScriptedServer) -> list[str]:
    """Every event id the peer answered 200 for, in order, duplicates kept."""
    return [
        event_id
        for received, status in server.answered
        if status == 200
        for event_id in event_ids(received)
    ]


def replay(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return RelayProcess(data_dir, env).run_cli("replay", *args)


async def run_replay(
    data_dir: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    # In a thread: the peers answer on this test's event loop meanwhile.
    return await asyncio.to_thread(replay, data_dir, env, *args)


def tempo_env(peer_url: str, **extra: str) -> dict[str, str]:
    return {"RELAY_SINKS": "file,tempo", "RELAY_TEMPO_ENDPOINT": peer_url + "/v1/traces", **extra}


def dead_letter_lines(count: int, sink: str = "tempo") -> bytes:
    header = {"dead_lettered_at": "2026-11-22T00:00:00Z", "sink": sink, "reason": "rejected"}
    return b"".join(
        orjson.dumps({**header, "error": "HTTP 401", "event": stored_event(i)}) + b"\n"
        for i in range(count)
    )


def assert_usage_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


async def test_dead_letters_resend_once_the_sink_is_fixed_from_a_file_moved_aside(
    tmp_path: Path,
) -> None:
    peer = await ScriptedServer(default=Answer(401, b"invalid token")).start()
    env = tempo_env(
        peer.url,
        RELAY_TEMPO_FLUSH_INTERVAL="0.05",
        # Refused credentials are retried like an outage, until the retry time runs out.
        RELAY_TEMPO_MAX_RETRY_TIME="0.5",
        RELAY_TEMPO_INITIAL_BACKOFF="0.05",
    )
    data_dir = tmp_path / "data"
    dead_letters = data_dir / "dead-letter" / "tempo.jsonl"
    try:
        relay = RelayProcess(data_dir, env)
        await asyncio.to_thread(relay.start)
        try:
            relay.request("POST", "/v1/traces", otlp_json_spans(7), JSON)
            await eventually(
                lambda: dead_letters.exists() and len(dead_letters.read_text().splitlines()) == 7,
                message="7 dead letters",
            )
        finally:
            await asyncio.to_thread(relay.stop)
        record = orjson.loads(dead_letters.read_text().splitlines()[0])
        assert record["reason"] == "retries_exhausted"
        assert "401" in record["error"]
        # Credentials refused: the whole batch each time, not one request per event.
        assert {len(event_ids(r)) for r in peer.requests} == {7}
        peer.default = OK
        before = dead_letters.read_bytes()
        answered = len(peer.answered)

        # The live file: the relay appends to it. Refused, untouched, nothing sent.
        result = await run_replay(data_dir, env, str(dead_letters))
        assert_usage_error(result, "live dead-letter file of sink tempo", "mv ")
        assert dead_letters.read_bytes() == before
        assert len(peer.answered) == answered

        aside = data_dir / "tempo.replay.jsonl"
        dead_letters.rename(aside)
        result = await run_replay(data_dir, env, str(aside))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tempo: 7 sent, 0 dead-lettered" in result.stdout
        expected = [orjson.loads(line)["event"]["event_id"] for line in before.splitlines()]
        assert Counter(delivered_ids(peer)) == Counter(expected)
        assert not dead_letters.exists()
    finally:
        await peer.stop()


async def test_events_that_fail_again_go_to_the_dead_letter_file_never_the_source(
    tmp_path: Path,
) -> None:
    peer = await ScriptedServer(default=Answer(500, b"tempo is broken")).start()
    try:
        data_dir = tmp_path / "data"
        source = tmp_path / "tempo.replay.jsonl"
        source.write_bytes(dead_letter_lines(4))
        result = await run_replay(data_dir, tempo_env(peer.url), str(source))
        assert result.returncode == 1, result.stdout + result.stderr
        live = data_dir / "dead-letter" / "tempo.jsonl"
        assert f"tempo: 0 sent, 4 dead-lettered (to {live})" in result.stdout
        assert "4 events not delivered" in result.stderr
        assert source.read_bytes() == dead_letter_lines(4)
        again = [orjson.loads(line) for line in live.read_bytes().splitlines()]
        assert [r["event"]["event_id"] for r in again] == [f"e{i:06d}" for i in range(4)]
        assert {r["reason"] for r in again} == {"rejected"}
    finally:
        await peer.stop()


async def test_dead_letters_of_a_sink_not_enabled_are_refused_with_what_to_set(
    tmp_path: Path,
) -> None:
    peer = await ScriptedServer(default=OK).start()
    try:
        source = tmp_path / "tempo.replay.jsonl"
        source.write_bytes(dead_letter_lines(3))
        result = await run_replay(tmp_path / "data", {"RELAY_SINKS": "file"}, str(source))
        assert_usage_error(
            result, "3 events for sink tempo", "RELAY_SINKS=file", "nothing was sent"
        )
        assert "the server's sink settings" in result.stderr
        assert not (tmp_path / "data" / "llm-events.jsonl").exists()
        assert peer.requests == []
    finally:
        await peer.stop()


async def test_sources_that_cannot_be_read_are_one_line_and_exit_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"RELAY_SINKS": "file"}
    not_a_spool = tmp_path / "empty"
    not_a_spool.mkdir()
    damaged = tmp_path / "llm-events-2026.jsonl.gz"
    damaged.write_bytes(b"this is not gzip\n")
    other_db = tmp_path / "worker-0.sqlite3"
    with sqlite3.connect(other_db) as db:
        db.execute("CREATE TABLE t (x)")
    cases = {
        str(tmp_path / "missing.jsonl"): "no such file",
        str(not_a_spool): "is a directory but not a spool",
        str(damaged): "cannot read",
        str(other_db): "not a relay spool",
    }
    for source, words in cases.items():
        result = await run_replay(data_dir, env, source)
        assert_usage_error(result, words, source)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (data_dir / "llm-events.jsonl").exists()


async def test_malformed_lines_are_counted_and_the_rest_delivered_exit_1(tmp_path: Path) -> None:
    peer = await ScriptedServer(default=OK).start()
    try:
        source = tmp_path / "tempo.replay.jsonl"
        lines = dead_letter_lines(3).splitlines(keepends=True)
        raw = (
            b'{"dead_lettered_at":"x","sink":"tempo","reason":"undecodable","raw_base64":"/w=="}\n'
        )
        source.write_bytes(lines[0] + b"not json\n" + lines[1] + raw + lines[2] + b'{"dead_')
        result = await run_replay(tmp_path / "data", tempo_env(peer.url), str(source))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "tempo: 3 sent, 0 dead-lettered" in result.stdout
        for why in ("line 2: not JSON", "line 4: an undecodable spool row", "line 6: not JSON"):
            assert why in result.stderr
        assert "3 events not delivered" in result.stderr
        assert sorted(delivered_ids(peer)) == [f"e{i:06d}" for i in range(3)]
    finally:
        await peer.stop()


async def test_file_sink_output_goes_to_every_enabled_sink_but_file(tmp_path: Path) -> None:
    peer = await ScriptedServer(default=OK).start()
    try:
        data_dir = tmp_path / "data"
        rotated = tmp_path / "llm-events-2026-11-22T00-00-00.000.jsonl.gz"
        rotated.write_bytes(
            gzip.compress(b"".join(orjson.dumps(stored_event(i)) + b"\n" for i in range(5)))
        )
        result = await run_replay(data_dir, tempo_env(peer.url), str(rotated))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tempo: 5 sent" in result.stdout
        assert "file:" not in result.stdout
        assert sorted(delivered_ids(peer)) == [f"e{i:06d}" for i in range(5)]
        assert not (data_dir / "llm-events.jsonl").exists()

        # Only the file sink enabled: nowhere to send them unless told.
        result = await run_replay(data_dir, {"RELAY_SINKS": "file"}, str(rotated))
        assert_usage_error(result, "5 events of a file sink", "--sinks")
        # The file sink's own output, to the file sink: it would append to the file it reads.
        live = data_dir / "llm-events.jsonl"
        data_dir.mkdir()
        live.write_bytes(orjson.dumps(stored_event(9)) + b"\n")
        result = await run_replay(data_dir, tempo_env(peer.url), str(live), "--sinks", "file,tempo")
        assert_usage_error(result, "is the file sink's output")
        assert live.read_bytes() == orjson.dumps(stored_event(9)) + b"\n"
        assert len(delivered_ids(peer)) == 5
    finally:
        await peer.stop()


async def test_replay_reads_rotated_file_sink_output_to_the_sinks_named(tmp_path: Path) -> None:
    peer = await ScriptedServer(default=OK).start()
    try:
        events = [stored_event(i) for i in range(5)]
        rotated = tmp_path / "llm-events-2026-11-22T00-00-00.000.jsonl.gz"
        rotated.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
        env = tempo_env(peer.url)
        result = await run_replay(tmp_path / "data", env, str(rotated), "--sinks", "tempo")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tempo: 5 sent" in result.stdout
        assert sorted(delivered_ids(peer)) == [f"e{i:06d}" for i in range(5)]
    finally:
        await peer.stop()


async def killed_relay(data_dir: Path, events: int) -> list[str]:
    """A relay whose Tempo is down, killed with ``kill -9`` once it acknowledged ``events``
    events: the ids it acknowledged."""
    relay = RelayProcess(data_dir, {"RELAY_SINKS": "tempo", **dead_tempo()})
    await asyncio.to_thread(relay.start)
    try:
        sent = [stored_event(i) for i in range(events)]
        response = relay.request("POST", "/v1/events", orjson.dumps(sent), JSON)
        assert response.status == 200, response.data
        assert orjson.loads(response.data)["accepted"] == events
        return [event["event_id"] for event in sent]
    finally:
        relay.kill()


def dead_tempo() -> dict[str, str]:
    return {"RELAY_TEMPO_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces"}


async def test_a_killed_relays_spool_is_delivered_once_and_never_again(tmp_path: Path) -> None:
    """A removed replica's volume: replayed from another replica's environment, every event
    acknowledged reaches Tempo once, and a relay started on that volume later sends none again."""
    removed = tmp_path / "replica-1"
    acknowledged = await killed_relay(removed, 15)
    peer = await ScriptedServer(default=OK).start()
    try:
        here = tmp_path / "replica-0"
        result = await run_replay(here, tempo_env(peer.url), str(removed / "spool"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tempo: 15 sent, 0 dead-lettered" in result.stdout
        assert Counter(delivered_ids(peer)) == Counter(acknowledged)

        # Nothing is owed any more: a second replay sends nothing.
        again = await run_replay(here, tempo_env(peer.url), str(removed))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to replay" in again.stdout
        relay = RelayProcess(removed, tempo_env(peer.url, RELAY_SINKS="tempo"))
        await asyncio.to_thread(relay.start)
        try:
            started = [orjson.loads(x) for x in relay.log().splitlines() if "relay_started" in x]
            assert started[-1]["spool_backlog"] == {"tempo": 0}
            relay.request("POST", "/v1/events", orjson.dumps(stored_event(100)), JSON)
            # Sent in spool order: anything owed again would have gone before this one.
            await eventually(lambda: len(delivered_ids(peer)) > 15, message="the new event")
        finally:
            await asyncio.to_thread(relay.stop)
        delivered = delivered_ids(peer)
        assert len(delivered) == 16 and len(set(delivered)) == 16
        assert Counter(delivered[:15]) == Counter(acknowledged)
    finally:
        await peer.stop()


async def test_a_spool_owed_to_a_sink_not_enabled_is_refused_and_kept(tmp_path: Path) -> None:
    removed = tmp_path / "replica-1"
    await killed_relay(removed, 5)
    result = await run_replay(tmp_path / "replica-0", {"RELAY_SINKS": "file"}, str(removed))
    assert_usage_error(result, "5 events for sink tempo", "RELAY_SINKS=file", "nothing was sent")
    peer = await ScriptedServer(default=OK).start()
    try:
        result = await run_replay(tmp_path / "replica-0", tempo_env(peer.url), str(removed))
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(delivered_ids(peer)) == 5
    finally:
        await peer.stop()


async def test_a_spool_in_use_by_a_running_relay_is_refused(tmp_path: Path) -> None:
    env = {"RELAY_SINKS": "tempo", **dead_tempo()}
    data_dir = tmp_path / "data"
    peer = await ScriptedServer(default=OK).start()
    try:
        relay = RelayProcess(data_dir, env)
        await asyncio.to_thread(relay.start)
        try:
            assert relay.process is not None
            relay.request("POST", "/v1/traces", otlp_json_spans(3), JSON)
            spool = data_dir / "spool" / "worker-0.sqlite3"
            result = await run_replay(tmp_path / "other", tempo_env(peer.url), str(spool))
            assert_usage_error(result, f"in use by a running relay (pid {relay.process.pid})")
        finally:
            await asyncio.to_thread(relay.stop)
        assert peer.requests == []
    finally:
        await peer.stop()


async def test_a_relay_started_while_its_spool_is_replayed_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """Replay holds the data directory as ``serve`` does: a relay started there meanwhile stops at
    once with one line (exit 2), and the replay still delivers everything once."""
    removed = tmp_path / "replica-1"
    acknowledged = await killed_relay(removed, 5)
    peer = await ScriptedServer(default=OK).start()
    peer.hold()  # replay waits on the peer: the spool is being replayed meanwhile
    try:
        replaying = asyncio.ensure_future(
            run_replay(tmp_path / "replica-0", tempo_env(peer.url), str(removed))
        )
        await eventually(lambda: peer.requests, message="replay sending")
        relay = RelayProcess(removed, tempo_env(peer.url, RELAY_SINKS="tempo"))
        started = await asyncio.to_thread(relay.run_cli, "serve")
        assert started.returncode == 2, started.stdout + started.stderr
        assert "in use" in started.stderr and "Traceback" not in started.stderr
        # Refused on the data directory's lock, before anything is read or opened.
        assert not re.search(r'"event":\s*"config"', started.stdout + started.stderr)
        peer.release()
        result = await replaying
        assert result.returncode == 0, result.stdout + result.stderr
        assert Counter(delivered_ids(peer)) == Counter(acknowledged)
    finally:
        peer.release()
        await peer.stop()


async def test_a_link_to_the_live_dead_letter_file_is_refused_before_reading(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    live = data_dir / "dead-letter" / "tempo.jsonl"
    live.parent.mkdir(parents=True)
    live.write_bytes(dead_letter_lines(3))
    link = tmp_path / "to-replay.jsonl"
    link.symlink_to(live)
    result = await run_replay(data_dir, {"RELAY_SINKS": "file"}, str(link))
    assert_usage_error(result, "live dead-letter file of sink tempo")


def test_help_says_replay_needs_the_servers_sink_settings() -> None:
    result = RelayProcess(ROOT / "data").run_cli("replay", "--help")
    assert result.returncode == 0
    for words in ("server's sink settings", "RELAY_SINKS", "docker compose exec relay", "spool"):
        assert words in result.stdout
