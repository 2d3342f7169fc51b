"""Stopping the relay loses nothing it could store: SIGTERM turns /readyz 503 while ingest goes on
(RELAY_SHUTDOWN_DELAY), then the socket closes, requests in flight finish and are stored, and the
dispatchers get what is left of RELAY_SHUTDOWN_GRACE. Each test runs the relay as users do (a
subprocess on loopback) and checks every acknowledged event in the file sink after a restart.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
import urllib3

from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def relays() -> Iterator[list[RelayProcess]]:
    """Every relay a test starts, killed (with its workers) whatever the test's outcome."""
    started: list[RelayProcess] = []
    try:
        yield started
    finally:
        for relay in started:
            relay.kill_all()


def start(relays: list[RelayProcess], data_dir: Path, **env: str) -> RelayProcess:
    relay = RelayProcess(data_dir, {"RELAY_SINKS": "file", **env})
    relays.append(relay)
    return relay.start()


def post(relay: RelayProcess, count: int = 2) -> set[str]:
    """Spans posted on a new connection, acknowledged (2xx): their span ids."""
    body = otlp_json_spans(count)
    response = urllib3.request(
        "POST",
        relay.url + "/v1/traces",
        body=body,
        headers={**JSON, "Connection": "close"},
        timeout=10,
        retries=False,
    )
    assert response.status == 200, response.data
    return set(span_ids(body))


def readyz(relay: RelayProcess) -> int | None:
    try:
        return relay.request("GET", "/readyz", timeout=2).status
    except urllib3.exceptions.HTTPError:
        return None


def refuses_connections(relay: RelayProcess) -> bool:
    try:
        socket.create_connection(("127.0.0.1", relay.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def signal_relay(relay: RelayProcess, signum: int = signal.SIGTERM) -> None:
    assert relay.process is not None
    relay.process.send_signal(signum)


def wait_exit(relay: RelayProcess, timeout: float) -> int:
    assert relay.process is not None
    try:
        return relay.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"relay still running after {timeout}s:\n{relay.log()}") from None


def stored(data_dir: Path) -> set[str]:
    """Every span id in the file sink's files (one per worker when RELAY_WORKERS > 1)."""
    found: set[str] = set()
    for path in data_dir.glob("llm-events*.jsonl"):
        lines = path.read_bytes().split(b"\n")[:-1]  # a partial last line is still being written
        found.update(orjson.loads(line)["span_id"] for line in lines if line)
    return found


def assert_stored_after_restart(
    relays: list[RelayProcess], data_dir: Path, acknowledged: set[str], **env: str
) -> None:
    """Every acknowledged event reaches the file sink once the relay runs again on ``data_dir``
    (what the stop left in the spool is delivered then)."""
    relay = start(relays, data_dir, **env)
    wait_until(lambda: acknowledged <= stored(data_dir), message="every acknowledged event stored")
    assert relay.stop() == 0


def open_request(relay: RelayProcess, body: bytes) -> socket.socket:
    """A POST whose head and first half of the body are sent: the rest is for ``finish``."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def finish(sock: socket.socket, body: bytes) -> tuple[int, bytes]:
    """Send the rest of the body; the answer's status and headers."""
    sock.sendall(body[len(body) // 2 :])
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    status_line, _, headers = answer.partition(b"\r\n")
    return int(status_line.split()[1]), headers.lower()


# -- the delay -----------------------------------------------------------------------------------


def test_during_the_delay_readyz_is_503_and_events_are_still_stored(
    relays: list[RelayProcess], data_dir: Path
) -> None:
    delay, grace = 4.0, 5.0
    relay = start(
        relays, data_dir, RELAY_SHUTDOWN_DELAY=str(delay), RELAY_SHUTDOWN_GRACE=str(grace)
    )
    acknowledged = post(relay)
    started = time.monotonic()
    signal_relay(relay)
    wait_until(lambda: readyz(relay) == 503, message="/readyz 503 while draining")
    assert relay.get_json("/v1/status")["draining"] is True
    # Still served, on a new connection, and told to close it (so the sender's next request
    # opens one that the load balancer sends elsewhere).
    body = otlp_json_spans(3)
    response = urllib3.request(
        "POST", relay.url + "/v1/traces", body=body, headers=JSON, timeout=10, retries=False
    )
    assert response.status == 200, response.data
    assert response.headers.get("Connection", "").lower() == "close"
    acknowledged |= set(span_ids(body))
    acknowledged |= post(relay)
    assert time.monotonic() - started < delay, "the posts above must fall inside the delay"

    wait_until(lambda: refuses_connections(relay), timeout=delay + 5, message="socket closed")
    assert time.monotonic() - started >= delay * 0.9
    assert wait_exit(relay, grace + 5) == 0
    assert time.monotonic() - started < delay + grace + 3
    assert '"draining"' in relay.log()
    assert_stored_after_restart(relays, data_dir, acknowledged)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_skips_the_delay(
    relays: list[RelayProcess], data_dir: Path, second: int
) -> None:
    relay = start(relays, data_dir, RELAY_SHUTDOWN_DELAY="60")
    acknowledged = post(relay)
    signal_relay(relay, signal.SIGINT)
    wait_until(lambda: readyz(relay) == 503, message="draining")
    acknowledged |= post(relay)
    signal_relay(relay, second)
    assert wait_exit(relay, 15) == 0  # not the 60 s delay
    assert "shutdown_delay_skipped" in relay.log()
    assert_stored_after_restart(relays, data_dir, acknowledged)


def test_a_stray_sigusr1_neither_stops_a_single_relay_nor_skips_its_later_delay(
    relays: list[RelayProcess], data_dir: Path
) -> None:
    """SIGUSR1 means "skip the delay" only while stopping (a log-rotation habit sends it)."""
    delay = 2.0
    relay = start(relays, data_dir, RELAY_SHUTDOWN_DELAY=str(delay))
    signal_relay(relay, signal.SIGUSR1)
    acknowledged = post(relay)  # answered after the signal: still serving
    assert readyz(relay) == 200
    started = time.monotonic()
    signal_relay(relay)
    wait_until(lambda: readyz(relay) == 503, message="draining")
    assert wait_exit(relay, delay + 10) == 0
    assert time.monotonic() - started >= delay * 0.9, "the delay was skipped"
    assert_stored_after_restart(relays, data_dir, acknowledged)


# -- requests in flight when the socket closes ---------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_a_body_still_arriving_at_sigterm_is_stored_and_acknowledged(
    relays: list[RelayProcess], data_dir: Path, delay: float
) -> None:
    relay = start(relays, data_dir, RELAY_SHUTDOWN_DELAY=str(delay), RELAY_SHUTDOWN_GRACE="10")
    body = otlp_json_spans(4)
    sock = open_request(relay, body)
    # The head has been read once the relay answers on another connection after it.
    assert readyz(relay) == 200
    signal_relay(relay)
    # The socket closes (after the delay) while this request still waits for its body.
    wait_until(lambda: refuses_connections(relay), timeout=delay + 10, message="socket closed")
    status, headers = finish(sock, body)
    assert status == 200, headers
    assert wait_exit(relay, 15) == 0
    assert_stored_after_restart(relays, data_dir, set(span_ids(body)))


def test_a_stop_takes_at_most_delay_plus_grace(relays: list[RelayProcess], data_dir: Path) -> None:
    """A sender that never finishes its body holds the stop no longer than the grace, and the
    dispatchers share that grace: the exit comes within delay + grace, not delay + 2 x grace."""
    delay, grace = 1.0, 2.0
    relay = start(
        relays, data_dir, RELAY_SHUTDOWN_DELAY=str(delay), RELAY_SHUTDOWN_GRACE=str(grace)
    )
    acknowledged = post(relay)
    stuck = open_request(relay, otlp_json_spans(2))
    assert readyz(relay) == 200
    started = time.monotonic()
    signal_relay(relay)
    assert wait_exit(relay, delay + grace + 10) == 0
    took = time.monotonic() - started
    # The stuck request was waited for the whole grace (not aiohttp's own second of closing)...
    assert delay + 0.9 * grace <= took < delay + grace + 2, took
    assert "requests_cut_off" in relay.log()
    # ...then cut off without an answer: nothing it sent was acknowledged.
    stuck.settimeout(5)
    try:
        answer = stuck.recv(65536)
    except ConnectionResetError:
        answer = b""
    assert not answer.startswith(b"HTTP"), answer
    stuck.close()
    assert_stored_after_restart(relays, data_dir, acknowledged)


# -- several workers -----------------------------------------------------------------------------


def test_workers_drain_alike_and_a_stop_received_twice_does_not_skip_the_delay(
    relays: list[RelayProcess], data_dir: Path
) -> None:
    """systemd's control-group kill (and a terminal's Ctrl-C) signals every process, and the
    parent forwards the stop as well: each worker gets it twice, which must not count as the
    operator's second signal. The parent's own second signal skips the delay everywhere."""
    relay = start(relays, data_dir, RELAY_WORKERS="2", RELAY_SHUTDOWN_DELAY="60")
    assert relay.process is not None
    workers = psutil.Process(relay.process.pid).children()
    assert len(workers) == 2
    acknowledged = post(relay)
    signal_relay(relay)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    wait_until(lambda: relay.log().count('"draining"') == 2, message="both workers draining")
    for _ in range(6):  # new connections, spread over both workers
        assert readyz(relay) == 503
        acknowledged |= post(relay)
    assert all(worker.is_running() for worker in workers)
    signal_relay(relay)
    assert wait_exit(relay, 20) == 0
    assert relay.log().count("shutdown_delay_skipped") == 2
    assert_stored_after_restart(relays, data_dir, acknowledged, RELAY_WORKERS="2")
