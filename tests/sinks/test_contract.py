"""The same contract for every sink, as the Collector's consume-contract checker states it.

Each sink (every OTLP preset and Datadog's modes included) runs behind the real dispatcher and
spool, against a scripted peer on loopback:
- with N events and injected transient errors, tries == batches + errors and every event is
  delivered exactly once;
- a permanent error is never retried and dead-letters the batch;
- events older than the sink's limit are dropped and counted, not sent;
- shutdown interrupts a backoff wait and leaves the batch in the spool;
- default configuration is valid; start, close twice, close without start.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest

from foundation.settings import EnvReader
from foundation.times import now
from schemas import LLMEvent
from sinks.base import Batch, DispatchSettings, Sink, SinkNotStartedError
from sinks.dead_letters import DeadLetters
from sinks.dispatcher import Dispatcher
from sinks.otlp_presets import PRESETS, Preset
from sinks.registry import sink_specs
from sinks.spool import Spool
from telemetry.metrics import Metrics
from tests.helpers.otlp_peer import OK as OTLP_OK
from tests.helpers.otlp_peer import event_ids as otlp_event_ids
from tests.helpers.payloads import stored_event
from tests.helpers.scripted_server import Answer, Received, ScriptedServer
from tests.helpers.waiting import eventually
from tests.sinks.datadog_intake import install

API_KEY = "contract-test-key"


def datadog_event_ids(received: Received) -> list[str]:
    spans = orjson.loads(received.body)["data"]["attributes"]["spans"]
    return [span["meta"]["metadata"]["event_id"] for span in spans]


@dataclass(frozen=True)
class Peer:
    name: str
    env: Callable[[str], dict[str, str]]
    prepare: Callable[[ScriptedServer], object]
    event_ids: Callable[[Received], list[str]]
    spec: str = ""  # the sink spec, when not ``name``


def preset_env(preset: Preset, url: str | None = None) -> dict[str, str]:
    """Every setting of a preset set (secrets to recognisable values), its endpoint at ``url``."""
    prefix = f"RELAY_{preset.name.upper()}_"
    endpoint = f"{url or 'http://127.0.0.1:9'}/v1/traces"
    env = {
        prefix + s.key: (url or "http://127.0.0.1:9")
        if s.kind == "url"
        else f"{'secret' if s.secret else 'value'}-{s.key}"
        for s in preset.settings
    }
    if url is not None or preset.endpoint is None:
        env[prefix + "ENDPOINT"] = endpoint
    return env


def otlp_peer(name: str, env: Callable[[str], dict[str, str]], spec: str = "") -> Peer:
    ok = lambda server: setattr(server, "default", OTLP_OK)  # noqa: E731
    return Peer(name, env, ok, otlp_event_ids, spec)


def preset_peer(preset: Preset) -> Peer:
    return otlp_peer(preset.name, lambda url: preset_env(preset, url))


PEERS = [
    otlp_peer("otlp", lambda url: {"RELAY_OTLP_ENDPOINT": url + "/v1/traces"}),
    *(preset_peer(preset) for preset in PRESETS),
    Peer(
        "datadog",
        lambda url: {
            "DD_API_KEY": API_KEY,
            "DD_LLMOBS_ML_APP": "contract",
            "RELAY_DATADOG_URL": url,
        },
        lambda server: install(server, API_KEY),
        datadog_event_ids,
    ),
    otlp_peer(
        "datadog-otlp",
        lambda url: {
            "DD_API_KEY": API_KEY,
            "DD_LLMOBS_ML_APP": "contract",
            "RELAY_DATADOG_MODE": "otlp",
            "RELAY_DATADOG_URL": url,
        },
        spec="datadog",
    ),
]


def event(index: int, start: str = "") -> LLMEvent:
    _, at = now()
    return {
        "schema": "llm-event/1",
        "event_id": f"contract-{index:05d}",
        "received_at": at,
        "source": {"format": "native", "gateway": "tests", "test": False, "tenant": None},
        "trace_id": f"{index + 1:032x}",
        "span_id": f"{index + 1:016x}",
        "start_time": start or at,
        "end_time": start or at,
        "duration_ms": 0.0,
        "operation": "chat",
        "request_model": "gpt-4o",
        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
        "cost": {"currency": "USD", "source": "unknown"},
        "status": "ok",
    }


@dataclass
class Harness:
    server: ScriptedServer
    peer: Peer
    spool: Spool
    dispatcher: Dispatcher
    dead_letters: DeadLetters

    def delivered(self) -> list[str]:
        ids: list[str] = []
        for received, status in zip(self.server.requests, self.server.statuses, strict=False):
            if 200 <= status < 300:
                ids.extend(self.peer.event_ids(received))
        return ids

    async def put(self, events: list[LLMEvent]) -> None:
        await self.spool.append([orjson.dumps(e) for e in events])


def build_sink(peer: Peer, url: str, tmp_path: Path) -> tuple[Sink, DispatchSettings]:
    spec = sink_specs()[peer.spec or peer.name]
    env = EnvReader(peer.env(url))
    dispatch = spec.dispatch_settings(env)
    config = spec.read_config(env, tmp_path, dispatch)
    assert env.problems == []
    return spec.build(config), dispatch


@pytest.fixture(params=PEERS, ids=[p.name for p in PEERS])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    peer: Peer = request.param
    server = await ScriptedServer().start()
    peer.prepare(server)
    sink, defaults = build_sink(peer, server.url, tmp_path)
    settings = replace(
        defaults, batch_size=10, flush_interval=0.01, initial_backoff=0.01, max_backoff=0.05
    )
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 30, [sink.name])
    await spool.open()
    dead_letters = DeadLetters(tmp_path / "dead-letter")
    dispatcher = Dispatcher(sink, settings, spool, dead_letters, Metrics())
    await sink.start()
    try:
        yield Harness(server, peer, spool, dispatcher, dead_letters)
    finally:
        await dispatcher.stop(1.0)
        await sink.close()
        await spool.close()
        dead_letters.close()
        await server.stop()


async def test_exact_tries_under_transient_errors(harness: Harness) -> None:
    randomness = random.Random(7)
    errors = [Answer(randomness.choice([429, 502, 503, 504])) for _ in range(9)]
    harness.server.answer_next(*errors)
    events = [event(i) for i in range(100)]
    await harness.put(events)
    harness.dispatcher.start()
    await harness.spool.wait_resolved(harness.dispatcher.name)
    assert sorted(harness.delivered()) == sorted(e["event_id"] for e in events)
    batches = len(harness.server.requests) - len(errors)
    assert batches == 10  # 100 events in batches of 10, each accepted once
    assert harness.dispatcher.status.retries == len(errors)
    assert harness.dispatcher.status.dead_lettered == 0


async def test_permanent_error_is_not_retried(harness: Harness) -> None:
    harness.server.check = lambda received: Answer(400, b'{"errors":["Bad Request"]}')
    await harness.put([event(i) for i in range(5)])
    harness.dispatcher.start()
    await harness.spool.wait_resolved(harness.dispatcher.name)
    # Bisected down to single events, each part tried once: 2n - 1 requests, no retry.
    assert len(harness.server.requests) == 2 * 5 - 1
    assert harness.dispatcher.status.retries == 0
    path = harness.dead_letters.path(harness.dispatcher.name)
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"]["event_id"] for line in lines] == [f"contract-{i:05d}" for i in range(5)]
    assert {line["reason"] for line in lines} == {"rejected"}


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_keep_the_events_until_fixed(
    harness: Harness, status: int
) -> None:
    """A key fixed later still delivers everything: nothing is dead-lettered meanwhile."""
    harness.server.check = lambda received: Answer(status, b'{"errors":["Forbidden"]}')
    events = [event(i) for i in range(5)]
    await harness.put(events)
    harness.dispatcher.start()
    await eventually(lambda: harness.dispatcher.status.retries >= 3, message="three retries")
    assert harness.spool.backlog(harness.dispatcher.name) == len(events)
    assert not harness.dead_letters.path(harness.dispatcher.name).exists()
    harness.server.check = None  # the key is fixed
    await harness.spool.wait_resolved(harness.dispatcher.name)
    assert sorted(harness.delivered()) == sorted(e["event_id"] for e in events)
    assert harness.dispatcher.status.dead_lettered == 0


async def test_too_old_events_go_to_dead_letters(harness: Harness) -> None:
    harness.dispatcher.settings = replace(harness.dispatcher.settings, max_event_age=3600.0)
    await harness.put([event(0, start="2020-01-01T00:00:00.000000000Z"), event(1)])
    harness.dispatcher.start()
    await harness.spool.wait_resolved(harness.dispatcher.name)
    assert harness.delivered() == ["contract-00001"]
    path = harness.dead_letters.path(harness.dispatcher.name)
    (line,) = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert (line["reason"], line["event"]["event_id"]) == ("too_old", "contract-00000")


async def test_shutdown_interrupts_backoff_and_keeps_the_batch(harness: Harness) -> None:
    harness.server.default = Answer(503, headers={"Retry-After": "60"})
    harness.server.check = None
    await harness.put([event(i) for i in range(3)])
    harness.dispatcher.start()
    await eventually(lambda: len(harness.server.requests) >= 1, message="a first try")
    started = asyncio.get_running_loop().time()
    await harness.dispatcher.stop(5.0)
    assert asyncio.get_running_loop().time() - started < 2.0
    assert harness.spool.backlog(harness.dispatcher.name) == 3


def minimal_env(name: str) -> dict[str, str]:
    """The least a sink needs to start: nothing for most, credentials for some."""
    presets = {preset.name: preset for preset in PRESETS}
    if name in presets:
        return preset_env(presets[name])
    return {"datadog": {"DD_API_KEY": API_KEY, "DD_LLMOBS_ML_APP": "contract"}}.get(name, {})


@pytest.mark.parametrize("name", sorted(sink_specs()))
async def test_lifecycle_and_default_config(name: str, tmp_path: Path) -> None:
    spec = sink_specs()[name]
    minimal = minimal_env(name)
    env = EnvReader(minimal)
    config = spec.read_config(env, tmp_path, spec.dispatch_settings(env))
    assert env.problems == []
    assert isinstance(config.describe(), dict)
    described = orjson.dumps(config.describe()).decode()
    assert API_KEY not in described
    assert "secret-" not in described  # every credential masked
    never_started = spec.build(config)
    with pytest.raises(SinkNotStartedError, match=name):
        await never_started.send(Batch.of([stored_event(1)]))
    await never_started.close()
    await never_started.close()
    sink = spec.build(config)
    await sink.start()
    await sink.close()
    await sink.close()
    assert sink.name == name
    with pytest.raises(SinkNotStartedError):  # nor after close
        await sink.send(Batch.of([stored_event(1)]))


def test_every_preset_is_a_sink_of_its_own() -> None:
    assert {preset.name for preset in PRESETS} <= set(sink_specs())
    assert {peer.name for peer in PEERS} >= {preset.name for preset in PRESETS}
