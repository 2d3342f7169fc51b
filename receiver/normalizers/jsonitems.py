"""Webhook bodies: a JSON array, a single JSON object, or NDJSON (one object per line)."""

from __future__ import annotations

from typing import Any

import orjson

from receiver.normalizers.base import InputError


def json_items(body: bytes) -> list[Any]:
    """The items of a webhook body, whichever of the three shapes the sender used."""
    stripped = body.strip()
    if not stripped:
        raise InputError("empty body: expected a JSON array, a JSON object or NDJSON")
    try:
        decoded = orjson.loads(stripped)
    except orjson.JSONDecodeError as error:
        if stripped[:1] == b"{" and b"\n" in stripped:
            return _ndjson(stripped)
        raise InputError(f"invalid JSON: {error}") from None
    if isinstance(decoded, list):
        return decoded
    if isinstance(decoded, dict):
        return [decoded]
    raise InputError(f"expected a JSON array or object, got {type(decoded).__name__}")


def _ndjson(body: bytes) -> list[Any]:
    items: list[Any] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as error:
            raise InputError(f"invalid NDJSON on line {number}: {error}") from None
    return items
