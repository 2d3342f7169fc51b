"""The README's first steps as a newcomer takes them: ``make run`` with the settings of
``.env.example`` (copied, as its first line says) serves, warns about nothing it does not know, and
stores the quickstart's first event where the README says it will be."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
import urllib3

from tests.helpers.ports import free_port
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def env_file(tmp_path: Path, port: int) -> Path:
    """``.env.example`` as a user fills it in: every line kept, the port and data directory set
    to this test's (the example's own are a user's defaults)."""
    text = (ROOT / ".env.example").read_text()
    text = re.sub(r"(?m)^RELAY_PORT=.*$", f"RELAY_PORT={port}", text)
    text = re.sub(r"(?m)^RELAY_DATA_DIR=.*$", f"RELAY_DATA_DIR={tmp_path / 'data'}", text)
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_make_run_serves_with_the_settings_of_env_example(tmp_path: Path) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "DD_"))}
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"ENV_FILE={env_file(tmp_path, port)}"],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped below by its id
        )
    http = urllib3.PoolManager(retries=False)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert make.poll() is None, log.read_text()
        try:
            return http.request("GET", url + "/readyz", timeout=1.0).status == 200
        except urllib3.exceptions.HTTPError:
            return False

    try:
        wait_until(ready, timeout=120, message="make run serving")
        body = (ROOT / "examples" / "native-event.json").read_bytes()
        answer = http.request(
            "POST", url + "/v1/events", body=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status == 200, answer.data
        events = tmp_path / "data" / "llm-events.jsonl"
        sent = [e["event_id"] for e in orjson.loads(body)]
        wait_until(
            lambda: events.exists() and events.read_bytes().count(b"\n") >= len(sent),
            message="the example's events in the file sink",
        )
        written = [orjson.loads(line)["event_id"] for line in events.read_bytes().splitlines()]
        assert written == sent
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
    text = log.read_text()
    assert "unknown_variables" not in text, text
    assert "ingest_open" in text  # .env.example leaves the token empty, and the relay says so
