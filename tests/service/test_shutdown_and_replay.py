"""SIGTERM keeps undelivered events for the next start; `replay` re-sends what was dead-lettered."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.helpers.otlp_peer import OK, event_ids
from tests.helpers.payloads import otlp_json_spans
from tests.helpers.ports import free_port
from tests.helpers.relay import ROOT, RelayProcess
from tests.helpers.scripted_server import Answer, ScriptedServer
from tests.helpers.waiting import eventually

JSON = {"Content-Type": "application/json"}


def delivered_ids(server: ScriptedServer) -> set[str]:
    return {
        event_id
        for received, status in zip(server.requests, server.statuses, strict=False)
        if status == 200
        for event_id in event_ids(received)
    }


async def test_sigterm_stops_within_grace_and_keeps_the_backlog(tmp_path: Path) -> None:
    port = free_port()  # the Tempo sink is down for the whole first run
    env = {
        "RELAY_SINKS": "tempo",
        "RELAY_TEMPO_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        "RELAY_TEMPO_INITIAL_BACKOFF": "0.05",
        "RELAY_SHUTDOWN_GRACE": "2",
    }
    relay = RelayProcess(tmp_path / "data", env)
    await asyncio.to_thread(relay.start)
    body = otlp_json_spans(12)
    response = await asyncio.to_thread(relay.request, "POST", "/v1/traces", body, JSON)
    assert response.status == 200
    started = time.monotonic()
    assert await asyncio.to_thread(relay.stop) == 0
    assert time.monotonic() - started < 10
    stopped = [orjson.loads(line) for line in relay.log().splitlines() if "relay_stopped" in line]
    assert stopped[-1]["kept_in_spool"] == {"tempo": 12}

    peer = ScriptedServer(default=OK)
    peer.port = port
    await peer.start()
    try:
        await asyncio.to_thread(relay.start)
        await eventually(lambda: len(delivered_ids(peer)) == 12, message="the kept backlog sent")
    finally:
        await asyncio.to_thread(relay.stop)
        await peer.stop()


def replay(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "replay", *args],
        cwd=ROOT,
        env={**RelayProcess(data_dir, env).environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_replay_resends_dead_letters_once_the_sink_is_fixed(tmp_path: Path) -> None:
    peer = await ScriptedServer(default=Answer(401, b"invalid token")).start()
    env = {
        "RELAY_SINKS": "file,tempo",
        "RELAY_TEMPO_ENDPOINT": peer.url + "/v1/traces",
        "RELAY_TEMPO_FLUSH_INTERVAL": "0.05",
        # Refused credentials are retried like an outage, until the retry time runs out.
        "RELAY_TEMPO_MAX_RETRY_TIME": "0.5",
        "RELAY_TEMPO_INITIAL_BACKOFF": "0.05",
    }
    data_dir = tmp_path / "data"
    relay = RelayProcess(data_dir, env)
    await asyncio.to_thread(relay.start)
    try:
        body = otlp_json_spans(7)
        await asyncio.to_thread(relay.request, "POST", "/v1/traces", body, JSON)
        dead_letters = data_dir / "dead-letter" / "tempo.jsonl"
        await eventually(
            lambda: dead_letters.exists() and len(dead_letters.read_text().splitlines()) == 7,
            message="7 dead letters",
        )
        record = orjson.loads(dead_letters.read_text().splitlines()[0])
        assert record["reason"] == "retries_exhausted"
        assert "401" in record["error"]
        # Credentials refused: the whole batch each time, not one request per event.
        assert {len(event_ids(r)) for r in peer.requests} == {7}
    finally:
        await asyncio.to_thread(relay.stop)

    peer.default = OK
    result = await asyncio.to_thread(replay, data_dir, env, str(dead_letters))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tempo: 7 sent, 0 dead-lettered" in result.stdout
    expected = {
        orjson.loads(line)["event"]["event_id"] for line in dead_letters.read_text().splitlines()
    }
    assert delivered_ids(peer) == expected
    await peer.stop()


async def test_replay_reads_rotated_file_sink_output(tmp_path: Path) -> None:
    peer = await ScriptedServer(default=OK).start()
    try:
        data_dir = tmp_path / "data"
        events = [
            {
                "event_id": f"e{i}",
                "trace_id": "ab" * 16,
                "span_id": f"{i:016x}",
                "schema": "llm-event/1",
                "received_at": "2026-11-22T00:00:00Z",
                "source": {"format": "native", "gateway": "tests", "test": False},
                "start_time": "2026-11-22T00:00:00Z",
                "end_time": "2026-11-22T00:00:01Z",
                "operation": "chat",
                "status": "ok",
                "usage": {},
                "cost": {"currency": "USD", "source": "unknown"},
            }
            for i in range(5)
        ]
        rotated = tmp_path / "llm-events-2026-11-22T00-00-00.000.jsonl.gz"
        rotated.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
        env = {"RELAY_SINKS": "file,tempo", "RELAY_TEMPO_ENDPOINT": peer.url + "/v1/traces"}
        result = await asyncio.to_thread(replay, data_dir, env, str(rotated), "--sinks", "tempo")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tempo: 5 sent" in result.stdout
        assert delivered_ids(peer) == {f"e{i}" for i in range(5)}
    finally:
        await peer.stop()
