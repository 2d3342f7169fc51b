"""What every normalizer test checks: events valid against the schema, and no secret anywhere.

``assert_clean`` is the one shared check. It validates each event with the shipped JSON Schema
and searches the serialized output (events and rejection reasons) for every credential the input
carried: the values under credential-named keys are found by walking the input, so a secret
added to a variant is checked without being listed by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from receiver.normalizers.base import IngestContext, Normalized, Normalizer
from schemas import json_schema
from tests.conftest import fixture_json

RECEIVED_AT = "2026-03-01T12:00:00.000000000Z"
CTX = IngestContext(received_ns=1_772_366_400_000_000_000, received_at=RECEIVED_AT)
VALIDATOR = Draft202012Validator(json_schema())
SECRET_KEYS = {
    "clientsecret",
    "nextsecret",
    "client_secret",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "authorization",
    "api_key",
    "apikey",
    "x-api-key",
    "password",
    "secret",
}


def wire(body: Any) -> bytes:
    """A fixture body as the bytes a sender puts on the wire."""
    return orjson.dumps(body)


def ndjson(items: Iterable[Any], separator: bytes = b"\n") -> bytes:
    return separator.join(orjson.dumps(item) for item in items) + b"\n"


def bodies(name: str) -> list[Any]:
    """The request bodies of a fixture file, deep-copied so tests can build variants freely."""
    return [copy.deepcopy(entry["request"]["body"]) for entry in fixture_json(name)["requests"]]


def secrets_in(value: Any) -> Iterator[str]:
    """Every string held under a credential-named key, at any depth of an input body."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS and isinstance(item, str) and len(item) >= 4:
                yield item
            else:
                yield from secrets_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from secrets_in(item)


def assert_clean(result: Normalized, inputs: Any = (), extra_secrets: Iterable[str] = ()) -> None:
    """Every event validates against the schema; no input secret appears in the output."""
    for event in result.events:
        errors = sorted(VALIDATOR.iter_errors(event), key=lambda e: list(e.path))
        assert not errors, [f"{e.json_path}: {e.message}" for e in errors]
    output = orjson.dumps(
        {"events": result.events, "rejected": [[r.item, r.reason] for r in result.rejected]}
    )
    secrets = {*secrets_in(inputs), *extra_secrets}
    for secret in secrets:
        escaped = orjson.dumps(secret)[1:-1]
        assert secret.encode() not in output and escaped not in output, f"leaked {secret[:6]}..."


def checked(normalize: Normalizer, inputs: Any, extra_secrets: Iterable[str] = ()) -> Normalized:
    """``normalize`` on ``inputs`` as sent on the wire, its output checked by ``assert_clean``."""
    result = normalize(wire(inputs), CTX)
    assert_clean(result, inputs, extra_secrets)
    return result
