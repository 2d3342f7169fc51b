"""The relay's configuration: every setting is an environment variable (see README).

``load_config`` reads them all, validates every one, and raises ``ConfigError`` naming every bad
variable at once. Defaults live here and nowhere else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

from foundation.secrets import is_placeholder, is_secret_key
from foundation.settings import ConfigError, EnvReader, mask
from schemas.content import CONTENT_POLICIES, ContentPolicy, loosest
from sinks.base import DispatchSettings
from sinks.http import safe_url
from sinks.registry import sink_specs
from sinks.spec import SinkConfig, SinkSpec


@dataclass(frozen=True, slots=True)
class SinkSetup:
    spec: SinkSpec
    config: SinkConfig
    dispatch: DispatchSettings


@dataclass(frozen=True, slots=True)
class RelayConfig:
    # Loopback unless told otherwise, as the OpenTelemetry Collector's receivers since 0.104: a
    # relay started by hand with open ingest is not reachable from the network by accident. The
    # image and the manifests set 0.0.0.0.
    host: str = "127.0.0.1"
    port: int = 4318
    data_dir: Path = Path("data")
    max_body_bytes: int = 20 * 1024 * 1024
    # A connection must send a whole request head this long after it opens or after its last
    # answer (an idle keep-alive connection closes then too); a body must arrive this long after
    # its head. Without them a slow client holds a connection, and a file descriptor, for ever.
    header_timeout: float = 30.0
    body_timeout: float = 60.0
    spool_max_bytes: int = 1024 * 1024 * 1024
    # The default of every sink's RELAY_<SINK>_CONTENT; ``stored_content`` is what the spool keeps.
    content: ContentPolicy = "full"
    # token -> tenant (None when the token carries no tenant)
    ingest_tokens: Mapping[str, str | None] = field(default_factory=dict)
    workers: int = 1
    # After SIGTERM, /readyz answers 503 this long while ingest goes on storing and answering, so
    # that load balancers stop routing here before the socket closes (Kubernetes removes a pod
    # from its endpoints a few seconds after it starts terminating; connections refused meanwhile
    # are events lost for gateways that do not retry). Then requests in flight and sends in
    # flight have shutdown_grace to finish. 0 by default: nothing routes by /readyz to a relay
    # started by hand, and Ctrl-C should stop it at once; the Kubernetes manifest sets 5.
    shutdown_delay: float = 0.0
    shutdown_grace: float = 10.0
    # Probe every sink once after start, in the background, and log what fails (never stops the
    # start): a closed port or a refused key is said at once, not at the first event.
    probe_sinks_at_start: bool = True
    # Price an event whose gateway reported no cost from genai-prices' table (cost.source "table",
    # never over a reported cost); false leaves such a cost unknown.
    cost_table: bool = True
    log_level: str = "info"
    sinks: Mapping[str, SinkSetup] = field(default_factory=dict)

    @property
    def stored_content(self) -> ContentPolicy:
        """What the spool keeps of content: the least strict policy any sink sends with. Each
        sink's dispatcher applies its own to what it sends."""
        return loosest(
            setup.dispatch.selection.content or self.content for setup in self.sinks.values()
        )

    def describe(self) -> dict[str, Any]:
        """The effective configuration, as logged at start: secrets masked."""
        return {
            "host": self.host,
            "port": self.port,
            "data_dir": str(self.data_dir),
            "max_body_bytes": self.max_body_bytes,
            "header_timeout": self.header_timeout,
            "body_timeout": self.body_timeout,
            "spool_max_bytes": self.spool_max_bytes,
            "content": self.content,
            "stored_content": self.stored_content,
            "ingest_tokens": [
                f"{tenant or '-'}={mask(token)}" for token, tenant in self.ingest_tokens.items()
            ],
            "workers": self.workers,
            "shutdown_delay": self.shutdown_delay,
            "shutdown_grace": self.shutdown_grace,
            "probe_sinks_at_start": self.probe_sinks_at_start,
            "cost_table": self.cost_table,
            "sinks": {
                name: {**setup.config.describe(), "dispatch": _dispatch(setup.dispatch)}
                for name, setup in self.sinks.items()
            },
        }


# Every default lives in the dataclass above; the loader reads them from here.
DEFAULTS: Final = RelayConfig()
DEFAULT_SINKS: Final = ("file",)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MIN_SPOOL_BYTES: Final = 64 * 1024
# A token shorter than this is logged as a warning at start (never refused: it may be in use).
SHORT_TOKEN: Final = 16


def _dispatch(settings: DispatchSettings) -> dict[str, Any]:
    selection = settings.selection
    return {
        "batch_size": settings.batch_size,
        "flush_interval": settings.flush_interval,
        "max_retry_time": settings.max_retry_time,
        "timeout": settings.timeout,
        "filter": selection.filter.source if selection.filter else None,
        "sample_rate": selection.sample_rate,
        "sample_keep_errors": selection.keep_errors,
        "sample_keep_cost_above": selection.keep_cost_above,
        "content": selection.content,
        "content_max_bytes": selection.content_max_bytes,
    }


def _read_tokens(env: EnvReader) -> dict[str, str | None]:
    tokens: dict[str, str | None] = {}
    for index, item in enumerate(env.items("RELAY_INGEST_TOKENS"), start=1):
        tenant, sep, token = item.partition("=")
        if not sep:
            tenant, token = "", item
        tenant, token = tenant.strip(), token.strip()
        if not token or (sep and not tenant):
            # The item is a secret: name its position, never its text.
            env.problem("RELAY_INGEST_TOKENS", f"item {index} must be 'token' or 'tenant=token'")
            continue
        if is_placeholder(token):
            env.problem(
                "RELAY_INGEST_TOKENS",
                f"item {index} is a placeholder, not a token: generate one with"
                " `openssl rand -hex 32` (or leave RELAY_INGEST_TOKENS unset for open ingest)",
            )
            continue
        tokens[token] = tenant or None
    return tokens


def short_tokens(tokens: Mapping[str, str | None]) -> list[str]:
    """The tenants (``-`` for none) whose token is shorter than ``SHORT_TOKEN``: worth a warning
    (a short token can be guessed), not a refusal (it may be what the gateways send today)."""
    return [tenant or "-" for token, tenant in tokens.items() if len(token) < SHORT_TOKEN]


def load_config(environ: Mapping[str, str] | None = None) -> RelayConfig:
    return _load(EnvReader(os.environ if environ is None else environ))


def known_variables() -> frozenset[str]:
    """Every environment variable the relay reads, with every sink enabled."""
    env = EnvReader({"RELAY_SINKS": ",".join(sink_specs())})
    # Required values are missing here; the names were read all the same.
    with contextlib.suppress(ConfigError):
        _load(env)
    return frozenset(env.names)


def _load(env: EnvReader) -> RelayConfig:
    data_dir = Path(env.text("RELAY_DATA_DIR") or DEFAULTS.data_dir)
    specs = sink_specs()
    enabled = env.items("RELAY_SINKS", DEFAULT_SINKS)
    sinks: dict[str, SinkSetup] = {}
    for name in enabled:
        key = name.lower()
        spec = specs.get(key)
        if spec is None:
            env.problem("RELAY_SINKS", f"unknown sink {name!r} (known: {', '.join(specs)})")
            continue
        # Dispatch settings first: the sink's configuration takes its timeout from them.
        dispatch = spec.dispatch_settings(env)
        sinks[key] = SinkSetup(spec, spec.read_config(env, data_dir, dispatch), dispatch)
    if not enabled:
        env.problem("RELAY_SINKS", f"enable at least one sink: {', '.join(specs)}")
    config = RelayConfig(
        host=env.text("RELAY_HOST", DEFAULTS.host) or DEFAULTS.host,
        port=env.integer("RELAY_PORT", DEFAULTS.port, 0, 65535),
        data_dir=data_dir,
        max_body_bytes=env.integer("RELAY_MAX_BODY_BYTES", DEFAULTS.max_body_bytes, 1024),
        header_timeout=env.number("RELAY_HEADER_TIMEOUT", DEFAULTS.header_timeout, 0.1, 3600.0),
        body_timeout=env.number("RELAY_BODY_TIMEOUT", DEFAULTS.body_timeout, 0.1, 3600.0),
        spool_max_bytes=env.integer(
            "RELAY_SPOOL_MAX_BYTES", DEFAULTS.spool_max_bytes, MIN_SPOOL_BYTES
        ),
        content=cast(
            ContentPolicy, env.choice("RELAY_CONTENT", DEFAULTS.content, CONTENT_POLICIES)
        ),
        ingest_tokens=_read_tokens(env),
        workers=env.integer("RELAY_WORKERS", DEFAULTS.workers, 1, 256),
        shutdown_delay=env.number("RELAY_SHUTDOWN_DELAY", DEFAULTS.shutdown_delay, 0.0, 3600.0),
        shutdown_grace=env.number("RELAY_SHUTDOWN_GRACE", DEFAULTS.shutdown_grace, 0.0, 3600.0),
        probe_sinks_at_start=env.boolean(
            "RELAY_PROBE_SINKS_AT_START", DEFAULTS.probe_sinks_at_start
        ),
        cost_table=env.boolean("RELAY_COST_TABLE", DEFAULTS.cost_table),
        log_level=env.choice("RELAY_LOG_LEVEL", DEFAULTS.log_level, LOG_LEVELS),
        sinks=sinks,
    )
    config = replace(config, sinks=_with_content(config.sinks, config.content))
    _refuse_self_loops(env, config)
    _refuse_placeholders(env)
    env.raise_problems()
    return config


def _with_content(sinks: Mapping[str, SinkSetup], default: ContentPolicy) -> dict[str, SinkSetup]:
    """Each sink's content policy: its own RELAY_<SINK>_CONTENT, else RELAY_CONTENT."""
    resolved = {}
    for name, setup in sinks.items():
        selection = setup.dispatch.selection
        content = selection.content or default
        dispatch = replace(setup.dispatch, selection=replace(selection, content=content))
        resolved[name] = replace(setup, dispatch=dispatch)
    return resolved


def _refuse_placeholders(env: EnvReader) -> None:
    """A sink credential (``DD_API_KEY``, ``RELAY_TEMPO_BASIC_AUTH``, ...) that is a placeholder
    would only fail at the first send; refused at start like a missing one. Only the variables an
    enabled sink read are looked at: a Secret's ``DD_API_KEY: replace-me`` is fine without the
    Datadog sink. The ingest tokens are checked item by item in ``_read_tokens``."""
    for name in sorted(env.names):
        if name == "RELAY_INGEST_TOKENS" or not is_secret_key(name):
            continue
        if is_placeholder(env.environ.get(name, ""), pair=name.endswith("_BASIC_AUTH")):
            env.problem(name, "is a placeholder, not a credential: set the real value")


def _refuse_self_loops(env: EnvReader, config: RelayConfig) -> None:
    """An OTLP destination that is the relay itself would bring every event back as a new one."""
    for setup in config.sinks.values():
        for variable, endpoint in setup.config.endpoints().items():
            if points_at(endpoint, config.host, config.port):
                env.problem(
                    variable,
                    f"{safe_url(endpoint)} is this relay itself (RELAY_PORT={config.port}): every"
                    " event would come back as a new event, forever. Tempo and other OTLP"
                    " receivers also listen on 4318 by default: give the relay another RELAY_PORT"
                    " or the receiver's own address",
                )


def points_at(url: str, host: str, port: int) -> bool:
    """Whether ``url`` reaches a server listening on ``host:port`` on this machine."""
    parts = urlsplit(url)
    try:
        url_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if url_port != port or not parts.hostname:
        return False
    listening = _addresses(host)
    for address in _addresses(parts.hostname):
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip.is_unspecified or _is_local(address)):
            continue
        if any(ipaddress.ip_address(a).is_unspecified for a in listening) or address in listening:
            return True
    return False


def _addresses(host: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {str(info[4][0]).split("%")[0] for info in infos}


def _is_local(address: str) -> bool:
    """Only an address of this machine can be bound."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


__all__ = ["ConfigError", "RelayConfig", "SinkSetup", "known_variables", "load_config"]
