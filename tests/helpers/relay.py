"""The relay as users run it: a subprocess (``python -m service``) on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import psutil
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


class RelayProcess:
    """Start, wait until ready, talk to, and stop (gracefully or with ``kill -9``) a relay."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        # Run in the child before the relay starts (e.g. a lower limit on open files).
        self.preexec = preexec
        self.port = free_port()
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"relay-{self.port}.log"
        self.http = urllib3.PoolManager(retries=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_file(self) -> Path:
        return Path(self.extra_env.get("RELAY_FILE_PATH", self.data_dir / "llm-events.jsonl"))

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "DD_", "OTEL_"))}
        env.update(
            {
                "RELAY_HOST": "127.0.0.1",
                "RELAY_PORT": str(self.port),
                "RELAY_DATA_DIR": str(self.data_dir),
                "RELAY_FILE_FLUSH_INTERVAL": "0.05",
                "RELAY_SHUTDOWN_GRACE": "5",
                # Tests stop relays often, and their scripted peers count requests: no delay
                # and no probe at start unless a test asks for them.
                "RELAY_SHUTDOWN_DELAY": "0",
                "RELAY_PROBE_SINKS_AT_START": "false",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> RelayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"relay exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.http.request("GET", self.url + "/readyz", timeout=1.0).status == 200:
                    return self
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"relay not ready within {timeout}s:\n{self.log()}")

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self, event: str, **fields: object) -> list[dict[str, Any]]:
        """The relay's JSON log records named ``event`` whose fields include ``fields``, so far.
        Workers share one stderr and a record's newline is written apart from it, so two records
        may share a line; the last one may still be being written."""
        decoder = json.JSONDecoder()
        found = []
        for text in self.log().splitlines():
            at = 0
            while at < len(text):
                try:
                    record, at = decoder.raw_decode(text, at)
                except json.JSONDecodeError:
                    break
                named = isinstance(record, dict) and record.get("event") == event
                if named and fields.items() <= record.items():
                    found.append(record)
        return found

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> urllib3.BaseHTTPResponse:
        return self.http.request(
            method, self.url + path, body=body, headers=dict(headers or {}), timeout=timeout
        )

    def get_json(self, path: str) -> Any:
        return orjson.loads(self.request("GET", path).data)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``, scraped now."""
        text = self.request("GET", "/metrics").data.decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def events(self) -> list[dict[str, Any]]:
        """The file sink's events so far (a partial last line is still being written)."""
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_bytes().split(b"\n")
        return [orjson.loads(line) for line in lines[:-1] if line]

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the relay drains within its grace period."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"relay did not stop within {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """``kill -9``: no chance to flush or drain."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_all(self) -> None:
        """``kill -9`` the relay and its worker processes (``RELAY_WORKERS`` > 1): for clean-up."""
        if self.process is None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.kill()
        psutil.wait_procs(children, timeout=10)

    def run_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m service <args>`` (e.g. ``replay``) with the relay's environment."""
        return subprocess.run(
            [sys.executable, "-m", "service", *args],
            cwd=ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def run_relay(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A relay start expected to fail fast (``python -m service`` with ``env``): its exit code
    and what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
