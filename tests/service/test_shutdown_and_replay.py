"""SIGTERM keeps undelivered events for the next start; `replay` re-sends what was dead-lettered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from tests.helpers.otlp_peer import OK, event_ids
from tests.helpers.payloads import otlp_json_spans
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess
from tests.helpers.scripted_server import ScriptedServer
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
