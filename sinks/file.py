"""File sink: one LLMEvent per line (JSON Lines), rotated by size, rotated files compressed.

The active file is always ``RELAY_FILE_PATH``. When it would pass ``RELAY_FILE_MAX_MB`` it is
renamed ``<stem>-<UTC timestamp><ext>`` (the Collector's file exporter naming) and compressed into a
standard gzip or zstd stream, so ``zcat`` / ``zstdcat`` read every rotated file; only the newest
``RELAY_FILE_MAX_BACKUPS`` are kept. All file work runs in one worker thread so that writes and
compression never block the event loop. Lines are appended through ``sinks.line_file``: a batch
lands whole or, on a full disk, not at all.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import structlog
import zstandard

from foundation.settings import EnvReader
from sinks.base import (
    Batch,
    DispatchSettings,
    ProbeResult,
    RetryableError,
    SendResult,
    not_started,
)
from sinks.line_file import LineFile
from sinks.spec import SinkSpec

log = structlog.get_logger("relay.sinks.file")

Compression = Literal["none", "gzip", "zstd"]
_SUFFIX: Final[dict[str, str]] = {"none": "", "gzip": ".gz", "zstd": ".zst"}
# Below this much free space the setup check fails: rotation needs room for one more file.
MIN_FREE_BYTES: Final = 64 * 1024 * 1024


# Defaults, used by the dataclass and the loader alike.
DEFAULT_MAX_MB: Final = 100
DEFAULT_MAX_BACKUPS: Final = 10
DEFAULT_COMPRESS: Final[Compression] = "gzip"
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileSinkConfig:
    path: Path
    max_bytes: int = DEFAULT_MAX_MB * MIB
    max_backups: int = DEFAULT_MAX_BACKUPS
    compress: Compression = DEFAULT_COMPRESS
    fsync: bool = True

    @classmethod
    def from_env(
        cls, env: EnvReader, data_dir: Path, dispatch: DispatchSettings | None = None
    ) -> FileSinkConfig:
        path = Path(env.text("RELAY_FILE_PATH") or data_dir / "llm-events.jsonl")
        compress = env.choice("RELAY_FILE_COMPRESS", DEFAULT_COMPRESS, get_args(Compression))
        return cls(
            path=path,
            max_bytes=env.integer("RELAY_FILE_MAX_MB", DEFAULT_MAX_MB, 1, 1 << 20) * MIB,
            max_backups=env.integer("RELAY_FILE_MAX_BACKUPS", DEFAULT_MAX_BACKUPS, 0, 100_000),
            compress=cast(Compression, compress),
        )

    def for_worker(self, worker: int) -> FileSinkConfig:
        """Worker N writes ``<stem>.w<N><ext>``: one writer per file keeps rotation safe."""
        return replace(
            self, path=self.path.with_name(f"{self.path.stem}.w{worker}{self.path.suffix}")
        )

    def endpoints(self) -> Mapping[str, str]:
        return {}  # a file posts nowhere

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "max_mb": self.max_bytes // MIB,
            "max_backups": self.max_backups,
            "compress": self.compress,
        }


class FileSink:
    name = "file"

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self._executor: ThreadPoolExecutor | None = None
        self._file: LineFile | None = None
        self._rotated_ms = 0

    async def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-sink")

    async def send(self, batch: Batch) -> SendResult | None:
        executor = self._executor
        if executor is None:
            raise not_started(self.name)
        lines = batch.json
        data = b"\n".join(lines) + b"\n" if lines else b""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._write, data)
        except OSError as error:
            # A full disk or a vanished directory can heal; the spool keeps the events meanwhile.
            raise RetryableError(f"cannot write {self.config.path}: {error.strerror}") from error
        return None

    def _write(self, data: bytes) -> None:
        if self._file is not None:
            size = self._file.size
            if size > 0 and size + len(data) > self.config.max_bytes:
                self._rotate()
        if self._file is None:
            self._file = self._open()
        self._file.append(data)

    def _open(self) -> LineFile:
        self.config.path.parent.mkdir(parents=True, exist_ok=True)
        return LineFile(self.config.path, fsync=self.config.fsync)

    def _rotate(self) -> None:
        line_file, self._file = self._file, None
        if line_file is not None:
            line_file.close()
        path = self.config.path
        # Names sort by time; two rotations within one millisecond must not share a name (the
        # second would replace the first backup).
        self._rotated_ms = max(time.time_ns() // 1_000_000, self._rotated_ms + 1)
        seconds, millis = divmod(self._rotated_ms, 1000)
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(seconds)) + f".{millis:03d}"
        rotated = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
        os.replace(path, rotated)
        if self.config.compress != "none":
            self._compress(rotated)
        self._prune()

    def _compress(self, rotated: Path) -> None:
        """Replace a rotated file by its compressed copy; on a full disk keep it uncompressed."""
        compressed = rotated.with_name(rotated.name + _SUFFIX[self.config.compress])
        partial = compressed.with_name(compressed.name + ".partial")
        try:
            with open(rotated, "rb") as source, open(partial, "wb") as target:
                if self.config.compress == "gzip":
                    with gzip.GzipFile(fileobj=target, mode="wb", compresslevel=6) as stream:
                        shutil.copyfileobj(source, stream, 1 << 20)
                else:
                    zstandard.ZstdCompressor(level=3).copy_stream(source, target)
                target.flush()
                os.fsync(target.fileno())
            os.replace(partial, compressed)
        except OSError as error:
            # The rotated file is whole and readable as it is: give back the partial copy's space.
            partial.unlink(missing_ok=True)
            log.warning("rotated_file_not_compressed", path=str(rotated), error=str(error))
            return
        rotated.unlink()

    def rotated_files(self) -> list[Path]:
        """Rotated files, oldest first (their names sort by time)."""
        path = self.config.path
        pattern = f"{path.stem}-*{path.suffix}*"
        return sorted(p for p in path.parent.glob(pattern) if not p.name.endswith(".partial"))

    def _prune(self) -> None:
        rotated = self.rotated_files()
        for old in rotated[: max(0, len(rotated) - self.config.max_backups)]:
            old.unlink(missing_ok=True)

    async def probe(self) -> ProbeResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._probe)

    def _probe(self) -> ProbeResult:
        directory = self.config.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            check = directory / f".relay-probe-{os.getpid()}"
            check.write_bytes(b"ok")
            check.unlink()
        except OSError as error:
            return ProbeResult(False, f"File: cannot write to {directory}: {error.strerror}")
        free = shutil.disk_usage(directory).free
        details = {"path": str(self.config.path), "free_bytes": free}
        if free < MIN_FREE_BYTES:
            return ProbeResult(
                False, f"File: only {free // (1024 * 1024)} MiB free in {directory}", details
            )
        return ProbeResult(
            True, f"File: writing to {self.config.path} ({free // (1024 * 1024)} MiB free)", details
        )

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_file)
            executor.shutdown(wait=True)

    def _close_file(self) -> None:
        line_file, self._file = self._file, None
        if line_file is not None:
            line_file.close()


SPEC = SinkSpec(
    name="file",
    read_config=FileSinkConfig.from_env,
    build=FileSink,
    # Local disk: small, frequent batches keep the file close to real time.
    defaults=DispatchSettings(batch_size=1000, flush_interval=0.2, max_retry_time=86400.0),
    per_worker=FileSinkConfig.for_worker,
)
