"""The sinks the relay knows, by the name used in ``RELAY_SINKS``.

Registration is one dict built in one place, as the Collector's generated ``components.go`` is: a
new sink is a module with a ``SPEC`` and a line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from foundation.settings import EnvReader
from sinks.base import DispatchSettings, Sink


class SinkConfig(Protocol):
    def describe(self) -> dict[str, Any]:
        """The effective settings for the start-up log, secrets masked."""


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """How to configure and build one kind of sink."""

    name: str
    read_config: Callable[[EnvReader, Path], SinkConfig]
    build: Callable[[Any], Sink]
    defaults: DispatchSettings
    # With RELAY_WORKERS > 1, how worker N's copy of the config differs (e.g. its own file).
    per_worker: Callable[[Any, int], Any] | None = None

    def build_for(self, config: Any, worker: int, workers: int) -> Sink:
        if workers > 1 and self.per_worker is not None:
            config = self.per_worker(config, worker)
        return self.build(config)


def sink_specs() -> dict[str, SinkSpec]:
    from sinks import datadog, file, tempo

    return {spec.name: spec for spec in (file.SPEC, tempo.SPEC, datadog.SPEC)}


def read_dispatch_settings(
    env: EnvReader, name: str, defaults: DispatchSettings
) -> DispatchSettings:
    """``RELAY_<SINK>_<SETTING>``: the same tuning knobs for every sink."""
    prefix = f"RELAY_{name.upper()}_"
    return DispatchSettings(
        batch_size=env.integer(prefix + "BATCH_SIZE", defaults.batch_size, 1, 100_000),
        batch_max_bytes=env.integer(
            prefix + "BATCH_MAX_BYTES", defaults.batch_max_bytes, 1024, 1 << 30
        ),
        flush_interval=env.number(prefix + "FLUSH_INTERVAL", defaults.flush_interval, 0.0, 3600.0),
        max_retry_time=env.number(prefix + "MAX_RETRY_TIME", defaults.max_retry_time, 0.0),
        initial_backoff=env.number(prefix + "INITIAL_BACKOFF", defaults.initial_backoff, 0.001),
        max_backoff=env.number(prefix + "MAX_BACKOFF", defaults.max_backoff, 0.001),
        retry_after_cap=env.number(prefix + "RETRY_AFTER_CAP", defaults.retry_after_cap, 0.0),
        timeout=env.number(prefix + "TIMEOUT", defaults.timeout, 0.1, 3600.0),
        max_event_age=defaults.max_event_age,
    )
