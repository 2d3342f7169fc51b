"""The configuration of one OTLP destination: the generic ``otlp`` sink or a preset's sink.

Every OTLP sink reads ``RELAY_<SINK>_ENDPOINT`` (the full traces URL), ``_HEADERS`` (``k=v,...``),
``_BASIC_AUTH`` (``user:password``), ``_COMPRESSION`` (``gzip`` or ``none``) and its preset's extra
settings; the send timeout is the dispatcher's (``RELAY_<SINK>_TIMEOUT``), read once by it.

The generic ``otlp`` sink alone also falls back to the OpenTelemetry exporter variables, resolved
as opentelemetry-python's OTLP/HTTP span exporter resolves them: the explicit setting, else
``OTEL_EXPORTER_OTLP_TRACES_*``, else ``OTEL_EXPORTER_OTLP_*`` (whose endpoint is a base URL that
``/v1/traces`` is appended to), else the default. Headers from the environment are taken whole
from the first of those two set, and the explicit ``RELAY_OTLP_HEADERS`` are laid over them. A
preset never reads OTEL_* variables: two destinations must not share one variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from foundation.settings import EnvReader, mask
from sinks.base import DispatchSettings
from sinks.http import Hints, safe_url
from sinks.otlp_presets import BY_NAME, GENERIC, Preset, template_keys

Compression = Literal["gzip", "none"]
COMPRESSIONS: Final = ("gzip", "none")
DEFAULT_TIMEOUT: Final = 10.0  # the OTLP exporters' own default, in seconds
OTEL: Final = "OTEL_EXPORTER_OTLP_"
OTEL_TRACES: Final = "OTEL_EXPORTER_OTLP_TRACES_"
# What ``_hints`` says for the generic sink; the default of configurations built in code.
GENERIC_HINTS: Final = Hints(
    credentials="check RELAY_OTLP_BASIC_AUTH (and any credentials in RELAY_OTLP_HEADERS or"
    " OTEL_EXPORTER_OTLP_(TRACES_)HEADERS)",
    endpoint="check RELAY_OTLP_ENDPOINT (the full traces URL, e.g. https://host/v1/traces)",
)


@dataclass(frozen=True, slots=True)
class OtlpSinkConfig:
    """Where and how one OTLP sink posts its spans."""

    endpoint: str
    name: str = "otlp"  # the sink's name: RELAY_SINKS, status, metric labels
    title: str = "OTLP"  # how messages name the destination
    headers: Mapping[str, str] = field(default_factory=dict)
    basic_auth: str | None = None
    compression: Compression = "gzip"
    timeout: float = DEFAULT_TIMEOUT
    # Resource attributes added to (or replacing) the relay's own (service.name = gateway).
    resource: Mapping[str, Any] = field(default_factory=dict)
    hints: Hints = GENERIC_HINTS
    endpoint_setting: str = "RELAY_OTLP_ENDPOINT"  # the variable the endpoint came from
    preset: str | None = None
    # The preset's extra settings as the start-up log shows them (secrets masked).
    settings: Mapping[str, str | None] = field(default_factory=dict)

    def endpoints(self) -> Mapping[str, str]:
        return {self.endpoint_setting: self.endpoint}

    def describe(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "endpoint": safe_url(self.endpoint),
            "headers": {key: mask(value) for key, value in self.headers.items()},
            "basic_auth": mask(self.basic_auth),
            "compression": self.compression,
            "timeout": self.timeout,
            **({"settings": dict(self.settings)} if self.settings else {}),
        }


def read_generic(env: EnvReader, dispatch: DispatchSettings) -> OtlpSinkConfig:
    """The ``otlp`` sink: ``RELAY_OTLP_*`` over ``OTEL_EXPORTER_OTLP_*``, from a preset if named."""
    name = env.text("RELAY_OTLP_PRESET")
    preset = GENERIC
    if name is not None:
        found = BY_NAME.get(name.lower())
        if found is None:
            env.problem(
                "RELAY_OTLP_PRESET", f"unknown preset {name!r} (known: {', '.join(BY_NAME)})"
            )
        else:
            preset = found
    return read_config(env, dispatch, sink="otlp", preset=preset, otel=True)


def read_preset(env: EnvReader, dispatch: DispatchSettings, preset: Preset) -> OtlpSinkConfig:
    """A preset's own sink: ``RELAY_<PRESET>_*`` only."""
    return read_config(env, dispatch, sink=preset.name, preset=preset, otel=False)


def read_config(
    env: EnvReader, dispatch: DispatchSettings, *, sink: str, preset: Preset, otel: bool
) -> OtlpSinkConfig:
    """One OTLP sink's configuration: ``sink`` names its variables, ``preset`` gives its defaults
    and extra settings, ``otel`` lets the OpenTelemetry exporter variables stand in below the
    sink's own. Every problem is recorded in ``env``, none raised."""
    prefix = f"RELAY_{sink.upper()}_"
    values = _read_settings(env, prefix, preset)
    headers = _headers(env, prefix, preset, values, otel)
    basic_auth = _basic_auth(env, prefix, sink, preset, values, headers)
    endpoint, endpoint_setting = _endpoint(env, prefix, sink, preset, values, otel)
    return OtlpSinkConfig(
        endpoint=endpoint,
        name=sink,
        title=preset.title,
        headers=headers,
        basic_auth=basic_auth,
        compression=_compression(env, prefix, otel),
        timeout=dispatch.timeout,
        hints=_hints(prefix, preset, otel),
        endpoint_setting=endpoint_setting,
        preset=None if preset is GENERIC else preset.name,
        settings={
            prefix + s.key: mask(values.get(s.key)) if s.secret else values.get(s.key)
            for s in preset.settings
        },
    )


def _read_settings(env: EnvReader, prefix: str, preset: Preset) -> dict[str, str]:
    """The preset's extra settings that are set (or have a default), by key."""
    values: dict[str, str] = {}
    for setting in preset.settings:
        name = prefix + setting.key
        if setting.kind == "url":
            value = env.url(name, setting.default)
        else:
            value = env.text(name, setting.default)
        if value is not None:
            values[setting.key] = value
        elif setting.required:
            env.problem(name, f"required: {setting.meaning}")
    return values


def _basic_auth(
    env: EnvReader,
    prefix: str,
    sink: str,
    preset: Preset,
    values: Mapping[str, str],
    headers: Mapping[str, str],
) -> str | None:
    """``user:password``: the explicit setting, else the preset's two settings."""
    basic_auth = env.text(prefix + "BASIC_AUTH")
    if basic_auth is not None:
        if ":" not in basic_auth:
            env.problem(prefix + "BASIC_AUTH", "expected <user>:<password>")
        return basic_auth
    if preset.basic_auth is None:
        return None
    user, password = (values.get(key) for key in preset.basic_auth)
    if user and password:
        return f"{user}:{password}"
    # An Authorization header from RELAY_<SINK>_HEADERS (or the OTEL_* headers a vendor's portal
    # hands out) carries the credentials already.
    if not any(header.lower() == "authorization" for header in headers):
        keys = " and ".join(prefix + key for key in preset.basic_auth)
        env.problem(prefix + "BASIC_AUTH", f"required by {sink}: set it, or {keys}")
    return None


def _endpoint(
    env: EnvReader,
    prefix: str,
    sink: str,
    preset: Preset,
    values: Mapping[str, str],
    otel: bool,
) -> tuple[str, str]:
    """The traces URL and the variable it came from (named in messages)."""
    candidates = [prefix + "ENDPOINT"]
    if otel:
        candidates += [OTEL_TRACES + "ENDPOINT", OTEL + "ENDPOINT"]
    for name in candidates:
        if env.text(name) is None:
            continue
        url = env.url(name) or ""
        if url and urlsplit(url).username is not None:
            # It would be logged with the URL, and aiohttp refuses it beside an Authorization.
            env.problem(name, f"put credentials in {prefix}BASIC_AUTH instead")
        if name == OTEL + "ENDPOINT" and url:
            url = url.rstrip("/") + "/v1/traces"  # a base URL, per the OTLP exporter spec
        return url, name
    template = preset.endpoint
    keys = template_keys(template or "")
    if template is not None and all(values.get(key) for key in keys):
        url = template.format(**{key: values[key].rstrip("/") for key in keys})
        return url, prefix + keys[0] if keys else prefix + "ENDPOINT"
    alternative = f" (or set {' and '.join(prefix + key for key in keys)})" if keys else ""
    env.problem(prefix + "ENDPOINT", f"required when {sink} is in RELAY_SINKS{alternative}")
    return "", prefix + "ENDPOINT"


def _headers(
    env: EnvReader, prefix: str, preset: Preset, values: Mapping[str, str], otel: bool
) -> dict[str, str]:
    """Constant vendor headers, then the environment's, then RELAY_<SINK>_HEADERS, then the ones
    the preset's settings make (a dedicated setting wins over a generic header)."""
    layers: list[Mapping[str, str]] = []
    layers.append({k: v for k, v in preset.headers.items() if not template_keys(v)})
    if otel:
        chosen = OTEL_TRACES + "HEADERS" if env.text(OTEL_TRACES + "HEADERS") else OTEL + "HEADERS"
        layers.append(env.pairs(chosen))
    layers.append(env.pairs(prefix + "HEADERS"))
    made: dict[str, str] = {}
    for header, template in preset.headers.items():
        keys = template_keys(template)
        if keys and all(values.get(key) for key in keys):
            made[header] = template.format(**{key: values[key] for key in keys})
    layers.append(made)
    merged: dict[str, str] = {}
    for layer in layers:
        for header, value in layer.items():
            # Header names are case-insensitive: a later layer replaces, never duplicates.
            for existing in [k for k in merged if k.lower() == header.lower()]:
                del merged[existing]
            merged[header] = value
    return merged


def _compression(env: EnvReader, prefix: str, otel: bool) -> Compression:
    names = [prefix + "COMPRESSION"]
    if otel:
        names += [OTEL_TRACES + "COMPRESSION", OTEL + "COMPRESSION"]
    for name in names:
        if env.text(name) is not None:
            return cast(Compression, env.choice(name, "gzip", COMPRESSIONS))
    return "gzip"  # what every OTLP receiver the relay targets reads, and far smaller


def _hints(prefix: str, preset: Preset, otel: bool) -> Hints:
    """What to check, naming this sink's own variables."""
    secrets = [prefix + s.key for s in preset.settings if s.secret]
    if preset.basic_auth is not None:
        secrets = [prefix + key for key in preset.basic_auth]
    headers = prefix + "HEADERS" + (f" or {OTEL}(TRACES_)HEADERS" if otel else "")
    credentials = f"check {', '.join([*secrets, prefix + 'BASIC_AUTH'])}"
    credentials += f" (and any credentials in {headers})"
    if preset.credentials_note:
        credentials += f"; {preset.credentials_note}"
    endpoint_keys = [prefix + key for key in template_keys(preset.endpoint or "")]
    endpoint = f"check {' or '.join([prefix + 'ENDPOINT', *endpoint_keys])}"
    return Hints(credentials=credentials, endpoint=f"{endpoint} ({preset.endpoint_note})")


def otel_timeout(env: EnvReader, defaults: DispatchSettings) -> DispatchSettings:
    """The generic sink's timeout below RELAY_OTLP_TIMEOUT: OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT,
    in seconds as opentelemetry-python reads it (the specification says milliseconds)."""
    for name in (OTEL_TRACES + "TIMEOUT", OTEL + "TIMEOUT"):
        if env.text(name) is not None:
            return replace(defaults, timeout=env.number(name, defaults.timeout, 0.1, 3600.0))
    return defaults
