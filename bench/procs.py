"""The processes a benchmark starts: pinned to a core, watched with psutil, always cleaned up.

Only processes started here are ever signalled, by their own PID.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def relay_environment(port: int, data_dir: Path, **settings: str) -> dict[str, str]:
    """A benchmarked relay's environment: this process's without any RELAY_, DD_ or OTEL_ setting
    it may carry, the relay's address and data directory on loopback, and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "DD_", "OTEL_"))}
    env.update(
        {
            "RELAY_HOST": HOST,
            "RELAY_PORT": str(port),
            "RELAY_DATA_DIR": str(data_dir),
            "RELAY_SHUTDOWN_GRACE": "5",
            # No probe request at start: the peers count what they are sent.
            "RELAY_PROBE_SINKS_AT_START": "false",
            **settings,
        }
    )
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Cores:
    """Where each process runs: the server alone on one core, everything else on another."""

    server: frozenset[int] | None
    client: frozenset[int] | None

    @classmethod
    def plan(cls) -> Cores:
        if not hasattr(os, "sched_getaffinity"):
            return cls(None, None)
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls(None, None)
        return cls(frozenset({available[-1]}), frozenset({available[0]}))

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "not pinned (fewer than 2 cores or no sched_setaffinity)"
        server, client = sorted(self.server), sorted(self.client)
        return (
            f"server (relay / null receiver) on core {server}; load generator and peers on {client}"
        )


def _preexec(cores: frozenset[int] | None) -> Any:
    if cores is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cores)

    return pin


class Child:
    """One subprocess: started with ``python -m <module>``, its output in a log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        cores: frozenset[int] | None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=dict(env) if env is not None else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_preexec(cores),  # sets the CPU affinity only
            )
        finally:
            log.close()
        self.ps = psutil.Process(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self, tail: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:]

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its children (threads included)."""
        total = 0.0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def peak_rss_bytes(self) -> int:
        """The high-water mark (Linux ``VmHWM``) summed over the tree, else the current RSS."""
        total = 0
        for proc in self._tree():
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += proc.memory_info().rss
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
                    break
        return total

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: to this PID only."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.process.kill()
            self.process.wait(10)


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def wait_ready(child: Child, port: int, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log()}")
        try:
            if http_get(port, path, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} not ready within {timeout}s:\n{child.log()}")


class Poller:
    """A kept-alive HTTP connection for frequent small GETs to one loopback port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._connection: http.client.HTTPConnection | None = None

    def get(self, path: str) -> bytes:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(HOST, self.port, timeout=5.0)
            try:
                self._connection.request("GET", path)
                answer = self._connection.getresponse()
                return answer.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class LineCounter:
    """Counts the lines written to a file that may be rotated (renamed and replaced) meanwhile.

    The file is followed by inode: when the path names a new file, the old one (still open here
    even if the writer renamed, compressed and deleted it) is read to its end first.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._handle: IO[bytes] | None = None
        self._inode: int | None = None

    def count(self) -> int:
        while True:
            if self._handle is None:
                try:
                    self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open across calls
                except FileNotFoundError:
                    return self.lines
                self._inode = os.fstat(self._handle.fileno()).st_ino
            self._drain()
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                return self.lines  # between the rename and the new file
            if current == self._inode:
                return self.lines
            self._drain()  # rotated: finish the old file, then follow the new one
            self.close()

    def _drain(self) -> None:
        assert self._handle is not None
        while chunk := self._handle.read(1 << 20):
            self.lines += chunk.count(b"\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
