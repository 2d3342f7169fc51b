"""Model-based test of the spool: random runs of appends, deliveries, restarts and crashes.

The model is what each sink is owed: for every sink with a cursor, the bodies appended since it
was enabled and not yet acked by it, oldest first. Hypothesis drives a real ``Spool`` (one event
loop and one scratch directory per run) and compares it with the model after every step:

- ``append`` adds its bodies to what every enabled sink is owed;
- ``deliver`` reads a batch for one sink, which must be the start of what it is owed, and acks it;
  ``catch_up`` delivers everything to every sink, the relay at rest;
- ``reopen`` closes and opens the spool, possibly with another set of sinks: a sink that stays
  keeps what it is owed, a new one is owed nothing older, and a removed one is reported in
  ``spool.removed`` with what it is owed, which the relay then reads, acks and ``forget``s;
- ``crash`` copies the spool's files as ``kill -9`` would leave them (no ``-shm``, no lock file)
  and opens the copy: nothing appended or acked before may change.

A failure means the spool lost, duplicated, reordered or resurrected an event for some sink, or
counts its backlog wrong; hypothesis prints the shortest sequence of steps that shows it.
``SPOOL_MODEL_EXAMPLES`` raises the number of runs (``SPOOL_MODEL_EXAMPLES=2000`` for a long
one); ``SPOOL_MODEL_SINK_CHANGES=0`` keeps the sink set fixed for a run (restarts keep the same
sinks, and ``spool.removed`` / ``forget`` are not used).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sinks.spool import Spool

SINKS = ("file", "tempo", "datadog")
SINK_CHANGES = os.environ.get("SPOOL_MODEL_SINK_CHANGES", "1") != "0"
# Everything about how long the test runs. No example database: it would be a `.hypothesis`
# directory in the working tree; a failure prints its reproduction instead. No explain phase: on
# a failure it reruns the steps hundreds of times (a minute) to annotate the reproduction.
EXAMPLES = int(os.environ.get("SPOOL_MODEL_EXAMPLES", "100"))  # about 15 s
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),  # as Hypothesis does for state machines
    database=None,
    phases=[phase for phase in Phase if phase is not Phase.explain],
)
TIMEOUT_SECONDS = max(180, EXAMPLES)  # a long run is not a hang

DB_NAME = "spool.sqlite3"
MAX_BYTES = 1 << 30  # never full: the size cap is test_spool.py's business
READ_BYTES = 1 << 20
DRAIN_BATCH = 3  # a removed sink is emptied in batches this big

T = TypeVar("T")


def sink_sets() -> st.SearchStrategy[tuple[str, ...]]:
    """A non-empty subset of ``SINKS``, in ``SINKS`` order."""
    subsets = st.sets(st.sampled_from(SINKS), min_size=1)
    return subsets.map(lambda names: tuple(name for name in SINKS if name in names))


def reopen_sets() -> st.SearchStrategy[tuple[str, ...] | None]:
    """The sinks to reopen with; ``None`` keeps the current ones."""
    return sink_sets() if SINK_CHANGES else st.none()


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dirs: list[Path] = []
        self.path = self._new_dir() / DB_NAME
        self.spool: Spool | None = None
        # The model: sink -> bodies appended since it was enabled and not acked by it, in order.
        self.owed: dict[str, list[bytes]] = {}
        self.appended = 0

    # -- helpers ---------------------------------------------------------------------------------

    def _new_dir(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.dirs.append(directory)
        return directory

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @property
    def _spool(self) -> Spool:
        assert self.spool is not None, "the spool is not open"
        return self.spool

    @property
    def _enabled(self) -> tuple[str, ...]:
        return tuple(self.owed)

    async def _open(self, sinks: tuple[str, ...]) -> None:
        spool = Spool(self.path, MAX_BYTES, sinks)
        try:
            await spool.open()
        except BaseException:
            await spool.close()
            raise
        self.spool = spool
        gone = [name for name in self.owed if name not in sinks]
        if SINK_CHANGES:
            await self._empty_removed(gone)
        for name in sinks:
            self.owed.setdefault(name, [])  # a new sink is owed nothing older

    async def _empty_removed(self, gone: list[str]) -> None:
        """What the relay does with removed sinks: deliver what they are owed, then forget them."""
        spool = self._spool
        expected = {name: len(self.owed[name]) for name in gone}
        assert spool.removed == expected
        for name in gone:
            delivered = await self._drain(name)
            assert delivered == self.owed.pop(name), f"removed sink {name!r}"
            await spool.forget(name)

    async def _drain(self, sink: str) -> list[bytes]:
        """Read and ack everything the spool has for ``sink`` (a bounded number of batches)."""
        spool = self._spool
        bodies: list[bytes] = []
        for _ in range(len(self.owed[sink]) + 1):
            records = await spool.read(sink, DRAIN_BATCH, READ_BYTES)
            if not records:
                break
            bodies += [record.body for record in records]
            await spool.ack(sink, records[-1].seq)
        return bodies

    async def _close(self) -> None:
        spool, self.spool = self._spool, None
        await spool.close()

    async def _reopen(self, sinks: tuple[str, ...]) -> None:
        await self._close()
        await self._open(sinks)

    async def _crash(self) -> None:
        """Open a copy of the files a ``kill -9`` now would leave; drop the original."""
        old = self.path
        self.path = self._new_dir() / DB_NAME
        for file in sorted(old.parent.iterdir()):
            if file.name.startswith(old.name) and not file.name.endswith(("-shm", ".lock")):
                shutil.copyfile(file, self.path.parent / file.name)
        await self._close()
        await self._open(self._enabled)

    async def _deliver(self, sink: str, limit: int) -> None:
        spool = self._spool
        owed = self.owed[sink]
        records = await spool.read(sink, limit, READ_BYTES)
        assert len(records) <= limit
        assert [record.body for record in records] == owed[: len(records)], f"sink {sink!r}"
        assert records or not owed, f"sink {sink!r} is owed {len(owed)} events, read none"
        if records:
            await spool.ack(sink, records[-1].seq)
            del owed[: len(records)]
        assert spool.backlog(sink) == len(owed), f"sink {sink!r}"

    # -- rules -----------------------------------------------------------------------------------

    @initialize(sinks=sink_sets())
    def start(self, sinks: tuple[str, ...]) -> None:
        self._run(self._open(sinks))

    @rule(count=st.integers(1, 5))
    def append(self, count: int) -> None:
        bodies = [f"e{self.appended + i}".encode() for i in range(count)]
        self.appended += count
        self._run(self._spool.append(bodies))
        for owed in self.owed.values():
            owed.extend(bodies)

    @rule(data=st.data(), limit=st.integers(1, 8))
    def deliver(self, data: st.DataObject, limit: int) -> None:
        sink = data.draw(st.sampled_from(self._enabled), label="sink")
        self._run(self._deliver(sink, limit))

    @rule(limit=st.integers(1, 8))
    def catch_up(self, limit: int) -> None:
        """Every sink delivers all it is owed: the relay at rest."""
        for sink in self._enabled:
            while self.owed[sink]:  # each delivery makes progress or fails
                self._run(self._deliver(sink, limit))

    @rule(sinks=reopen_sets())
    def reopen(self, sinks: tuple[str, ...] | None) -> None:
        self._run(self._reopen(self._enabled if sinks is None else sinks))

    @rule()
    def crash(self) -> None:
        self._run(self._crash())

    @invariant()
    def backlogs_match_the_model(self) -> None:
        spool = self._spool
        for sink, owed in self.owed.items():
            assert spool.backlog(sink) == len(owed), f"sink {sink!r}"

    def teardown(self) -> None:
        try:
            if self.spool is not None:
                self._run(self._close())
        finally:
            self.loop.close()
            for directory in self.dirs:
                shutil.rmtree(directory, ignore_errors=True)


# Marked as a decorated class would be: it runs for seconds, and a long run is not a hang.
TestSpoolModel = pytest.mark.slow(pytest.mark.timeout(TIMEOUT_SECONDS)(SpoolMachine.TestCase))
TestSpoolModel.settings = SETTINGS
