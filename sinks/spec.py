"""What a kind of sink declares to be configured and built: its ``SinkSpec``.

Every sink module holds one ``SinkSpec`` (the OTLP presets one each) and ``sinks.registry`` lists
them. The relay reads a sink's dispatch settings first (``RELAY_<SINK>_BATCH_SIZE``, ``_TIMEOUT``
...), then its own configuration, which takes the timeout from those settings: each variable is
read once, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from foundation.settings import EnvReader
from schemas.content import CONTENT_POLICIES, ContentPolicy
from sinks.base import DispatchSettings, Sink
from sinks.event_filter import EventFilter, FilterSyntaxError
from sinks.selection import Selection

# The smallest RELAY_<SINK>_CONTENT_MAX_BYTES: room for a sentence, and more than a hashed text
# (``sha256:`` and 64 hex digits, 71 bytes), which is never worth cutting.
MIN_CONTENT_BYTES = 128


class SinkConfig(Protocol):
    """What the relay needs of any sink's configuration."""

    def describe(self) -> dict[str, Any]:
        """The effective settings for the start-up log, secrets masked."""

    def endpoints(self) -> Mapping[str, str]:
        """Each URL this sink posts OTLP to, by the variable that sets it (empty for none).

        The relay refuses to start when one of them is the relay itself.
        """


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """How to configure and build one kind of sink."""

    name: str
    # (environment, data directory, this sink's dispatch settings) -> its configuration.
    read_config: Callable[[EnvReader, Path, DispatchSettings], SinkConfig]
    build: Callable[[Any], Sink]
    defaults: DispatchSettings
    # With RELAY_WORKERS > 1, how worker N's copy of the config differs (e.g. its own file).
    per_worker: Callable[[Any, int], Any] | None = None
    # Defaults the environment sets below the RELAY_<SINK>_* variables (the generic OTLP sink's
    # OTEL_EXPORTER_OTLP_TIMEOUT), given the spec's own defaults.
    environment_defaults: Callable[[EnvReader, DispatchSettings], DispatchSettings] | None = None

    def build_for(self, config: Any, worker: int, workers: int) -> Sink:
        if workers > 1 and self.per_worker is not None:
            config = self.per_worker(config, worker)
        return self.build(config)

    def dispatch_settings(self, env: EnvReader) -> DispatchSettings:
        """This sink's dispatch settings: the spec's defaults, then the environment's."""
        defaults = self.defaults
        if self.environment_defaults is not None:
            defaults = self.environment_defaults(env, defaults)
        return read_dispatch_settings(env, self.name, defaults)


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
        selection=read_selection(env, name),
    )


def read_selection(env: EnvReader, name: str) -> Selection:
    """``RELAY_<SINK>_FILTER``, ``_SAMPLE_RATE``, ``_SAMPLE_KEEP_ERRORS``,
    ``_SAMPLE_KEEP_COST_ABOVE``, ``_CONTENT`` and ``_CONTENT_MAX_BYTES`` (``sinks.selection``)."""
    prefix = f"RELAY_{name.upper()}_"
    event_filter = None
    if source := env.text(prefix + "FILTER"):
        try:
            event_filter = EventFilter.compile(source)
        except FilterSyntaxError as error:
            env.problem(prefix + "FILTER", str(error))
    keep_cost_above = None
    if env.text(prefix + "SAMPLE_KEEP_COST_ABOVE") is not None:
        keep_cost_above = env.number(prefix + "SAMPLE_KEEP_COST_ABOVE", 0.0, 0.0)
    content = None
    if env.text(prefix + "CONTENT") is not None:
        content = cast(ContentPolicy, env.choice(prefix + "CONTENT", "full", CONTENT_POLICIES))
    max_bytes = None
    if env.text(prefix + "CONTENT_MAX_BYTES") is not None:
        max_bytes = env.integer(prefix + "CONTENT_MAX_BYTES", 1 << 20, MIN_CONTENT_BYTES)
    return Selection(
        sink=name,
        filter=event_filter,
        sample_rate=env.number(prefix + "SAMPLE_RATE", 1.0, 0.0, 1.0),
        keep_errors=env.boolean(prefix + "SAMPLE_KEEP_ERRORS", True),
        keep_cost_above=keep_cost_above,
        content=content,
        content_max_bytes=max_bytes,
    )
