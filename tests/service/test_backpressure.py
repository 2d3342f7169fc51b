"""Backpressure as the README states it: ingest takes events until the spool holds
``RELAY_SPOOL_MAX_BYTES`` of undelivered ones, then answers 503 + Retry-After, and ``/readyz``
turns 503 once less than a typical request (64 KiB) fits, so that balancers route elsewhere
before requests are refused."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.helpers.payloads import native_event
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess

MAX_BYTES = 200_000
NATIVE = {"Content-Type": "application/json"}


def test_ingest_fills_the_spool_up_to_its_limit_before_answering_503(tmp_path: Path) -> None:
    env = {
        "RELAY_SINKS": "otlp",
        "RELAY_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces",  # nothing listens
        "RELAY_OTLP_MAX_RETRY_TIME": "3600",  # every event stays owed
        "RELAY_SPOOL_MAX_BYTES": str(MAX_BYTES),
    }
    with RelayProcess(tmp_path, env) as relay:
        stored = largest = 0
        for i in range(MAX_BYTES // 100):  # bounded: far more requests than can fit
            body = orjson.dumps(native_event(f"fill-{i}"))
            answer = relay.request("POST", "/v1/events", body, NATIVE)
            if answer.status == 503:
                break
            assert answer.status == 200, answer.data
            before, stored = stored, int(relay.metric("relay_spool_bytes"))
            largest = max(largest, stored - before)
        else:
            raise AssertionError("the spool never refused an event")
        assert answer.headers.get("Retry-After")
        # Refused only because this request would not fit: less than about one event was left.
        assert MAX_BYTES - 2 * largest < stored <= MAX_BYTES, (stored, largest)
        # Not ready with less room than a typical request (64 KiB): balancers route elsewhere.
        ready = relay.request("GET", "/readyz")
        assert ready.status == 503, ready.data
        assert orjson.loads(ready.data)["status"] == "spool_full"
