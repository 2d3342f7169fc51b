"""Every sink probed once at start, in the background, with one log line each.

Without it a closed Tempo port or a refused Datadog key stays silent until the first event, which
may come hours later and then only shows as retries. The probe is the setup check behind
``/v1/test-connection`` (``service.setup_check``) without its test event: for an OTLP sink an
empty export, for Datadog the key check (or the agent's info), for the file sink a write in its
directory. It never stops the start or delays ingest: events wait in the spool until the sink is
fixed, so the relay must take them meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import structlog

from service.setup_check import check_sinks
from sinks.base import Sink

log = structlog.get_logger("relay")

FAILED_HINT: Final = (
    "the relay runs and keeps this sink's events in the spool, retrying; fix the setting and"
    " check with GET /v1/test-connection"
)


async def probe_sinks_at_start(sinks: Mapping[str, Sink]) -> None:
    """Probe each sink (each bounded by ``setup_check.PROBE_TIMEOUT`` and the sink's own request
    timeout) and log its verdict: info when it passes, a warning with the check's message when
    it fails."""
    results = await check_sinks(sinks)
    for name, result in results.items():
        # Secret-free: URLs without user or query, a peer's quoted answer redacted (setup_check).
        if result.ok:
            log.info("sink_probe_passed", sink=name, message=result.message)
        else:
            log.warning("sink_probe_failed", sink=name, message=result.message, hint=FAILED_HINT)
