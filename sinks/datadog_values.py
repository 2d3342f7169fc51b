"""Values as Datadog LLM Observability spans take them: ids in decimal, metadata as strings, finite
numbers or booleans, structured content as JSON text."""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

VALUE_MAX_CHARS: Final = 1024  # metadata strings: request parameters are short; cap the odd one


def decimal_id(hex_id: str) -> str:
    """A 64-bit OpenTelemetry span id (16 hex) as the decimal string ddtrace sends."""
    try:
        return str(int(hex_id, 16))
    except ValueError:
        return "0"


def scalar(value: Any, *, numeric_strings: bool = False) -> str | float | bool | None:
    """A metadata value: a string, a finite number or a boolean (all the intake takes)."""
    if isinstance(value, str):  # the usual case, first
        if numeric_strings:
            return numeric_text(value)
        return value[:VALUE_MAX_CHARS] if value else None
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)  # JSON encoders stop at 64 bits
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)[:VALUE_MAX_CHARS] or None
    return json_text(value)[:VALUE_MAX_CHARS]


def numeric_text(value: str) -> str | float | bool | None:
    """A request parameter sent as text: the number it spells, else the text itself."""
    for number_type in (int, float):
        try:
            number = scalar(number_type(value))
        except ValueError:
            continue
        return value if number is None or isinstance(number, str) else number
    return value[:VALUE_MAX_CHARS] if value else None


def json_text(value: Any) -> str:
    """Structured content shown as JSON text, whatever it holds."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # integers over 64 bits, non-string keys
        return str(value)
