"""The restart/kill oracle: an event the relay answered 2xx to is never lost, whatever happens.

Each scenario runs the relay as users do (a subprocess on loopback), posts OTLP spans, records
exactly which were acknowledged (a 2xx answer; a 503 when the spool is full or closing, or a
connection reset by a kill acknowledges nothing, and those events may or may not arrive), stops
the relay many times, with ``kill -9`` or SIGTERM, and restarts it on the same
``RELAY_DATA_DIR``. Then the oracle (``tests.helpers.oracle``) checks the promise from outside:

- every acknowledged event is in the file sink's output, and was accepted (2xx) by the Tempo peer,
  or is in that sink's dead-letter file ``dead-letter/<sink>.jsonl``;
- duplicates (at least once) stay within what the stops can explain: one in-flight batch per sink
  and worker process at each stop;
- nothing arrives that nobody sent, no file-sink line is torn, and every request gets a clear
  answer (2xx or 503), never a hang.

A failure names the scenario, the sink, how many acknowledged events were lost and a few of their
span ids. The random choices (pauses, kill moments, the peer's errors) come from one seed per test,
printed in the failure; ``ORACLE_SEED=<n>`` replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import orjson
import pytest
import urllib3

from tests.helpers.oracle import (
    Attempt,
    FlakyPeer,
    Ledger,
    Oracle,
    PeerTally,
    StopKind,
    post_spans,
    post_until,
    read_dead_letters,
    read_file_sink,
    relay_errors,
    start_relay,
    stop_relay,
)
from tests.helpers.otlp_peer import OK
from tests.helpers.relay import RelayProcess
from tests.helpers.scripted_server import ScriptedServer
from tests.helpers.tmpfs import small_tmpfs
from tests.helpers.waiting import eventually

BATCH: Final = 25
# How many times longer the restart loops run: 1 in `make test`, more in `make oracle`.
SCALE: Final = max(1, int(os.environ.get("ORACLE_SCALE") or 1))
# Fast retries and a short grace, so that many stops and restarts fit in a few seconds each.
FAST: Final = {
    "RELAY_SHUTDOWN_GRACE": "1",
    "RELAY_FILE_FLUSH_INTERVAL": "0.05",
    "RELAY_FILE_BATCH_SIZE": str(BATCH),
    "RELAY_FILE_INITIAL_BACKOFF": "0.02",
    "RELAY_FILE_MAX_BACKOFF": "0.2",
    "RELAY_TEMPO_FLUSH_INTERVAL": "0.05",
    "RELAY_TEMPO_BATCH_SIZE": str(BATCH),
    "RELAY_TEMPO_INITIAL_BACKOFF": "0.02",
    "RELAY_TEMPO_MAX_BACKOFF": "0.2",
    # Well above the peer's slow answers: a retry is then always the relay's own choice.
    "RELAY_TEMPO_TIMEOUT": "5",
}
BATCHES: Final = {"file": BATCH, "tempo": BATCH}


def file_and_tempo(peer: ScriptedServer, **settings: str) -> dict[str, str]:
    """The relay's environment with the file sink and a Tempo sink pointing at ``peer``."""
    return {
        **FAST,
        "RELAY_SINKS": "file,tempo",
        "RELAY_TEMPO_ENDPOINT": peer.url + "/v1/traces",
        **settings,
    }


class SeededRandom(random.Random):
    """A test's source of random choices, remembering its seed for the failure message."""

    def __init__(self, origin: int) -> None:
        super().__init__(origin)
        self.origin = origin


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> SeededRandom:
    seed = int(os.environ.get("ORACLE_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"{request.node.name}: ORACLE_SEED={seed}")
    return SeededRandom(seed)


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedServer]:
    """A Tempo stand-in, not yet listening: a test starts it when the sink should be up (unlike
    the shared ``peer`` of ``tests/conftest.py``, which listens from the start)."""
    server = ScriptedServer(default=OK)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    pool = urllib3.PoolManager(retries=False)
    try:
        yield pool
    finally:
        pool.clear()


def seeded(rng: SeededRandom, scenario: str) -> str:
    return f"{scenario}, ORACLE_SEED={rng.origin}"


async def finish(relay: RelayProcess, oracle: Oracle) -> None:
    """Clean up a relay whatever state a failed test left it in; show what happened."""
    print(f"[{oracle.scenario}]", oracle.describe(oracle.outcome()))
    for line in relay_errors(relay):
        print("relay:", line)
    await asyncio.to_thread(relay.kill_all)


async def post(http: urllib3.PoolManager, relay: RelayProcess, oracle: Oracle, count: int) -> None:
    """One request the relay must acknowledge (it is up and idle)."""
    attempt = await asyncio.to_thread(post_spans, http, relay.url, oracle.ledger, count)
    assert attempt.acknowledged, f"[{oracle.scenario}] an idle relay refused a request: {attempt}"


async def test_restart_after_every_sink_caught_up(
    tmp_path: Path, http: urllib3.PoolManager
) -> None:
    """Events posted after a restart on a fully drained spool still reach the sink."""
    ledger = Ledger()
    relay = RelayProcess(tmp_path / "data", {**FAST, "RELAY_SINKS": "file"})
    oracle = Oracle("restart after every sink caught up", ledger, relay.data_dir, ["file"], BATCHES)
    try:
        await start_relay(relay, ledger)
        for _ in range(3):
            await post(http, relay, oracle, 1)
        await oracle.verify(5, "3 events before any restart")
        await stop_relay(relay, ledger, "SIGTERM")
        await start_relay(relay, ledger)
        for _ in range(2):
            await post(http, relay, oracle, 1)
        await oracle.verify(5, "2 events posted after a restart")
        await stop_relay(relay, ledger, "SIGTERM")
        await start_relay(relay, ledger)
        await oracle.verify(5, "after a second restart")
        outcome = oracle.outcome()
        assert sum(outcome.delivered["file"].values()) == 5, outcome.delivered["file"]
    finally:
        await finish(relay, oracle)


@pytest.mark.slow
async def test_low_rate_kills_and_restarts_with_a_flaky_tempo(
    tmp_path: Path, peer: ScriptedServer, rng: SeededRandom
) -> None:
    """~20 cycles of a few small requests, then kill -9 or SIGTERM at a random moment."""
    scenario = seeded(rng, "low rate, spool often drained")
    flaky = FlakyPeer(random.Random(rng.random()))
    peer.check = flaky
    await peer.start()
    ledger = Ledger()
    env = file_and_tempo(peer)
    relay = RelayProcess(tmp_path / "data", env)
    tally = PeerTally(peer)
    oracle = Oracle(scenario, ledger, relay.data_dir, ["file", "tempo"], BATCHES, tally)
    try:
        for _ in range(20 * SCALE):
            await start_relay(relay, ledger)
            stop_posting = threading.Event()
            poster = asyncio.create_task(
                asyncio.to_thread(
                    post_until,
                    stop_posting,
                    relay.url,
                    ledger,
                    random.Random(rng.random()),
                    spans=(1, 3),
                    pause=(0.03, 0.15),
                    max_requests=8,
                )
            )
            if rng.random() < 0.3:
                # Let both sinks catch up first: a restart on a drained spool.
                await poster
                await oracle.settle(2)
            else:
                await asyncio.sleep(rng.uniform(0.05, 0.8))
            how: StopKind = rng.choice(("kill -9", "SIGTERM"))
            await stop_relay(relay, ledger, how)
            stop_posting.set()
            await poster
        await start_relay(relay, ledger)
        await oracle.verify(20, "after the last restart")
    finally:
        await finish(relay, oracle)


@pytest.mark.slow
async def test_high_rate_kill_9_mid_stream(
    tmp_path: Path, peer: ScriptedServer, rng: SeededRandom
) -> None:
    """Concurrent posters send bursts; kill -9 lands while they are at it, several times."""
    scenario = seeded(rng, "high rate, kill -9 mid-stream")
    peer.check = FlakyPeer(random.Random(rng.random()), failures=0.2, slow=0.0)
    await peer.start()
    ledger = Ledger()
    batch = 100
    env = file_and_tempo(peer, RELAY_FILE_BATCH_SIZE=str(batch), RELAY_TEMPO_BATCH_SIZE=str(batch))
    relay = RelayProcess(tmp_path / "data", env)
    batches = {"file": batch, "tempo": batch}
    oracle = Oracle(scenario, ledger, relay.data_dir, ["file", "tempo"], batches, PeerTally(peer))
    try:
        for _ in range(5 * SCALE):
            await start_relay(relay, ledger)
            stop_posting = threading.Event()
            posters = [
                asyncio.create_task(
                    asyncio.to_thread(
                        post_until,
                        stop_posting,
                        relay.url,
                        ledger,
                        random.Random(rng.random()),
                        spans=(1, 20),
                        max_requests=250,
                    )
                )
                for _ in range(4)
            ]
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            await stop_relay(relay, ledger, "kill -9")
            stop_posting.set()
            await asyncio.gather(*posters)
        assert ledger.acknowledged(), f"[{scenario}] nothing was acknowledged: {ledger.summary()}"
        await start_relay(relay, ledger)
        await oracle.verify(40, "after the last restart")
    finally:
        await finish(relay, oracle)


@pytest.mark.slow
async def test_fewer_workers_after_a_restart(
    tmp_path: Path, peer: ScriptedServer, http: urllib3.PoolManager, rng: SeededRandom
) -> None:
    """Spools of 2 workers hold Tempo's backlog; the relay comes back with 1 worker."""
    scenario = seeded(rng, "RELAY_WORKERS 2 -> 1, Tempo down then up")
    ledger = Ledger()
    env = file_and_tempo(peer, RELAY_WORKERS="2")  # nothing listens at the peer's port yet
    relay = RelayProcess(tmp_path / "data", env)
    data = relay.data_dir
    oracle = Oracle(scenario, ledger, data, ["file", "tempo"], BATCHES, PeerTally(peer))
    oracle.must_deliver.update(("file", "tempo"))  # both work in the end: no dead letters
    file_only = Oracle(scenario, ledger, data, ["file"], BATCHES)
    try:
        await start_relay(relay, ledger)
        for sent in range(200):
            attempt = await asyncio.to_thread(
                post_spans, http, relay.url, ledger, rng.randint(1, 4), close_connection=True
            )
            assert attempt.acknowledged, f"[{scenario}] a request was refused: {attempt}"
            per_worker = [read_file_sink(data, f"llm-events.w{n}").counts for n in (0, 1)]
            if sent >= 30 and all(per_worker):
                break
        await file_only.verify(5, "both workers wrote their events to their files")
        per_worker = [read_file_sink(data, f"llm-events.w{n}").counts for n in (0, 1)]
        assert all(per_worker), f"[{scenario}] one worker got no request: {per_worker}"
        await stop_relay(relay, ledger, "SIGTERM")

        await peer.start()
        relay.extra_env["RELAY_WORKERS"] = "1"
        await start_relay(relay, ledger)
        oracle.notes.append(
            f"before the restart worker 0 had {sum(per_worker[0].values())} events and worker 1"
            f" {sum(per_worker[1].values())} (file sink)"
        )
        await oracle.verify(15, "after the restart with 1 worker")
    finally:
        await finish(relay, oracle)


@pytest.mark.slow
async def test_a_sink_switched_off_and_on(
    tmp_path: Path, peer: ScriptedServer, http: urllib3.PoolManager, rng: SeededRandom
) -> None:
    """Tempo down, then disabled: what it owed goes to dead letters; replay delivers it."""
    scenario = seeded(rng, "a sink switched off and on")
    ledger = Ledger()
    env = file_and_tempo(peer)
    relay = RelayProcess(tmp_path / "data", env)
    data = relay.data_dir
    tally = PeerTally(peer)
    oracle = Oracle(scenario, ledger, data, ["file", "tempo"], BATCHES, tally)
    file_only = Oracle(scenario, ledger, data, ["file"], BATCHES)
    problems: list[str] = []
    try:
        # 1. Tempo is down: events pile up for it.
        await start_relay(relay, ledger)
        for _ in range(10):
            await post(http, relay, oracle, 3)
        await file_only.verify(5, "Tempo down")
        owed_to_tempo = set(ledger.acknowledged())
        await stop_relay(relay, ledger, "SIGTERM")

        # 2. Tempo switched off: what it still owed must be dead-lettered, not dropped.
        relay.extra_env["RELAY_SINKS"] = "file"
        await start_relay(relay, ledger)
        for _ in range(5):
            await post(http, relay, oracle, 2)
        await file_only.verify(5, "Tempo switched off")

        def missing_dead_letters() -> list[str]:
            return sorted(owed_to_tempo - set(read_dead_letters(data, "tempo").counts))

        try:
            await eventually(
                lambda: not missing_dead_letters(), timeout=5, message="tempo's dead letters"
            )
        except AssertionError:
            missing = missing_dead_letters()
            problems.append(
                f"[{scenario}: Tempo switched off] {len(missing)} of the {len(owed_to_tempo)}"
                f" acknowledged events Tempo still owed are not in dead-letter/tempo.jsonl, e.g."
                f" {', '.join(missing[:5])}"
            )
        await stop_relay(relay, ledger, "SIGTERM")

        # 3. Tempo back, switched on again; the dead letters replayed.
        await peer.start()
        relay.extra_env["RELAY_SINKS"] = "file,tempo"
        tempo_on_again = ledger.cycle + 1
        await start_relay(relay, ledger)
        for _ in range(5):
            await post(http, relay, oracle, 2)
        dead_letters = data / "dead-letter" / "tempo.jsonl"
        replayed = sum(read_dead_letters(data, "tempo").counts.values())
        if dead_letters.exists():
            # As the README says: moved aside first (the relay appends to the live file).
            moved = dead_letters.replace(data / "tempo.replay.jsonl")
            result = await asyncio.to_thread(relay.run_cli, "replay", str(moved))
            if result.returncode != 0:
                problems.append(
                    f"[{scenario}: replay] exit {result.returncode}: {result.stdout}"
                    f" {result.stderr[-1500:]}"
                )
        else:
            problems.append(f"[{scenario}: replay] no {dead_letters} to replay")

        # 4. Tempo owes what was posted while it was enabled, accepted by the peer itself.
        oracle.owed["tempo"] = owed_to_tempo | set(ledger.acknowledged([tempo_on_again]))
        oracle.must_deliver.add("tempo")
        oracle.extra_duplicates["tempo"] = replayed
        outcome = await oracle.settle(15)
        problems.extend(oracle.problems(outcome, "Tempo back and the dead letters replayed"))
        assert not problems, "\n".join(problems)
    finally:
        await finish(relay, oracle)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: a disk that fills up (skipped where it cannot be mounted)."""
    with small_tmpfs(tmp_path / "disk", 16 << 20) as mount_point:
        yield mount_point


def fill(path: Path, leave: int) -> None:
    """A ballast file that takes all but ``leave`` bytes of its filesystem (or all it can)."""
    size = shutil.disk_usage(path.parent).free - leave
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as ballast:
        while size > 0:
            try:
                ballast.write(chunk[: min(size, len(chunk))])
                ballast.flush()
            except OSError:  # ENOSPC: the disk is full to the brim
                break
            size -= len(chunk)


@pytest.mark.slow
async def test_disk_full(
    tmp_path: Path,
    small_disk: Path,
    peer: ScriptedServer,
    http: urllib3.PoolManager,
    rng: SeededRandom,
) -> None:
    """A full disk: clear answers (2xx or 503), then everything acknowledged once it has room."""
    scenario = seeded(rng, "disk full")
    await peer.start()
    ledger = Ledger()
    env = file_and_tempo(peer)
    relay = RelayProcess(small_disk / "data", env)
    relay.log_path = tmp_path / "relay.log"  # the log must not compete for the small disk
    oracle = Oracle(scenario, ledger, relay.data_dir, ["file", "tempo"], BATCHES, PeerTally(peer))
    oracle.must_deliver.update(("file", "tempo"))  # a full disk refuses nothing for good
    ballast = small_disk / "ballast"
    brim = small_disk / "ballast-brim"

    async def answers(count: int) -> Attempt:
        attempt = await asyncio.to_thread(post_spans, http, relay.url, ledger, count)
        assert attempt.status is not None, f"[{scenario}] no clear answer: {attempt.error}"
        assert attempt.status in (200, 503), f"[{scenario}] unclear answer: {attempt}"
        return attempt

    async def readiness() -> int:
        return (await asyncio.to_thread(relay.request, "GET", "/readyz")).status

    try:
        await start_relay(relay, ledger)
        # Tempo holds its answers meanwhile: its backlog stays in the spool, to be acknowledged
        # there while the disk is full.
        peer.hold()
        await asyncio.to_thread(fill, ballast, 1 << 20)
        readiness_while_full: set[int] = set()
        refused = 0
        for _ in range(400):
            if (await answers(20)).status == 503:
                readiness_while_full.add(await readiness())
                refused += 1
                if refused == 5:
                    break
        assert refused, f"[{scenario}] the disk never filled: {ledger.summary()}"
        # Not a byte left; Tempo answers again: the sinks deliver and must record it on a full disk.
        await asyncio.to_thread(fill, brim, 0)
        peer.release()
        await oracle.settle(3)
        for _ in range(3):
            await answers(5)
        oracle.notes.append(f"/readyz answered {sorted(readiness_while_full)} while refusing")
        refusals = [a.error for a in ledger.attempts if a.status == 503]
        oracle.notes.append(f"refusals: {refusals[:2]}")

        ballast.unlink()
        brim.unlink()
        problems = oracle.problems(await oracle.settle(20), "after the ballast was deleted")
        if not relay.running:
            problems.append(f"[{scenario}] the relay exited: {relay.process}")
        else:
            try:
                await eventually(
                    lambda: relay.request("GET", "/readyz").status == 200,
                    timeout=10,
                    message="/readyz 200",
                )
            except AssertionError as error:
                problems.append(f"[{scenario}] not ready again: {error}")
            status = await asyncio.to_thread(relay.get_json, "/v1/status")
            stopped = {name: s for name, s in status["sinks"].items() if not s["running"]}
            if stopped:
                problems.append(
                    f"[{scenario}] sinks no longer running: {orjson.dumps(stopped).decode()}"
                )
        assert not problems, "\n".join(problems)
    finally:
        await finish(relay, oracle)
