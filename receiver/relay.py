"""The running relay: spool, dead letters, one dispatcher per enabled sink, and their lifecycle."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from receiver.config import RelayConfig
from receiver.metrics import Metrics
from receiver.setup_check import SinkCheck, check_sinks
from sinks.base import Sink
from sinks.dead_letters import DeadLetters
from sinks.dispatcher import Dispatcher
from sinks.spool import Spool

log = structlog.get_logger("relay")

GAUGE_INTERVAL = 5.0


class Relay:
    def __init__(
        self, config: RelayConfig, metrics: Metrics | None = None, worker: int = 0
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.worker = worker
        self.spool = Spool(
            config.data_dir / "spool" / f"worker-{worker}.sqlite3",
            config.spool_max_bytes,
            config.sinks,
        )
        self.dead_letters = DeadLetters(config.data_dir / "dead-letter")
        self.sinks: dict[str, Sink] = {
            name: setup.spec.build_for(setup.config, worker, config.workers)
            for name, setup in config.sinks.items()
        }
        self.dispatchers = {
            name: Dispatcher(
                sink, config.sinks[name].dispatch, self.spool, self.dead_letters, self.metrics
            )
            for name, sink in self.sinks.items()
        }
        self.ready = False
        self.draining = False
        self._started = False
        self._stopped = False
        self._gauges: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.spool.open()
        for name, left in self.spool.abandoned.items():
            log.warning("sink_removed", sink=name, undelivered_events=left)
        self.metrics.spool_max_bytes.set(self.config.spool_max_bytes)
        for dispatcher in self.dispatchers.values():
            await dispatcher.start()
        self._gauges = asyncio.create_task(self._refresh_gauges_forever(), name="gauges")
        self.ready = True
        log.info(
            "relay_started",
            worker=self.worker,
            spool_backlog={name: self.spool.backlog(name) for name in self.sinks},
        )

    def begin_drain(self) -> None:
        """Stop accepting: readiness turns false and ingest answers 503 with Retry-After."""
        self.ready = False
        self.draining = True

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.begin_drain()
        if self._gauges is not None:
            self._gauges.cancel()
        grace = self.config.shutdown_grace
        await asyncio.gather(*(d.stop(grace) for d in self.dispatchers.values()))
        if self._started:
            await self.spool.close()
        self.dead_letters.close()
        log.info(
            "relay_stopped",
            worker=self.worker,
            kept_in_spool={name: self.spool.backlog(name) for name in self.sinks},
        )

    async def check(self, send_test_event: bool = False) -> dict[str, SinkCheck]:
        return await check_sinks(self.sinks, send_test_event)

    async def status(self) -> dict[str, Any]:
        now = time.time()
        sinks: dict[str, Any] = {}
        for name, dispatcher in self.dispatchers.items():
            oldest = await self.spool.oldest_pending(name)
            state = dispatcher.status
            sinks[name] = {
                "running": dispatcher.running,
                "backlog": self.spool.backlog(name),
                "oldest_pending_age_s": None if oldest is None else round(now - oldest, 3),
                "sent": state.sent,
                "retries": state.retries,
                "dead_lettered": state.dead_lettered,
                "dropped": state.dropped,
                "partial_rejected": state.partial_rejected,
                "last_success_at": state.last_success_at,
                "last_error": state.last_error,
                "last_error_at": state.last_error_at,
                "dead_letter_file": str(self.dead_letters.path(name)),
            }
        return {
            "ready": self.ready,
            "draining": self.draining,
            "worker": self.worker,
            "spool": {
                "bytes": self.spool.stored_bytes,
                "max_bytes": self.spool.max_bytes,
                "full": self.spool.full,
            },
            "sinks": sinks,
        }

    async def _refresh_gauges_forever(self) -> None:
        # A scrape refreshes the gauges too; this keeps them current for the other workers'
        # scrapes when RELAY_WORKERS > 1 (each worker can only measure its own spool).
        while True:
            await self.refresh_gauges()
            await asyncio.sleep(GAUGE_INTERVAL)

    async def refresh_gauges(self) -> None:
        now = time.time()
        self.metrics.spool_bytes.set(self.spool.stored_bytes)
        for name in self.sinks:
            self.metrics.sink_backlog.labels(name).set(self.spool.backlog(name))
            oldest = await self.spool.oldest_pending(name)
            self.metrics.sink_oldest_age.labels(name).set(0 if oldest is None else now - oldest)
