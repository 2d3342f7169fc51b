"""Arize Phoenix (``arize-phoenix`` from PyPI) as a real OTLP trace store, in its own process.

Phoenix takes OTLP/HTTP protobuf at ``/v1/traces`` (gzip or deflate), stores spans in SQLite and
serves them back over its REST API (``/v1/projects/<project>/spans``). It is heavy (a large venv,
about 25 s to start on two cores), so ``make test`` installs it into ``.venv-phoenix``, passes its
executable as ``PHOENIX_TEST_SERVER`` and the tests start one per session. Notes on running it:
shared/research/sinks/phoenix-peer.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import urllib3

from tests.helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0


def phoenix_executable() -> str | None:
    configured = os.environ.get("PHOENIX_TEST_SERVER")
    if configured:
        return configured
    local = ROOT / ".venv-phoenix" / "bin" / "phoenix"
    if local.exists():
        return str(local)
    return shutil.which("phoenix")


class Phoenix:
    """One running Phoenix server on free loopback ports; tests keep apart by project."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.port = free_port()
        grpc_port = free_port()  # its default, 4317, may be taken (the test agent's is moved too)
        # Nothing of this machine's PHOENIX_* settings leaks in; everything it writes stays in
        # workdir, and it reaches nothing outside loopback.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
        env.update(
            {
                "PHOENIX_HOST": "127.0.0.1",
                "PHOENIX_PORT": str(self.port),
                "PHOENIX_GRPC_PORT": str(grpc_port),
                "PHOENIX_WORKING_DIR": str(workdir),
                "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{workdir / 'phoenix.db'}",
                "PHOENIX_TELEMETRY_ENABLED": "false",
                "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
                "PHOENIX_LOG_SQL": "false",
                "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
                "PHOENIX_AGENTS_DISABLE_BASH": "true",
            }
        )
        self.log_path = workdir / "phoenix.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [executable, "serve"],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._http = urllib3.PoolManager(retries=False)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self) -> str:
        return self.url + "/v1/traces"

    def _wait_healthy(self) -> None:
        """Poll ``/healthz`` until it answers 200; the process exiting first is a failure."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"phoenix exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                if self._http.request("GET", self.url + "/healthz", timeout=1.0).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"phoenix not healthy within {START_TIMEOUT:.0f}s; see {self.log_path}")

    def spans(self, project: str) -> list[dict[str, Any]]:
        """The spans Phoenix stored for a project; none yet (404) while it is being created."""
        url = f"{self.url}/v1/projects/{quote(project, safe='')}/spans?limit=100"
        response = self._http.request("GET", url, timeout=5.0)
        if response.status == 404:
            return []
        if response.status != 200:
            raise AssertionError(f"phoenix answered {response.status} for {url}: {response.data!r}")
        found: list[dict[str, Any]] = orjson.loads(response.data)["data"]
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def phoenix_messages(attributes: dict[str, Any], side: str) -> list[dict[str, Any]]:
    """Phoenix's flattened ``llm.<side>_messages.<i>.message.<field>`` as one dict per message
    (tool call arguments, which it writes as JSON text, read back)."""
    prefix = f"llm.{side}_messages."
    messages: dict[int, dict[str, Any]] = {}
    for key, value in attributes.items():
        if key.startswith(prefix):
            index, _, field = key[len(prefix) :].partition(".message.")
            if field.endswith(".function.arguments"):
                value = orjson.loads(value)
            messages.setdefault(int(index), {})[field] = value
    return [messages[i] for i in sorted(messages)]
