"""``GET /livez`` every few milliseconds from a process of its own, for ``bench.overload``.

The prober has its own interpreter (a spawned process) and its own kept-alive connection, so what
it measures is the relay: neither the benchmark's GIL nor its blocking POST of a 20 MiB body can
delay a probe. Each probe is timed from its write to the end of its answer; a probe that overlaps
a stall of the relay's event loop takes as long as the stall. Times are ``time.monotonic()``,
comparable with the benchmark's own on Linux (one ``CLOCK_MONOTONIC`` per machine).
"""

from __future__ import annotations

import http.client
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from types import TracebackType
from typing import Final

HOST: Final = "127.0.0.1"
# A probe slower than this is counted as failed, not waited on for ever.
PROBE_TIMEOUT_SECONDS: Final = 30.0
READY_TIMEOUT_SECONDS: Final = 30.0


@dataclass(frozen=True, slots=True)
class Probe:
    started: float  # time.monotonic() when the request was written
    seconds: float  # until the whole answer was read (or the failure)
    ok: bool

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def _get(connection: http.client.HTTPConnection) -> bool:
    connection.request("GET", "/livez")
    answer = connection.getresponse()
    answer.read()
    return answer.status == 200


def poll_livez(
    port: int, interval: float, max_seconds: float, ready: Event, stop: Event, out: Connection
) -> None:
    """The child's loop: one probe per ``interval`` until ``stop``, ``max_seconds`` or as many
    probes as that allows, then every probe sent back through ``out``."""
    probes: list[Probe] = []
    limit = time.monotonic() + max_seconds
    max_probes = int(max_seconds / interval) + 1
    connection: http.client.HTTPConnection | None = None
    while not stop.is_set() and time.monotonic() < limit and len(probes) < max_probes:
        if connection is None:
            connection = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT_SECONDS)
        started = time.monotonic()
        try:
            ok = _get(connection)
        except (OSError, http.client.HTTPException):
            ok = False
            connection.close()
            connection = None
        probes.append(Probe(started, time.monotonic() - started, ok))
        if ok:
            ready.set()
        # Paced from each probe's start: a slow answer is followed by the next probe at once.
        stop.wait(max(0.0, started + interval - time.monotonic()))
    if connection is not None:
        connection.close()
    out.send(probes)
    out.close()


class LivezProber:
    """The prober process, as a context manager: started and ready on entry, stopped on exit;
    ``stop()`` returns every probe it made."""

    def __init__(self, port: int, interval: float, max_seconds: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ready = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=poll_livez,
            args=(port, interval, max_seconds, self._ready, self._stop, send),
            name="livez-prober",
            daemon=True,
        )
        self._send = send
        self._probes: list[Probe] | None = None

    def __enter__(self) -> LivezProber:
        self._process.start()
        self._send.close()  # the child holds its own end
        if not self._ready.wait(READY_TIMEOUT_SECONDS):
            self.stop()
            raise RuntimeError("the /livez prober got no answer from the relay")
        return self

    def stop(self) -> list[Probe]:
        if self._probes is not None:
            return self._probes
        self._stop.set()
        self._probes = []
        # The child answers once its probe in flight is over: at most one probe timeout.
        try:
            if self._receive.poll(PROBE_TIMEOUT_SECONDS + 10):
                self._probes = self._receive.recv()
        except EOFError:
            pass  # the child died without answering: no probes, the caller sees none
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()  # this child only, by its PID
            self._process.join(5)
        self._receive.close()
        return self._probes

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
