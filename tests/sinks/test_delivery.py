"""Delivery that loses nothing: the relay as a subprocess, sinks that fail on demand.

The Tempo sink points at a scripted OTLP peer that counts every span it accepts by the event id
the relay puts on it; the file sink writes locally. Faults are scripted per request.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.helpers.otlp_peer import OK, event_ids, models
from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess
from tests.helpers.scripted_server import Answer, Received, ScriptedServer
from tests.helpers.waiting import eventually

JSON = {"Content-Type": "application/json"}
FAST_RETRIES = {
    "RELAY_TEMPO_INITIAL_BACKOFF": "0.02",
    "RELAY_TEMPO_MAX_BACKOFF": "0.1",
    "RELAY_TEMPO_FLUSH_INTERVAL": "0.05",
}


def spans(count: int, model: str = "gpt-4o") -> bytes:
    return otlp_json_spans(count, model)


def post(relay: RelayProcess, body: bytes) -> None:
    response = relay.request("POST", "/v1/traces", body, JSON)
    assert response.status == 200, response.data


def accepted_ids(relay: RelayProcess) -> set[str]:
    return {event["event_id"] for event in relay.events()}


def delivered(
    server: ScriptedServer, accept: Callable[[Received], bool] | None = None
) -> Counter[str]:
    """Event ids the peer accepted (requests it answered 2xx to), with their counts."""
    counts: Counter[str] = Counter()
    for received, status in zip(server.requests, server.statuses, strict=False):
        if 200 <= status < 300 and (accept is None or accept(received)):
            counts.update(event_ids(received))
    return counts


def relay_with(tmp_path: Path, endpoint: str, **env: str) -> RelayProcess:
    return RelayProcess(
        tmp_path / "data",
        {"RELAY_SINKS": "file,tempo", "RELAY_TEMPO_ENDPOINT": endpoint, **FAST_RETRIES, **env},
    )


async def test_transient_errors_lose_nothing_and_cost_one_try_each(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    """The Collector's consume contract: tries == batches + transient errors."""
    relay = relay_with(tmp_path, peer.url + "/v1/traces", RELAY_TEMPO_BATCH_SIZE="10")
    await asyncio.to_thread(relay.start)
    try:
        transient = [Answer(503), Answer(502), Answer(504), Answer(429), Answer(503)]
        peer.answer_next(*transient)
        for _ in range(10):
            await asyncio.to_thread(post, relay, spans(10))
        await eventually(lambda: len(accepted_ids(relay)) == 100, message="100 events in file sink")
        ids = accepted_ids(relay)
        await eventually(lambda: set(delivered(peer)) == ids, message="all events at Tempo")
        assert len(peer.requests) == len(peer.statuses)
        failed = [s for s in peer.statuses if s >= 300]
        assert len(failed) == len(transient)
        # Every batch was accepted exactly once: no event twice, none lost.
        assert all(count == 1 for count in delivered(peer).values())
        status = await asyncio.to_thread(relay.get_json, "/v1/status")
        assert status["sinks"]["tempo"]["retries"] == len(transient)
        assert status["sinks"]["tempo"]["dead_lettered"] == 0
    finally:
        await asyncio.to_thread(relay.stop)


async def test_a_poison_event_alone_is_dead_lettered(tmp_path: Path, peer: ScriptedServer) -> None:
    def refuse_poison(received: Received) -> Answer | None:
        if "poison" in models(received):
            return Answer(400, b"span 3: invalid attribute", content_type="text/plain")
        return None

    peer.check = refuse_poison
    relay = relay_with(tmp_path, peer.url + "/v1/traces", RELAY_TEMPO_BATCH_SIZE="64")
    await asyncio.to_thread(relay.start)
    try:
        body = orjson.loads(spans(20))
        poison = orjson.loads(spans(1, "poison"))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        body["resourceSpans"][0]["scopeSpans"][0]["spans"].insert(7, poison)
        await asyncio.to_thread(post, relay, orjson.dumps(body))
        await eventually(lambda: len(accepted_ids(relay)) == 21, message="21 events in file sink")
        ids = accepted_ids(relay)
        dead_letters = tmp_path / "data" / "dead-letter" / "tempo.jsonl"
        await eventually(dead_letters.exists, message="a dead-letter file")
        (line,) = dead_letters.read_text().splitlines()
        record = orjson.loads(line)
        assert record["reason"] == "rejected"
        assert "span 3: invalid attribute" in record["error"]
        assert record["event"]["request_model"] == "poison"
        await eventually(
            lambda: set(delivered(peer)) == ids - {record["event"]["event_id"]},
            message="every other event at Tempo",
        )
    finally:
        await asyncio.to_thread(relay.stop)


async def test_413_splits_until_batches_fit(tmp_path: Path, peer: ScriptedServer) -> None:
    peer.check = lambda received: Answer(413) if len(event_ids(received)) > 8 else None
    relay = relay_with(tmp_path, peer.url + "/v1/traces", RELAY_TEMPO_BATCH_SIZE="50")
    await asyncio.to_thread(relay.start)
    try:
        await asyncio.to_thread(post, relay, spans(50))
        await eventually(lambda: len(accepted_ids(relay)) == 50, message="50 events in file sink")
        ids = accepted_ids(relay)
        await eventually(lambda: set(delivered(peer)) == ids, message="all 50 events at Tempo")
        assert all(count == 1 for count in delivered(peer).values())
        assert not (tmp_path / "data" / "dead-letter" / "tempo.jsonl").exists()
    finally:
        await asyncio.to_thread(relay.stop)


async def test_retry_after_is_honoured(tmp_path: Path, peer: ScriptedServer) -> None:
    peer.answer_next(Answer(429, headers={"Retry-After": "2"}))
    relay = relay_with(tmp_path, peer.url + "/v1/traces")
    await asyncio.to_thread(relay.start)
    try:
        await asyncio.to_thread(post, relay, spans(3))
        await eventually(lambda: len(peer.requests) >= 2, message="a second try")
        first, second = peer.requests[:2]
        assert second.at - first.at >= 2.0
        assert event_ids(first) == event_ids(second)
    finally:
        await asyncio.to_thread(relay.stop)


async def test_retries_end_in_dead_letters_after_max_retry_time(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    peer.default = Answer(503)
    relay = relay_with(tmp_path, peer.url + "/v1/traces", RELAY_TEMPO_MAX_RETRY_TIME="2")
    await asyncio.to_thread(relay.start)
    try:
        await asyncio.to_thread(post, relay, spans(4))
        dead_letters = tmp_path / "data" / "dead-letter" / "tempo.jsonl"
        await eventually(
            lambda: dead_letters.exists() and len(dead_letters.read_text().splitlines()) == 4,
            message="4 dead letters",
        )
        reasons = {orjson.loads(line)["reason"] for line in dead_letters.read_text().splitlines()}
        assert reasons == {"retries_exhausted"}
        assert len(peer.requests) >= 2
        counted = (
            'relay_sink_dead_lettered_events_total{reason="retries_exhausted",sink="tempo"} 4.0'
        )

        def count_shown() -> str | None:  # the relay is another process: a blocking GET is fine
            text = relay.request("GET", "/metrics").data.decode()
            return text if counted in text else None

        # The count is booked just after the file write: wait for it rather than race it.
        await eventually(count_shown, message="the dead letters counted")
    finally:
        await asyncio.to_thread(relay.stop)


async def test_kill_9_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Sink down, events acknowledged, kill -9, restart with the sink back: all arrive."""
    port = free_port()  # nothing listens yet: the Tempo sink is down
    relay = relay_with(tmp_path, f"http://127.0.0.1:{port}/v1/traces")
    await asyncio.to_thread(relay.start)
    acknowledged: list[bytes] = []
    for _ in range(20):
        body = spans(5)
        await asyncio.to_thread(post, relay, body)
        acknowledged.append(body)
    await asyncio.to_thread(relay.kill)

    peer = ScriptedServer(default=OK)
    peer.port = port
    await peer.start()
    try:
        await asyncio.to_thread(relay.start)
        expected = {span_id for body in acknowledged for span_id in span_ids(body)}
        await eventually(
            lambda: {e["span_id"] for e in relay.events()} >= expected, message="file sink complete"
        )
        ids = {e["event_id"] for e in relay.events() if e["span_id"] in expected}
        await eventually(lambda: set(delivered(peer)) >= ids, timeout=30, message="Tempo complete")
        # Tempo was down before the crash, so nothing reached it twice; at-least-once would
        # allow duplicates of batches that were in flight, and there were none.
        assert all(count == 1 for count in delivered(peer).values())
    finally:
        await asyncio.to_thread(relay.stop)
        await peer.stop()


async def test_a_hanging_sink_does_not_hold_back_another(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    peer.hold()
    relay = relay_with(tmp_path, peer.url + "/v1/traces", RELAY_TEMPO_TIMEOUT="30")
    await asyncio.to_thread(relay.start)
    try:
        for _ in range(20):
            await asyncio.to_thread(post, relay, spans(10))
        await eventually(lambda: len(accepted_ids(relay)) == 200, message="file sink keeps up")
        # The file sink writes a batch before the spool records it sent: wait for that too.
        status = await eventually(
            lambda: (
                (state := relay.get_json("/v1/status"))["sinks"]["file"]["backlog"] == 0 and state
            ),
            message="the file sink's cursor",
        )
        assert status["sinks"]["file"]["backlog"] == 0
        assert status["sinks"]["tempo"]["backlog"] > 0
        assert status["sinks"]["tempo"]["sent"] == 0
        peer.release()
        ids = accepted_ids(relay)
        await eventually(lambda: set(delivered(peer)) == ids, message="Tempo catches up")
    finally:
        peer.release()
        await asyncio.to_thread(relay.stop)


async def test_full_spool_answers_503_and_keeps_what_it_accepted(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    peer.hold()
    relay = relay_with(
        tmp_path,
        peer.url + "/v1/traces",
        RELAY_SPOOL_MAX_BYTES=str(256 * 1024),
        RELAY_SINKS="tempo",
    )
    await asyncio.to_thread(relay.start)
    try:
        accepted: list[str] = []
        refusal = None
        for _ in range(200):
            body = spans(10)
            response = await asyncio.to_thread(relay.request, "POST", "/v1/traces", body, JSON)
            if response.status == 503:
                refusal = response
                break
            assert response.status == 200
            accepted.extend(
                s["spanId"]
                for s in orjson.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"]
            )
        assert refusal is not None, "the spool never filled"
        assert refusal.headers["Retry-After"].isdigit()
        assert b"spool is full" in refusal.data
        ready = await asyncio.to_thread(relay.request, "GET", "/readyz")
        assert ready.status == 503
        peer.release()

        await eventually(
            lambda: len(delivered(peer)) == len(accepted), timeout=30, message="all delivered"
        )
        await eventually(
            lambda: relay.request("GET", "/readyz").status == 200, message="ready again"
        )
    finally:
        peer.release()
        await asyncio.to_thread(relay.stop)
