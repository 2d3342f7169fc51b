"""The running relay: spool, dead letters, one dispatcher per enabled sink, and their lifecycle.

What the spool holds is never left behind silently. At start the relay:
- logs and counts every problem the spool found in itself (``Spool.problems``);
- dead-letters what a sink removed from ``RELAY_SINKS`` was still owed (replayable), then drops
  its cursor;
- adopts the spools of workers that no longer run (``RELAY_WORKERS`` lowered): worker N drains
  ``worker-M`` for every M >= RELAY_WORKERS with M % RELAY_WORKERS == N, with dispatchers of its
  own, and removes each once every sink has it all.
While running it watches the spool (its file deleted, the disk refusing writes) and is not ready
meanwhile. The relay owns the sinks: it starts them before any dispatcher and closes them after.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web

from receiver.ingest import INGRESS, load_pricing
from receiver.intake import IntakeFullError
from schemas import LLMEvent
from schemas.content import ContentPolicy
from service.config import RelayConfig
from service.setup_check import SinkCheck, check_sinks
from service.start_probe import probe_sinks_at_start
from sinks.base import Batch, Sink
from sinks.dead_letters import DeadLetters
from sinks.dispatcher import Dispatcher
from sinks.outcomes import DeliveryBook
from sinks.spool import Spool, SpoolFullError, decode_records
from sinks.spool_files import SpoolLockedError, remove_spool_files
from sinks.spool_open import SpoolProblem
from telemetry.metrics import Metrics

log = structlog.get_logger("relay")

GAUGE_INTERVAL = 5.0
# Rows read at once when dead-lettering what a removed sink was owed.
_REMOVED_BATCH = 1000
_WORKER_SPOOL = re.compile(r"worker-(\d+)\.sqlite3")


def spool_path(data_dir: Path, worker: int) -> Path:
    return data_dir / "spool" / f"worker-{worker}.sqlite3"


def orphan_spools(data_dir: Path, worker: int, workers: int) -> Iterator[Path]:
    """Spools of workers that no longer run, which ``worker`` adopts."""
    directory = data_dir / "spool"
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        match = _WORKER_SPOOL.fullmatch(path.name)
        if match and int(match[1]) >= workers and int(match[1]) % workers == worker:
            yield path


class Relay:
    def __init__(
        self, config: RelayConfig, metrics: Metrics | None = None, worker: int = 0
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.worker = worker
        self.spool = Spool(
            spool_path(config.data_dir, worker), config.spool_max_bytes, config.sinks
        )
        self.dead_letters = DeadLetters(config.data_dir / "dead-letter")
        self.sinks: dict[str, Sink] = {
            name: setup.spec.build_for(setup.config, worker, config.workers)
            for name, setup in config.sinks.items()
        }
        self.dispatchers = self._dispatchers(self.spool)
        self._stored_content = config.stored_content  # read for every request
        # Failure counters exist at 0 from the start, so that alerts see their first rise.
        self.metrics.export_sinks(self.sinks)
        self.metrics.export_routes(ingress.name for ingress in INGRESS)
        # Spools of workers that no longer run, with their dispatchers, until drained.
        self.adopted: dict[Path, tuple[Spool, dict[str, Dispatcher]]] = {}
        self.draining = False
        # When (event-loop time) the shutdown grace ends, set as the socket closes: requests in
        # flight and sends in flight share one grace, so that a stop takes at most delay + grace.
        # None: the dispatchers get a whole grace from ``stop``.
        self.grace_ends: float | None = None
        self.spool_problem: SpoolProblem | None = None
        self.started = False  # the spool is open and delivery runs
        self._stopped = False
        self._tasks: list[asyncio.Task[Any]] = []

    def _dispatchers(self, spool: Spool) -> dict[str, Dispatcher]:
        return {
            name: Dispatcher(
                sink, self.config.sinks[name].dispatch, spool, self.dead_letters, self.metrics
            )
            for name, sink in self.sinks.items()
        }

    # -- what the receivers need (receiver.intake.Intake) ------------------------------------

    @property
    def ingest_tokens(self) -> Mapping[str, str | None]:
        return self.config.ingest_tokens

    @property
    def max_body_bytes(self) -> int:
        return self.config.max_body_bytes

    @property
    def body_timeout(self) -> float:
        return self.config.body_timeout

    @property
    def content(self) -> ContentPolicy:
        return self._stored_content

    @property
    def cost_table(self) -> bool:
        return self.config.cost_table

    def refusal(self) -> str | None:
        # Draining does not refuse: while the spool is open an event is stored and acknowledged
        # (most gateways never re-send a refused one). Only once the spool is closing is it too
        # late; by then the server has stopped taking requests. A spool near its limit does not
        # refuse either: the spool's append takes every request that fits.
        if self._stopped:
            return "the relay is shutting down; retry shortly"
        if self.spool_problem is not None:
            return "the spool cannot store events now; see /v1/status"
        return None

    async def store(self, encoded: Sequence[bytes], events: Sequence[LLMEvent]) -> None:
        try:
            await self.spool.append(encoded, events)
        except SpoolFullError as error:
            raise IntakeFullError(str(error)) from None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and self.spool_problem is None

    async def start(self) -> None:
        """Open the spool and start delivery; raises ``SpoolLockedError`` if another relay runs."""
        if self.started:
            return
        await self.spool.open()
        await self._settle(self.spool)
        self.metrics.spool_max_bytes.set(self.config.spool_max_bytes)
        for sink in self.sinks.values():
            await sink.start()
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        for path in orphan_spools(self.config.data_dir, self.worker, self.config.workers):
            await self._adopt(path)
        self._tasks.append(asyncio.create_task(self._watch_forever(), name="relay-watch"))
        if self.config.cost_table:
            # Off the loop and without delaying readiness (the import takes 0.3-0.4 s).
            load = asyncio.to_thread(load_pricing)
            self._tasks.append(asyncio.create_task(load, name="relay-load-pricing"))
        self.started = True
        log.info(
            "relay_started",
            worker=self.worker,
            spool_backlog={name: self.backlog(name) for name in self.sinks},
        )

    async def _settle(self, spool: Spool) -> None:
        """Report what the spool found at open; dead-letter what removed sinks were owed."""
        for problem in spool.problems:
            self._report(problem)
        for name in list(spool.removed):
            try:
                count = await self._dead_letter_owed(spool, name)
                await spool.forget(name)
            except (OSError, sqlite3.Error) as error:  # a full disk: keep them, retry next start
                log.error("sink_removed_kept", sink=name, error=str(error))
                continue
            if count:
                log.warning(
                    "sink_removed",
                    sink=name,
                    dead_lettered=count,
                    path=str(self.dead_letters.path(name)),
                    message="what this sink was still owed is in its dead-letter file; enable"
                    " it again and replay that file to deliver it",
                )

    async def _dead_letter_owed(self, spool: Spool, sink: str) -> int:
        book = DeliveryBook(sink, self.metrics)
        reason, why = "sink_removed", f"{sink} is no longer in RELAY_SINKS"
        count = 0
        while records := await spool.read(sink, _REMOVED_BATCH, 1 << 62):
            events, encoded, raw = decode_records(records)
            await self.dead_letters.write_and_book(book, reason, why, Batch(events, encoded), raw)
            count += len(records)
            await spool.ack(sink, records[-1].seq)
        return count

    async def _adopt(self, path: Path) -> None:
        spool = Spool(path, 1 << 62, self.config.sinks)  # never appended to: no cap needed
        try:
            await spool.open()
            await self._settle(spool)
        except (SpoolLockedError, OSError, sqlite3.Error) as error:  # left for the next start
            log.error("spool_not_adopted", path=str(path), reason=str(error))
            await spool.close()
            return
        owed = {name: spool.backlog(name) for name in self.sinks}
        log.warning("spool_adopted", path=str(path), worker=self.worker, backlog=owed)
        dispatchers = self._dispatchers(spool)
        self.adopted[path] = (spool, dispatchers)
        for dispatcher in dispatchers.values():
            dispatcher.start()
        self._tasks.append(asyncio.create_task(self._retire(path), name=f"adopted-{path.name}"))

    async def _retire(self, path: Path) -> None:
        """Once every sink has an adopted spool's events, stop its dispatchers and delete it."""
        spool, dispatchers = self.adopted[path]
        await asyncio.gather(*(spool.wait_resolved(name) for name in dispatchers))
        await asyncio.gather(*(d.stop(self.config.shutdown_grace) for d in dispatchers.values()))
        await spool.close()
        del self.adopted[path]
        if spool.removed:  # a removed sink's events could not be dead-lettered: keep them
            log.error("spool_adopted_kept", path=str(path), owed=spool.removed)
            return
        remove_spool_files(path)
        log.info("spool_adopted_drained", path=str(path), worker=self.worker)

    def begin_drain(self) -> None:
        """Readiness turns false (load balancers stop routing here) and answers ask senders to
        close their connections; ingest goes on storing and acknowledging until the server
        closes its socket and the requests in flight are done."""
        self.draining = True

    def probe_sinks_in_background(self) -> None:
        """Probe every sink once, logging each verdict; ingest never waits for it."""
        task = asyncio.create_task(probe_sinks_at_start(self.sinks), name="start-probe")
        self._tasks.append(task)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.begin_drain()
        for task in self._tasks:
            task.cancel()
        # A probe still waiting on a peer ends before the sinks it uses are closed.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        grace = self.config.shutdown_grace
        if self.grace_ends is not None:
            grace = max(0.0, self.grace_ends - asyncio.get_running_loop().time())
        everyone = [*self.dispatchers.values()]
        for _, dispatchers in self.adopted.values():
            everyone.extend(dispatchers.values())
        await asyncio.gather(*(d.stop(grace) for d in everyone))
        for sink in self.sinks.values():
            await sink.close()
        for spool, _ in self.adopted.values():
            await spool.close()
        if self.started:
            await self.spool.close()
        self.dead_letters.close()
        log.info(
            "relay_stopped",
            worker=self.worker,
            kept_in_spool={name: self.backlog(name) for name in self.sinks},
        )

    def backlog(self, sink: str) -> int:
        """Events not yet resolved for ``sink``, in this worker's spool and the adopted ones."""
        adopted = sum(spool.backlog(sink) for spool, _ in self.adopted.values())
        return self.spool.backlog(sink) + adopted

    async def check(self, send_test_event: bool = False) -> dict[str, SinkCheck]:
        return await check_sinks(self.sinks, send_test_event)

    async def check_spool(self) -> SpoolProblem | None:
        """What keeps the spool from storing now; reported once each time it starts."""
        problem = await self.spool.check()
        if problem is not None and problem != self.spool_problem:
            self._report(problem)
        elif problem is None and self.spool_problem is not None:
            log.info("spool_recovered", previous=self.spool_problem.kind)
        self.spool_problem = problem
        return problem

    def _report(self, problem: SpoolProblem) -> None:
        self.metrics.spool_problems.labels(problem.kind).inc()
        log.error("spool_problem", problem=problem.kind, message=problem.message)

    async def status(self) -> dict[str, Any]:
        now = time.time()
        sinks: dict[str, Any] = {}
        for name, dispatcher in self.dispatchers.items():
            oldest = await self.spool.oldest_pending(name)
            state = dispatcher.status
            sinks[name] = {
                "running": dispatcher.running,
                "backlog": self.backlog(name),
                "oldest_pending_age_s": None if oldest is None else round(now - oldest, 3),
                "sent": state.sent,
                "retries": state.retries,
                "dead_lettered": state.dead_lettered,
                "partial_rejected": state.partial_rejected,
                "filtered": state.filtered,
                "sampled_out": state.sampled_out,
                "filter_failed": state.filter_failed,
                "last_success_at": state.last_success_at,
                "last_error": state.last_error,
                "last_error_at": state.last_error_at,
                "dead_letter_file": str(self.dead_letters.path(name)),
            }
        problem = self.spool_problem
        return {
            "ready": self.ready,
            "draining": self.draining,
            "worker": self.worker,
            "spool": {
                "bytes": self.spool.stored_bytes,
                "max_bytes": self.spool.max_bytes,
                "full": self.spool.full,
                "problem": None if problem is None else problem.message,
                "problems_at_start": [p.message for p in self.spool.problems],
                "adopted": [str(path) for path in self.adopted],
            },
            "sinks": sinks,
        }

    async def _watch_forever(self) -> None:
        # Notices a spool that stopped taking writes (and when it takes them again), and keeps
        # the gauges current for the other workers' scrapes when RELAY_WORKERS > 1 (each worker
        # can only measure its own spool; a scrape refreshes them too).
        while True:
            try:
                await self.check_spool()
                await self.refresh_gauges()
            except Exception:  # a database error (a full disk) must not end the watch
                log.exception("watch_failed")
            await asyncio.sleep(GAUGE_INTERVAL)

    async def refresh_gauges(self) -> None:
        now = time.time()
        self.metrics.spool_bytes.set(self.spool.stored_bytes)
        for name in self.sinks:
            self.metrics.sink_backlog.labels(name).set(self.backlog(name))
            oldest = await self.spool.oldest_pending(name)
            self.metrics.sink_oldest_age.labels(name).set(0 if oldest is None else now - oldest)


RELAY: Final = web.AppKey("relay", Relay)
