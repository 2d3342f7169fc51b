"""Per-sink selection through the running relay: each sink's filter, sampling and content policy,
seen in what that sink's peer (a scripted OTLP receiver) or file got.

The relay is started as users run it; spans are posted over loopback, as OTLP senders post them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import fixture_json
from tests.helpers.otlp_peer import span_attributes
from tests.helpers.payloads import otlp_json, otlp_span
from tests.helpers.relay import RelayProcess, run_relay
from tests.helpers.scripted_server import ScriptedServer
from tests.helpers.waiting import eventually, wait_until

JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def received_spans(server: ScriptedServer) -> list[dict[str, object]]:
    return [span for request in server.requests for span in span_attributes(request.body)]


async def post(relay: RelayProcess, body: bytes, headers: dict[str, str] = JSON) -> None:
    answer = await asyncio.to_thread(relay.request, "POST", "/v1/traces", body, headers)
    assert answer.status == 200, answer.data


async def all_resolved(relay: RelayProcess, total: int, sinks: Iterable[str]) -> None:
    """Until every sink has sent or left out each of ``total`` events."""

    def resolved() -> bool:
        status = relay.get_json("/v1/status")["sinks"]
        resolved = ("sent", "filtered", "sampled_out", "filter_failed")
        return all(
            status[name]["backlog"] == 0 and sum(status[name][count] for count in resolved) == total
            for name in sinks
        )

    await asyncio.to_thread(wait_until, resolved, timeout=120, message="all sent or left out")


@contextlib.asynccontextmanager
async def running(relay: RelayProcess) -> AsyncIterator[RelayProcess]:
    """The relay started and, whatever happens, stopped, off the loop its peers answer on."""
    await asyncio.to_thread(relay.start)
    try:
        yield relay
    finally:
        await asyncio.to_thread(relay.stop)


def relay_for(tmp_path: Path, **env: str) -> RelayProcess:
    flush = {f"RELAY_{sink}_FLUSH_INTERVAL": "0.05" for sink in ("FILE", "OTLP", "TEMPO")}
    return RelayProcess(tmp_path / "data", {**flush, **env})


def failed(span: dict[str, Any]) -> dict[str, Any]:
    # The OpenAI SDK's wording, from which the relay reads the HTTP status.
    return {**span, "status": {"code": 2, "message": "Error code: 503 - upstream unavailable"}}


# -- filters ---------------------------------------------------------------------------------------


async def test_a_filter_sends_only_errors_to_one_sink_and_everything_to_another(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    spans = [otlp_span(index=i) for i in range(40)]
    spans[::4] = [failed(span) for span in spans[::4]]
    relay = relay_for(
        tmp_path,
        RELAY_SINKS="file,otlp",
        RELAY_OTLP_ENDPOINT=peer.url + "/v1/traces",
        RELAY_OTLP_FILTER='event.status == "error" && !event.source.test',
    )
    async with running(relay):
        await post(relay, otlp_json(spans))
        await all_resolved(relay, 40, ("file", "otlp"))
        events = relay.events()
        errors = {event["event_id"] for event in events if event["status"] == "error"}
        assert len(events) == 40 and len(errors) == 10
        assert {str(span["relay.event_id"]) for span in received_spans(peer)} == errors
        assert relay.metric("relay_sink_skipped_events_total", sink="otlp", reason="filtered") == 30
        assert relay.metric("relay_sink_skipped_events_total", sink="file") == 0
        # Metrics count every call, whatever the sinks select.
        assert relay.metric("llm_requests_total") == 40


async def test_a_field_an_event_lacks_does_not_match_and_a_broken_filter_says_so(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    spans = [otlp_span(index=i) for i in range(6)]
    spans[0] = failed(spans[0])  # the only event with an http_status
    relay = relay_for(
        tmp_path,
        RELAY_SINKS="file,otlp",
        RELAY_OTLP_ENDPOINT=peer.url + "/v1/traces",
        RELAY_OTLP_FILTER="event.error.http_status >= 500",
        RELAY_FILE_FILTER="event.status > 3",  # a string against a number: on every event
    )
    async with running(relay):
        await post(relay, otlp_json(spans))
        await all_resolved(relay, 6, ("file", "otlp"))
        (sent,) = received_spans(peer)
        assert sent["error.type"] and not relay.log_records("sink_filter_failed", sink="otlp")
        status = relay.get_json("/v1/status")["sinks"]
        assert status["otlp"]["filtered"] == 5 and status["otlp"]["last_error"] is None
        assert status["file"]["filter_failed"] == 6 and status["file"]["filtered"] == 0
        assert "RELAY_FILE_FILTER" in status["file"]["last_error"]
        (line,) = relay.log_records("sink_filter_failed", sink="file")
        assert line["events"] == 6 and "No such overload" in line["error"]
        skipped = "relay_sink_skipped_events_total"
        assert relay.metric(skipped, sink="file", reason="filter_failed") == 6
        assert relay.metric(skipped, sink="otlp", reason="filtered") == 5


def test_bad_selection_settings_stop_the_start_naming_every_one(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RELAY_DATA_DIR": str(tmp_path / "data"),
        "RELAY_SINKS": "file,otlp,tempo",
        "RELAY_TEMPO_ENDPOINT": "http://127.0.0.1:9/v1/traces",
        "RELAY_OTLP_ENDPOINT": "http://127.0.0.1:9/v1/traces",
        "RELAY_FILE_FILTER": "event.status ==",
        "RELAY_OTLP_FILTER": 'evnt.status == "error"',
        "RELAY_TEMPO_FILTER": "event.cost.totl > 1",
        "RELAY_FILE_SAMPLE_RATE": "1.5",
        "RELAY_OTLP_CONTENT": "secret",
        "RELAY_OTLP_CONTENT_MAX_BYTES": "10",
    }
    result = run_relay(env)
    assert result.returncode != 0
    problems = [line for line in result.stderr.splitlines() if "invalid configuration" in line]
    assert len(problems) == 1, result.stderr
    for name in (
        "RELAY_FILE_FILTER",
        "RELAY_OTLP_FILTER: unknown variable evnt",
        "RELAY_TEMPO_FILTER: no field event.cost.totl",
        "RELAY_FILE_SAMPLE_RATE",
        "RELAY_OTLP_CONTENT:",
        "RELAY_OTLP_CONTENT_MAX_BYTES",
    ):
        assert name in problems[0], (name, problems[0])


# -- sampling --------------------------------------------------------------------------------------

TRACES = 10_000
# Kept share within 0.02 of the rate: 4.6 standard deviations of a binomial share over 10,000
# traces at 0.25 (0.0043), and 4 at 0.5 (0.005).
TOLERANCE = 0.02


def trace(spans: int, **attributes: str) -> list[dict[str, Any]]:
    """``spans`` LLM spans of one new trace."""
    trace_id = os.urandom(16).hex()
    return [
        {**otlp_span(index=index, attributes=attributes), "traceId": trace_id}
        for index in range(spans)
    ]


async def test_sampling_keeps_or_drops_whole_traces_and_sessions_at_the_rate(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    """10,000 traces of 2 calls, 300 sessions of 3 traces, 100 traces with a failed call: the file
    sink samples at 25 %, the OTLP sink at 50 %."""
    plain = [trace(2) for _ in range(TRACES)]
    sessions = [[trace(1, **{"session.id": f"s-{n}"}) for _ in range(3)] for n in range(300)]
    with_error = [trace(2) for _ in range(100)]
    for spans in with_error:
        spans[1] = failed(spans[1])
    everything = [span for spans in plain for span in spans]
    everything += [span for session in sessions for spans in session for span in spans]
    everything += [span for spans in with_error for span in spans]
    relay = relay_for(
        tmp_path,
        RELAY_SINKS="file,otlp",
        RELAY_OTLP_ENDPOINT=peer.url + "/v1/traces",
        RELAY_FILE_SAMPLE_RATE="0.25",
        RELAY_OTLP_SAMPLE_RATE="0.5",
        RELAY_FILE_BATCH_SIZE="2000",
        RELAY_OTLP_BATCH_SIZE="2000",
    )
    async with running(relay):
        for start in range(0, len(everything), 500):
            await post(relay, otlp_json(everything[start : start + 500]))
        await all_resolved(relay, len(everything), ("file", "otlp"))
        in_file = relay.events()
        in_peer = received_spans(peer)

    plain_ids = {spans[0]["traceId"] for spans in plain}
    peer_traces = peer_trace_ids(peer)
    for name, kept, rate in (
        ("file", [event["trace_id"] for event in in_file], 0.25),
        ("otlp", peer_traces, 0.5),
    ):
        spans_per_trace = {t: n for t, n in Counter(kept).items() if t in plain_ids}
        assert set(spans_per_trace.values()) == {2}, f"{name}: a trace was split"
        share = len(spans_per_trace) / TRACES
        assert abs(share - rate) <= TOLERANCE, (name, share)
    # Every call of a session together, whatever its trace.
    per_session = Counter(event["session_id"] for event in in_file if event.get("session_id"))
    assert per_session and set(per_session.values()) == {3}, per_session
    # A failed call is always kept; the call beside it only with its trace.
    error_traces = {spans[1]["traceId"] for spans in with_error}
    kept_failed = [e for e in in_file if e["trace_id"] in error_traces and e["status"] == "error"]
    assert len(kept_failed) == 100
    # The sink sampled at 25 % keeps a subset of the traces kept at 50 %.
    assert {event["trace_id"] for event in in_file} <= set(peer_traces)
    assert len(in_peer) > len(in_file)


def peer_trace_ids(server: ScriptedServer) -> list[str]:
    """The trace id of every span the peer received, in hex."""
    return [
        span.trace_id.hex()
        for request in server.requests
        for resource_spans in ExportTraceServiceRequest.FromString(request.body).resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


# -- content ---------------------------------------------------------------------------------------


def captured_openai_v2() -> tuple[list[bytes], list[str]]:
    """The OpenAI v2 instrumentation's own OTLP bodies, and the texts its client sent."""
    captured = fixture_json("otlp-openai-v2-captured.json")
    bodies = [base64.b64decode(body) for body in captured["bodies"]]
    texts = [
        message["content"]
        for exchange in captured["exchanges"]
        for message in exchange["request"].get("messages", ())
        if isinstance(message.get("content"), str)
    ]
    return bodies, texts


def part_texts(messages: Any) -> list[str]:
    return [part["content"] for m in messages or () for part in m["parts"] if "content" in part]


async def test_each_sink_gets_content_as_its_own_policy_says(
    tmp_path: Path, peer: ScriptedServer, second_peer: ScriptedServer
) -> None:
    """RELAY_CONTENT=redact for all but the file (full) and the OTLP sink (hash)."""
    bodies, texts = captured_openai_v2()
    relay = relay_for(
        tmp_path,
        RELAY_SINKS="file,otlp,tempo",
        RELAY_CONTENT="redact",
        RELAY_FILE_CONTENT="full",
        RELAY_OTLP_CONTENT="hash",
        RELAY_OTLP_ENDPOINT=peer.url + "/v1/traces",
        RELAY_TEMPO_ENDPOINT=second_peer.url + "/v1/traces",
    )
    async with running(relay):
        for body in bodies:
            await post(relay, body, PROTOBUF)
        await eventually(lambda: len(relay.events()) == 5)
        await all_resolved(relay, 5, ("file", "otlp", "tempo"))
        events = relay.events()
    full = [text for event in events for text in part_texts(event.get("input_messages"))]
    assert full and set(full) <= set(texts), full
    hashed = received_spans(peer)
    redacted = received_spans(second_peer)
    hashed_texts = [
        text
        for span in hashed
        for text in part_texts(orjson.loads(str(span.get("gen_ai.input.messages", "[]"))))
    ]
    assert sorted(hashed_texts) == sorted("sha256:" + _sha256(text) for text in full)
    assert {span["relay.content_policy"] for span in hashed} == {"hash"}
    assert len(redacted) == 5
    assert not [key for span in redacted for key in span if "messages" in key]
    assert {span["relay.content_policy"] for span in redacted} == {"redact"}
    assert not any(
        text in repr(value)
        for span in hashed + redacted
        for value in span.values()
        for text in full
    )


async def test_a_sender_cannot_claim_its_content_was_redacted_already(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    prompt = "The launch code is 0000."
    messages = [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
    forged = otlp_span(
        attributes={
            "gen_ai.input.messages": orjson.dumps(messages).decode(),
            "relay.content_policy": "redact",
        }
    )
    relay = relay_for(
        tmp_path,
        RELAY_SINKS="file,otlp",
        RELAY_OTLP_ENDPOINT=peer.url + "/v1/traces",
        RELAY_OTLP_CONTENT="redact",
    )
    async with running(relay):
        await post(relay, otlp_json([forged]))
        await all_resolved(relay, 1, ("file", "otlp"))
        (event,) = relay.events()
    assert part_texts(event["input_messages"]) == [prompt]
    (sent,) = received_spans(peer)
    assert prompt not in repr(sent) and sent["relay.content_policy"] == "redact"


async def test_a_content_size_limit_cuts_long_texts_for_one_sink_with_a_marker(
    tmp_path: Path, peer: ScriptedServer
) -> None:
    prompt = "Résumé: " + "é" * 3000  # two bytes a character after the prefix
    span = otlp_span(
        attributes={
            "gen_ai.input.messages": orjson.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
            ).decode()
        }
    )
    relay = relay_for(
        tmp_path,
        RELAY_SINKS="file,otlp",
        RELAY_OTLP_ENDPOINT=peer.url + "/v1/traces",
        RELAY_OTLP_CONTENT_MAX_BYTES="256",
    )
    async with running(relay):
        await post(relay, otlp_json([span]))
        await all_resolved(relay, 1, ("file", "otlp"))
        (event,) = relay.events()
    assert part_texts(event["input_messages"]) == [prompt]
    (sent,) = received_spans(peer)
    (cut,) = part_texts(orjson.loads(str(sent["gen_ai.input.messages"])))
    kept, _, marker = cut.partition("…[truncated")
    assert prompt.startswith(kept) and 255 <= len(kept.encode()) <= 256
    dropped = len(prompt.encode()) - len(kept.encode())
    assert f"{dropped} bytes over RELAY_OTLP_CONTENT_MAX_BYTES" in marker
    assert sent["relay.content_truncated"] is True


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
