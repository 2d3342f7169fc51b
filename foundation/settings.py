"""Reading settings from environment variables, collecting every problem instead of stopping at one.

Every component resolves its configuration the way opentelemetry-python exporters do (explicit
argument > environment variable > default), through one ``EnvReader``, so that a start with bad
settings fails once, naming every bad variable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import unquote, urlsplit

N = TypeVar("N", int, float)
# The words a boolean setting takes, as shells, systemd and Kubernetes manifests write them.
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS |= {"false": False, "0": False, "no": False, "off": False}


class ConfigError(Exception):
    """The environment does not describe a runnable relay; ``problems`` names every bad variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration: " + "; ".join(problems))
        self.problems = problems


def mask(secret: str | None) -> str | None:
    """How a secret is shown in logs and status: never the value, only that it is set."""
    return None if not secret else "***"


class EnvReader:
    """Typed access to environment variables that records problems rather than raising."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        # Every variable consulted, so that deployment files can be checked against the code.
        self.names: set[str] = set()

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message}")

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def text(self, name: str, default: str | None = None) -> str | None:
        self.names.add(name)
        value = self.environ.get(name, "").strip()
        return value if value else default

    def integer(
        self, name: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problem(name, f"expected a whole number, got {raw!r}")
            return default
        return self._bounded(name, value, default, minimum, maximum)

    def number(
        self,
        name: str,
        default: float,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problem(name, f"expected a number, got {raw!r}")
            return default
        if not math.isfinite(value):
            self.problem(name, f"expected a finite number, got {raw!r}")
            return default
        return self._bounded(name, value, default, minimum, maximum)

    def _bounded(self, name: str, value: N, default: N, minimum: N | None, maximum: N | None) -> N:
        if minimum is not None and value < minimum:
            self.problem(name, f"must be at least {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.problem(name, f"must be at most {maximum}, got {value}")
            return default
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.lower()
        if value not in choices:
            self.problem(name, f"expected one of {', '.join(choices)}, got {raw!r}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        word = self.choice(name, "true" if default else "false", tuple(_BOOLEANS))
        return _BOOLEANS[word]

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self.text(name)
        if raw is None:
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def pairs(self, name: str) -> dict[str, str]:
        """``k=v,k2=v2`` as OTEL_EXPORTER_OTLP_HEADERS spells it (values may be %-encoded)."""
        result: dict[str, str] = {}
        for item in self.items(name):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                # Never echo the item: header values are usually credentials.
                self.problem(name, "expected comma-separated key=value pairs")
                continue
            result[unquote(key.strip())] = unquote(value.strip())
        return result

    def url(self, name: str, default: str | None = None) -> str | None:
        raw = self.text(name)
        if raw is None:
            return default
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problem(name, f"expected an http:// or https:// URL, got {raw!r}")
            return default
        return raw.rstrip("/") if parts.path in ("", "/") else raw
