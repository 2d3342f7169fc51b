"""RELAY_WORKERS=N: N processes share the port, each with its own spool and its own file."""

from __future__ import annotations

from pathlib import Path

import orjson
import urllib3

from tests.helpers.payloads import otlp_json_spans, span_ids
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until


def test_two_workers_share_the_port_and_lose_nothing(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data", {"RELAY_WORKERS": "2"}).start()
    try:
        sent: set[str] = set()
        for _ in range(40):
            body = otlp_json_spans(2)
            # A new connection each time, so the kernel spreads them over the workers.
            response = urllib3.request(
                "POST",
                relay.url + "/v1/traces",
                body=body,
                headers={"Content-Type": "application/json", "Connection": "close"},
                timeout=10,
            )
            assert response.status == 200
            sent.update(span_ids(body))
        files = [tmp_path / "data" / f"llm-events.w{i}.jsonl" for i in (0, 1)]

        def stored() -> dict[Path, set[str]]:
            found: dict[Path, set[str]] = {}
            for path in files:
                lines = path.read_bytes().splitlines() if path.exists() else []
                found[path] = {orjson.loads(line)["span_id"] for line in lines}
            return found

        wait_until(lambda: set().union(*stored().values()) == sent, message="all 80 events stored")
        assert all(stored().values()), "both workers took requests"
        assert (tmp_path / "data" / "spool" / "worker-1.sqlite3").exists()
    finally:
        assert relay.stop() == 0


def test_one_scrape_counts_every_workers_events(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data", {"RELAY_WORKERS": "2"}).start()
    try:
        for _ in range(30):
            response = urllib3.request(
                "POST",
                relay.url + "/v1/traces",
                body=otlp_json_spans(1, "shared-model"),
                headers={"Content-Type": "application/json", "Connection": "close"},
                timeout=10,
            )
            assert response.status == 200
        line = (
            'llm_requests_total{gateway="openrouter",model="shared-model",provider="unknown",'
            'status="ok",upstream="unknown"} 30.0'
        )
        for _ in range(5):  # whichever worker answers, the count is the relay's
            scrape = urllib3.request("GET", relay.url + "/metrics", headers={"Connection": "close"})
            assert line in scrape.data.decode()
    finally:
        assert relay.stop() == 0
