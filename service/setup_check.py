"""The setup check behind ``GET /v1/test-connection`` and ``llm-broadcast-relay test-connection``.

Every enabled sink is probed live (credentials, reachability, disk) and, on request, sent one
event marked ``source.test`` end to end, so a person sees where it arrived. The test event goes
straight to the sinks, not through the spool: it checks the path as it is now.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from foundation.secrets import redact_text
from foundation.times import now, rfc3339_ns
from foundation.version import __version__
from receiver.normalizers.common import base_event, stable_id
from schemas import LLMEvent
from sinks.base import Batch, ProbeResult, Sink, SinkError

PROBE_TIMEOUT: Final = 15.0


@dataclass(frozen=True, slots=True)
class SinkCheck:
    ok: bool
    message: str
    details: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, **self.details}


def make_test_event() -> LLMEvent:
    """A small, valid event that says what it is, with fresh ids so it can be looked up."""
    ns, at = now()
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    event = base_event(
        event_id=stable_id("test-connection", trace_id),
        received_at=at,
        fmt="native",
        gateway="llm-broadcast-relay",
        test=True,
    )
    event.update(
        {
            "trace_id": trace_id,
            "span_id": span_id,
            "start_time": rfc3339_ns(ns - 250_000_000),
            "end_time": at,
            "duration_ms": 250.0,
            "operation": "chat",
            "provider": "llm-broadcast-relay",
            "request_model": "test-connection",
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            "cost": {"currency": "USD", "source": "unknown"},
            "status": "ok",
            "attributes": {"relay.test_connection": True, "relay.version": __version__},
        }
    )
    event["source"]["tenant"] = None
    return event


async def _probe(name: str, sink: Sink) -> ProbeResult:
    try:
        return await asyncio.wait_for(sink.probe(), PROBE_TIMEOUT)
    except TimeoutError:
        return ProbeResult(False, f"{name}: no answer within {PROBE_TIMEOUT:.0f}s")
    except Exception as error:  # a probe bug is a failed check, not a crash
        return ProbeResult(False, f"{name}: probe failed: {error}")


async def _deliver(name: str, sink: Sink, event: LLMEvent) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(sink.send(Batch.of([event])), PROBE_TIMEOUT)
    except TimeoutError:
        return False, f"test event not delivered: no answer within {PROBE_TIMEOUT:.0f}s"
    except SinkError as error:
        return False, f"test event not delivered: {error}"
    except Exception as error:  # a sink's bug is a failed check, not a 500
        return False, f"test event not delivered: {name} failed: {error!r}"
    return True, f"test event delivered (trace_id {event['trace_id']})"


async def check_sinks(
    sinks: Mapping[str, Sink], send_test_event: bool = False
) -> dict[str, SinkCheck]:
    event = make_test_event() if send_test_event else None

    async def one(name: str, sink: Sink) -> tuple[str, SinkCheck]:
        probe = await _probe(name, sink)
        details = dict(probe.details)
        ok, message = probe.ok, probe.message
        if event is not None and probe.ok:
            delivered, note = await _deliver(name, sink, event)
            details["test_event"] = note
            ok = delivered
            message = f"{message}; {note}"
        # The sinks write their messages without credentials, but quote the peer's answer, which
        # may echo one (a proxy repeating the Authorization it refused): /v1/test-connection is
        # open to anyone who reaches the relay, and the start probe's lines go to the log.
        return name, SinkCheck(ok, redact_text(message), details)

    return dict(await asyncio.gather(*(one(name, sink) for name, sink in sinks.items())))
