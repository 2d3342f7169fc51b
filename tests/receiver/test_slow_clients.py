"""Slow clients cannot hold the relay: a request head must arrive within RELAY_HEADER_TIMEOUT, a
body within RELAY_BODY_TIMEOUT, and a thousand held connections leave room for everyone else."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator

import pytest
import urllib3

from tests.helpers.payloads import otlp_json_spans
from tests.helpers.relay import RelayProcess

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
# After answering a body it did not read to its end, aiohttp still reads and drops what comes for
# up to this long (its lingering time), so that the client sees the answer rather than a reset.
LINGERING = 10.0
# The relay's own soft limit on open files at start: below the number of slow connections, as on
# a host whose default soft limit (1,024) is below what a slowloris opens.
SOFT_FILE_LIMIT = 256
SLOW_CONNECTIONS = 400
PARTIAL_HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def lower_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_FILE_LIMIT, hard))


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    env = {"RELAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "RELAY_BODY_TIMEOUT": str(BODY_TIMEOUT)}
    with RelayProcess(tmp_path_factory.mktemp("relay"), env, preexec=lower_file_limit) as process:
        yield process


def connect(relay: RelayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", relay.port), timeout=10)


def closed_within(conn: socket.socket, seconds: float) -> bytes | None:
    """What the relay sent before it closed the connection, or None if it is still open."""
    received = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def trickle_head(conn: socket.socket, seconds: float) -> bool:
    """Send a request head one header line at a time and never end it; False once the relay has
    closed the connection."""
    conn.sendall(PARTIAL_HEAD)
    deadline = time.monotonic() + seconds
    line = 0
    while time.monotonic() < deadline:
        try:
            conn.sendall(f"X-Slow-{line}: 1\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            return False
        line += 1
        if closed_within(conn, 0.25) is not None:
            return False
    return True


def test_a_request_head_that_never_ends_is_cut_off(relay: RelayProcess) -> None:
    """Header lines keep coming, but no whole head: the connection is closed at the timeout."""
    with connect(relay) as conn:
        started = time.monotonic()
        assert not trickle_head(conn, HEADER_TIMEOUT + 5), "a never-ending head was held"
        assert time.monotonic() - started >= HEADER_TIMEOUT - 0.5


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(
    relay: RelayProcess,
) -> None:
    body = otlp_json_spans(1)
    with connect(relay) as conn:
        conn.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        conn.settimeout(10)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        assert not trickle_head(conn, HEADER_TIMEOUT + 5), "a second never-ending head was held"


def test_a_body_that_stops_coming_is_answered_408_and_closed(relay: RelayProcess) -> None:
    before = relay.metric("relay_items_rejected_total", route="otlp", reason="timeout")
    with connect(relay) as conn:
        conn.sendall(PARTIAL_HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"resourceSpans": [')
        conn.settimeout(BODY_TIMEOUT + 5)
        head, _, body = conn.recv(65536).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"Connection: close" in head
        assert b"RELAY_BODY_TIMEOUT" in body
        assert closed_within(conn, LINGERING + 5) is not None, "held after its 408"
    after = relay.metric("relay_items_rejected_total", route="otlp", reason="timeout")
    assert after == before + 1


def test_hundreds_of_slow_connections_leave_room_and_are_all_let_go(relay: RelayProcess) -> None:
    """More slow connections than the relay's soft file limit at start: a normal request is still
    answered at once, and every slow connection is closed at the header timeout."""
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CONNECTIONS):
            conn = connect(relay)
            conn.sendall(PARTIAL_HEAD)
            slow.append(conn)
        # A new connection, as a sender opens one (the relay's pool already holds one).
        response = urllib3.PoolManager(retries=False).request(
            "POST",
            relay.url + "/v1/traces",
            body=otlp_json_spans(1),
            headers={"Content-Type": "application/json"},
            timeout=HEADER_TIMEOUT / 2,
        )
        assert response.status == 200
        deadline = time.monotonic() + HEADER_TIMEOUT + 10
        still_open = [c for c in slow if closed_within(c, deadline - time.monotonic()) is None]
        assert not still_open, f"{len(still_open)} slow connections still held"
    finally:
        for conn in slow:
            conn.close()
