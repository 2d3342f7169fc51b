"""What an operator's hands do to a relay's files and ports, and what the relay must say and keep.

Each test runs the relay as users do (a subprocess on loopback) and damages what an operator can:
a second relay on the same data directory, a port already taken, a Tempo endpoint that is the relay
itself, a spool deleted, truncated or bit-flipped, a row that does not decode.
"""

from __future__ import annotations

import base64
import socket
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess, run_relay
from tests.helpers.waiting import wait_until

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "data", {"RELAY_SINKS": "file"})
    try:
        yield process
    finally:
        process.kill()


def post_spans(relay: RelayProcess, count: int) -> set[str]:
    body = otlp_json_spans(count)
    response = relay.request("POST", "/v1/traces", body, JSON)
    assert response.status == 200, response.data
    return set(span_ids(body))


def delivered_spans(relay: RelayProcess) -> set[str]:
    return {event["span_id"] for event in relay.events()}


def metric(relay: RelayProcess, line_start: str) -> float:
    text = relay.request("GET", "/metrics").data.decode()
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(line_start)]
    return float(values[0]) if values else 0.0


def relay_owing_tempo(tmp_path: Path) -> RelayProcess:
    """A relay whose Tempo sink is down, so that the spool keeps every event it takes."""
    down = f"http://127.0.0.1:{free_port()}/v1/traces"
    return RelayProcess(
        tmp_path / "data", {"RELAY_SINKS": "file,tempo", "RELAY_TEMPO_ENDPOINT": down}
    )


def spool_file(relay: RelayProcess) -> Path:
    return relay.data_dir / "spool" / "worker-0.sqlite3"


# -- refused at start, in one line ---------------------------------------------------------------


def test_a_second_relay_on_the_same_data_directory_is_refused(relay: RelayProcess) -> None:
    relay.start()
    second = dict(relay.environment(), RELAY_PORT=str(free_port()))
    result = run_relay(second)
    assert result.returncode == 2
    assert "two relays cannot share one RELAY_DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # The first relay is untouched and still takes events.
    assert post_spans(relay, 1) <= wait_until(lambda: delivered_spans(relay), message="event")


def test_a_port_in_use_gives_one_line_before_the_spool_opens(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        relay = RelayProcess(tmp_path / "data", {"RELAY_PORT": str(port)})
        result = run_relay(relay.environment())
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "spool").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_tempo_endpoint_that_is_the_relay_itself_is_refused(tmp_path: Path, host: str) -> None:
    relay = RelayProcess(tmp_path / "data", {"RELAY_SINKS": "file,tempo"})
    relay.extra_env["RELAY_TEMPO_ENDPOINT"] = f"http://{host}:{relay.port}/v1/traces"
    result = run_relay(relay.environment())
    assert result.returncode == 2
    assert "RELAY_TEMPO_ENDPOINT" in result.stderr
    assert "is this relay itself" in result.stderr


# -- damage while running ------------------------------------------------------------------------


def test_a_data_directory_deleted_while_running_stops_acknowledging(
    relay: RelayProcess,
) -> None:
    relay.start()
    before = post_spans(relay, 2)
    wait_until(lambda: delivered_spans(relay) >= before, message="events before the deletion")
    for path in sorted(relay.data_dir.rglob("*"), reverse=True):
        if path.is_file() and not path.name.startswith("relay-"):  # keep the relay's own log
            path.unlink()
    # Nothing is acknowledged into a file that no longer exists.
    response = relay.request("POST", "/v1/traces", otlp_json_spans(1), JSON)
    assert response.status == 503
    wait_until(lambda: relay.request("GET", "/readyz").status == 503, message="not ready")
    problem = relay.get_json("/v1/status")["spool"]["problem"]
    assert "was deleted while the relay was running" in problem
    assert metric(relay, 'relay_spool_problems_total{problem="files_gone"}') >= 1
    assert relay.request("GET", "/livez").status == 200


# -- damage found at start -----------------------------------------------------------------------


def _garbage_header(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.write(b"\xde\xad\xbe\xef" * 32)


def _truncated(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_garbage_header, _truncated], ids=["garbage", "truncated"])
def test_a_spool_that_cannot_be_read_is_moved_aside_and_traffic_goes_on(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    relay = relay_owing_tempo(tmp_path)
    try:
        relay.start()
        for _ in range(20):  # enough owed rows for the database to span many pages
            post_spans(relay, 50)
        relay.stop()
        damage(spool_file(relay))

        relay.start()
        status = relay.get_json("/v1/status")
        (found,) = status["spool"]["problems_at_start"]
        assert "moved to" in found and "damaged" in found
        assert list((relay.data_dir / "spool" / "damaged").glob("worker-0-*.sqlite3"))
        assert metric(relay, 'relay_spool_problems_total{problem="damaged"}') == 1
        after = post_spans(relay, 3)
        wait_until(lambda: delivered_spans(relay) >= after, message="new events delivered")
    finally:
        relay.kill()


def _wal_deleted(wal: Path) -> None:
    wal.unlink()


def _wal_truncated(wal: Path) -> None:
    with open(wal, "r+b") as handle:
        handle.truncate(wal.stat().st_size // 2)


def _wal_bit_flipped(wal: Path) -> None:
    with open(wal, "r+b") as handle:
        handle.seek(wal.stat().st_size // 3)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize(
    "damage",
    [_wal_deleted, _wal_truncated, _wal_bit_flipped],
    ids=["deleted", "truncated", "bit-flipped"],
)
def test_events_lost_with_a_damaged_wal_are_reported_and_numbering_goes_on(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    relay = relay_owing_tempo(tmp_path)  # kill -9 leaves its events in the WAL only
    try:
        relay.start()
        for _ in range(10):
            post_spans(relay, 5)
        relay.kill()
        wal = spool_file(relay).with_name("worker-0.sqlite3-wal")
        assert wal.stat().st_size > 0
        damage(wal)

        relay.start()
        problems = relay.get_json("/v1/status")["spool"]["problems_at_start"]
        assert any("lost its last commits" in problem for problem in problems), problems
        assert metric(relay, 'relay_spool_problems_total{problem="events_missing"}') >= 1
        # New events are numbered after everything ever acknowledged, and delivered.
        after = post_spans(relay, 3)
        wait_until(lambda: delivered_spans(relay) >= after, message="new events delivered")
        status = relay.get_json("/v1/status")["sinks"]
        assert status["file"]["backlog"] == 0
        assert status["tempo"]["backlog"] >= 3
    finally:
        relay.kill()


def test_a_row_that_does_not_decode_is_dead_lettered_not_retried_forever(
    relay: RelayProcess,
) -> None:
    relay.start()
    relay.stop()
    broken = b'{"schema": "llm-event/1", "event_id": '  # cut short
    with sqlite3.connect(spool_file(relay)) as db:
        (high,) = db.execute("SELECT MAX(seq) FROM cursors").fetchone()
        db.execute("INSERT INTO events VALUES (?, 0, ?)", (high + 1, broken))
    mark = spool_file(relay).with_name("worker-0.sqlite3.seq")
    mark.unlink()  # the relay's own mark would not know of a row added behind its back

    relay.start()
    after = post_spans(relay, 2)
    wait_until(lambda: delivered_spans(relay) >= after, message="later events delivered")
    dead_letters = relay.data_dir / "dead-letter" / "file.jsonl"
    (line,) = [orjson.loads(line) for line in dead_letters.read_bytes().splitlines()]
    assert line["reason"] == "undecodable"
    assert base64.b64decode(line["raw_base64"]) == broken
    assert relay.get_json("/v1/status")["sinks"]["file"]["dead_lettered"] == 1


def test_a_worker_that_dies_stops_the_relay_so_its_spool_is_not_stranded(
    tmp_path: Path,
) -> None:
    """Only worker N reads spool N: if it dies alone, the relay exits for its supervisor."""
    relay = RelayProcess(tmp_path / "data", {"RELAY_SINKS": "file", "RELAY_WORKERS": "2"})
    try:
        relay.start()
        assert relay.process is not None
        workers = psutil.Process(relay.process.pid).children()
        assert len(workers) == 2
        workers[0].kill()
        code = relay.process.wait(30)
        assert code != 0
        assert "worker_exited" in relay.log()
        assert not any(worker.is_running() for worker in workers)
    finally:
        relay.kill_all()
