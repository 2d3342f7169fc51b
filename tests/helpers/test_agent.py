"""Datadog's own test agent (``ddapm-test-agent`` from PyPI) as a real peer, in its own process.

It is an OTLP/HTTP receiver (``/v1/traces``, read back via ``/test/session/traces``) and an Agent
EVP proxy (``/evp_proxy/v2/api/v2/llmobs``, read back via ``/test/session/requests``). It pins an
older opentelemetry-proto than the relay, so ``make test`` installs it into ``.venv-testagent`` and
points ``DDAPM_TEST_AGENT`` at its executable.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import urllib3

from tests.helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def agent_executable() -> str | None:
    configured = os.environ.get("DDAPM_TEST_AGENT")
    if configured:
        return configured
    local = ROOT / ".venv-testagent" / "bin" / "ddapm-test-agent"
    if local.exists():
        return str(local)
    return shutil.which("ddapm-test-agent")


class TestAgent:
    """One running ddapm-test-agent; each test takes a fresh session token."""

    __test__ = False  # not a pytest test class

    def __init__(self, executable: str, workdir: Path) -> None:
        self.apm_port = free_port()
        self.otlp_port = free_port()
        self.grpc_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
        env["LOG_LEVEL"] = "WARNING"
        self._log = open(workdir / "test-agent.log", "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [
                executable,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.apm_port),
                "--otlp-http-port",
                str(self.otlp_port),
                "--otlp-grpc-port",
                str(self.grpc_port),
                "--disable-llmobs-data-forwarding",
                "--snapshot-dir",
                str(workdir),
            ],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._http = urllib3.PoolManager()
        self._wait_ready()

    @property
    def apm_url(self) -> str:
        return f"http://127.0.0.1:{self.apm_port}"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def _get(self, url: str) -> Any:
        response = self._http.request("GET", url, timeout=5.0)
        if response.status != 200:
            raise AssertionError(
                f"test agent answered {response.status} for {url}: {response.data!r}"
            )
        return orjson.loads(response.data) if response.data[:1] in (b"[", b"{") else response.data

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ddapm-test-agent exited with {self.process.returncode}")
            try:
                self._http.request("GET", self.apm_url + "/info", timeout=1.0)
                self._http.request("GET", self.otlp_url + "/test/session/requests", timeout=1.0)
                return
            except urllib3.exceptions.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("ddapm-test-agent did not start within 60s")

    def new_session(self) -> str:
        token = uuid.uuid4().hex
        self._get(f"{self.apm_url}/test/session/start?test_session_token={token}")
        return token

    def requests(self, token: str, *, otlp: bool = False) -> list[dict[str, Any]]:
        """Requests the agent stored for a session, bodies decoded from base64."""
        base = self.otlp_url if otlp else self.apm_url
        stored = self._get(f"{base}/test/session/requests?test_session_token={token}")
        for item in stored:
            item["body"] = base64.b64decode(item.get("body") or b"")
        return list(stored)

    def otlp_traces(self, token: str) -> list[dict[str, Any]]:
        """OTLP payloads the agent received for a session, as it decoded them."""
        traces: list[dict[str, Any]] = self._get(
            f"{self.otlp_url}/test/session/traces?test_session_token={token}"
        )
        return traces

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
