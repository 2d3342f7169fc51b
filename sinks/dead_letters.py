"""Dead letters: events a sink refused for good, kept with the reason so they can be replayed.

One JSON Lines file per sink, ``<data dir>/dead-letter/<sink>.jsonl``; each line is
``{"dead_lettered_at", "sink", "reason", "error", "event"}``. ``llm-broadcast-relay replay`` reads
these lines as well as file-sink lines.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from receiver.normalizers.common import rfc3339_ns
from schemas import LLMEvent


class DeadLetters:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dead-letters")

    def path(self, sink: str) -> Path:
        return self.directory / f"{sink}.jsonl"

    async def write(self, sink: str, events: Sequence[LLMEvent], reason: str, error: str) -> None:
        at = rfc3339_ns(time.time_ns())
        data = b"".join(
            orjson.dumps(
                {"dead_lettered_at": at, "sink": sink, "reason": reason, "error": error, "event": e}
            )
            + b"\n"
            for e in events
        )
        await asyncio.get_running_loop().run_in_executor(self._executor, self._append, sink, data)

    def _append(self, sink: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.path(sink), "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        self._executor.shutdown(wait=True)
