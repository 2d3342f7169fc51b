"""One dispatcher per sink: batch from the spool, send, classify, retry, split, dead-letter.

This is the reliability that wraps every sink the same way (the OpenTelemetry Collector's
exporterhelper does this for every exporter), so that a sink is only "encode and send one batch".

For each batch, in order:
1. a spooled row that is not an event's JSON is dead-lettered with its raw bytes;
2. the sink's selection (``sinks.selection``: filter, sampling, content policy) leaves events out,
   counted, and shapes the rest;
3. events older than the sink's ``max_event_age`` (the peer would refuse them) are dead-lettered;
4. the batch is sent; ``RetryableError`` (``MisconfiguredError`` included: a key fixed a day later
   still delivers the backlog) is retried with exponential backoff and full jitter (tenacity),
   waiting at least the peer's Retry-After (capped), until the oldest event in the batch has waited
   ``max_retry_time`` since it was received; then the batch is dead-lettered;
5. ``PayloadTooLargeError`` splits the batch in halves until the offending event is alone, which is
   dead-lettered; ``PermanentError`` does the same when the fault may lie with some events
   (``isolate``), or dead-letters the whole batch when the peer refuses everything. A sink that
   fails with anything else (a bug meeting an odd event) is treated as refusing those events;
6. only when every event of the batch is resolved (delivered, dead-lettered or left out by the
   selection) does the sink's cursor move on in the spool.

Nothing ends the loop but ``stop``: a failing database (a full disk) or a bug is logged, shown in
``/v1/status`` and retried after a pause. On shutdown a backoff wait ends at once and the batch
stays in the spool for the next start. The dispatcher uses its sink; the relay starts and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from schemas import LLMEvent
from sinks.base import (
    Batch,
    DispatchSettings,
    MisconfiguredError,
    PayloadTooLargeError,
    PermanentError,
    RetryableError,
    Sink,
    SinkError,
    SinkNotStartedError,
)
from sinks.dead_letters import DeadLetters
from sinks.outcomes import (
    AttemptFailed,
    Delivered,
    DeliveryBook,
    DispatchFault,
    Retrying,
    SinkStatus,
    Skipped,
)
from sinks.spool import Record, Spool, decode_records
from telemetry.metrics import Metrics

# Above this many bytes a batch's selection (a filter on whole events, content shaping) runs off
# the event loop, as ingest does for large bodies: a filter converting 40 KB events takes about
# 0.7 ms each, a third of a second for a batch, which the loop must not be held for.
OFF_LOOP_BYTES = 256 * 1024

# The pause after a failure that is not the peer's (the spool's database, a bug), doubling up to
# the longest: the loop goes on, slowly, until the cause is gone.
FAULT_PAUSE_SECONDS = (1.0, 30.0)


class ShuttingDownError(Exception):
    """Raised inside a backoff wait when the relay stops: the batch stays in the spool."""


class Dispatcher:
    def __init__(
        self,
        sink: Sink,
        settings: DispatchSettings,
        spool: Spool,
        dead_letters: DeadLetters,
        metrics: Metrics,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.settings = settings
        self.spool = spool
        self.dead_letters = dead_letters
        self.book = DeliveryBook(self.name, metrics)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dispatch-{self.name}")

    async def stop(self, grace: float) -> None:
        """Stop taking batches; give an in-flight send ``grace`` seconds; keep the rest spooled."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ShuttingDownError):
                await task

    @property
    def status(self) -> SinkStatus:
        return self.book.status

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        faults = 0
        while not self._stopping.is_set():
            try:
                await self._deliver_next()
                faults = 0
            except ShuttingDownError:
                return
            except Exception as error:  # the loop must outlive any failure: log, show, pause
                faults += 1
                self.book.book(DispatchFault(error))
                first, longest = FAULT_PAUSE_SECONDS
                with contextlib.suppress(ShuttingDownError):
                    await self._pause(min(longest, first * 2 ** (faults - 1)))

    async def _deliver_next(self) -> None:
        records = await self._next_batch()
        if records:
            await self._deliver(records)
            await self.spool.ack(self.name, records[-1].seq)

    async def _next_batch(self) -> list[Record]:
        """Wait for a full batch, or for the flush interval once something is pending."""
        spool, settings = self.spool, self.settings
        while spool.backlog(self.name) <= 0:
            if not await self._wait_for_appends(None):
                return []
        deadline = time.monotonic() + settings.flush_interval
        while spool.backlog(self.name) < settings.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self._wait_for_appends(remaining):
                break
        return await spool.read(self.name, settings.batch_size, settings.batch_max_bytes)

    async def _wait_for_appends(self, timeout: float | None) -> bool:
        """Wait until the spool takes new events; False when the relay is stopping."""
        appended = self.spool.appended(self.name)
        appended.clear()
        waiters = {
            asyncio.ensure_future(appended.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return not self._stopping.is_set()

    # -- delivery --------------------------------------------------------------------------------

    async def _deliver(self, records: Sequence[Record]) -> None:
        oldest = min(r.received for r in records)
        events, encoded, undecodable = decode_records(records)
        if undecodable:
            await self._dead_letter_raw(undecodable)
        selection = self.settings.selection
        if not selection.selects_all and events:
            if sum(map(len, encoded)) > OFF_LOOP_BYTES:
                selected = await asyncio.to_thread(selection.select, events, encoded)
            else:
                selected = selection.select(events, encoded)
            events, encoded = selected.events, selected.encoded
            if selected.skipped:
                self.book.book(
                    Skipped(
                        selected.filtered,
                        selected.sampled_out,
                        selected.filter_failed,
                        selected.filter_error,
                    )
                )
            for event, body, why in selected.failed:
                await self._dead_letter(
                    Batch([event], [body]), "unselectable", f"the sink's selection failed: {why}"
                )
        max_age = self.settings.max_event_age
        if max_age is not None:
            # Peers judge age by when the call happened, not when the relay received it
            # (a replay of old events is still too old).
            # RFC 3339 UTC times compare as text: no parsing per event.
            cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - max_age))
            fresh = [(e.get("start_time") or "~")[:19] >= cutoff for e in events]
            if not all(fresh):
                await self._dead_letter(
                    Batch(*_pick(events, encoded, fresh, False)),
                    "too_old",
                    f"older than the {max_age:g} s this sink's peer accepts",
                )
                events, encoded = _pick(events, encoded, fresh, True)
        if events:
            await self._send_resolving(Batch(events, encoded), oldest)

    async def _send_resolving(self, events: Batch, oldest: float) -> None:
        """Send until every event is delivered or dead-lettered."""
        try:
            await self._send_with_retries(events, oldest)
        except PayloadTooLargeError as error:
            await self._split_or_dead_letter(events, oldest, "too_large", error)
        except PermanentError as error:
            if error.isolate:
                await self._split_or_dead_letter(events, oldest, "rejected", error)
            else:
                await self._dead_letter(events, "rejected", str(error))
        except RetryableError as error:
            await self._dead_letter(events, "retries_exhausted", str(error))

    async def _split_or_dead_letter(
        self, events: Batch, oldest: float, reason: str, error: SinkError
    ) -> None:
        if len(events) == 1:
            await self._dead_letter(events, reason, str(error))
            return
        middle = len(events) // 2
        await self._send_resolving(events[:middle], oldest)
        await self._send_resolving(events[middle:], oldest)

    async def _send_with_retries(self, events: Batch, oldest: float) -> None:
        deadline = oldest + self.settings.max_retry_time
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableError),
            wait=self._backoff,
            stop=lambda state: time.time() + (state.upcoming_sleep or 0.0) > deadline,
            sleep=self._pause,
            before_sleep=self._count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._attempt(events)

    async def _attempt(self, events: Batch) -> None:
        started = time.perf_counter()
        timeout = self.settings.timeout
        try:
            result = await asyncio.wait_for(self.sink.send(events), timeout)
        except TimeoutError:
            why = f"no answer within {timeout}s"
            self.book.book(AttemptFailed("timeout", why, time.perf_counter() - started))
            raise RetryableError(why) from None
        except SinkError as error:
            seconds = time.perf_counter() - started
            self.book.book(AttemptFailed(_failure_reason(error), str(error), seconds))
            raise
        except SinkNotStartedError:
            raise  # the relay's bug, not the events': a fault of the loop, the batch stays spooled
        except Exception as error:  # a sink's bug must not stall the sink on one odd event
            why = f"{self.name} sink failed: {error!r}"
            self.book.book(AttemptFailed("permanent", why, time.perf_counter() - started, error))
            raise PermanentError(
                f"the {self.name} sink failed on these events: {error!r}"
            ) from error
        rejected, message = (result.rejected, result.message) if result else (0, "")
        self.book.book(Delivered(len(events), time.perf_counter() - started, rejected, message))

    def _backoff(self, state: RetryCallState) -> float:
        settings = self.settings
        exponential = settings.initial_backoff * (2 ** (state.attempt_number - 1))
        delay = random.uniform(0, min(settings.max_backoff, exponential))  # full jitter
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, settings.retry_after_cap))
        return delay

    def _count_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait_s = round(state.upcoming_sleep, 3)
        self.book.book(Retrying(state.attempt_number, wait_s, str(error)))

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise ShuttingDownError

    async def _dead_letter(self, events: Batch, reason: str, error: str) -> None:
        await self.dead_letters.write_and_book(self.book, reason, error, events)

    async def _dead_letter_raw(self, bodies: Sequence[bytes]) -> None:
        error = "the spooled row is not an event's JSON"
        await self.dead_letters.write_and_book(self.book, "undecodable", error, undecodable=bodies)


def _pick(
    events: list[LLMEvent], encoded: list[bytes], flags: list[bool], wanted: bool
) -> tuple[list[LLMEvent], list[bytes]]:
    """The events (and their JSON) whose flag is ``wanted``."""
    chosen = [i for i, flag in enumerate(flags) if flag is wanted]
    return [events[i] for i in chosen], [encoded[i] for i in chosen]


def _failure_reason(error: SinkError) -> str:
    if isinstance(error, MisconfiguredError):
        return "misconfigured"
    if isinstance(error, PayloadTooLargeError):
        return "too_large"
    if isinstance(error, PermanentError):
        return "permanent"
    return "retryable"
