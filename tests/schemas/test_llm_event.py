"""The two spellings of the LLMEvent contract agree: the ``TypedDict`` the code is checked against
and the JSON Schema every emitted event is validated against (and the README documents).

Every field of one is a field of the other, and every ``Literal`` (input formats, statuses, cost
sources) lists exactly the values of the schema's ``enum``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, NotRequired, Required, get_args, get_origin, is_typeddict

import jsonschema_rs
import pytest

from schemas import LLMEvent, json_schema


def _unwrapped(hint: Any) -> Any:
    while get_origin(hint) in (NotRequired, Required):
        (hint,) = get_args(hint)
    return hint


def _fields(typed: Any, schema: dict[str, Any], path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, type hint, JSON Schema) for every field, nested TypedDicts included."""
    hints = typing.get_type_hints(typed, include_extras=True)
    properties = schema.get("properties", {})
    assert set(hints) == set(properties), f"{path or 'event'}: fields differ"
    for name, hint in hints.items():
        hint = _unwrapped(hint)
        here = f"{path}.{name}" if path else name
        yield here, hint, properties[name]
        if is_typeddict(hint):
            yield from _fields(hint, properties[name], here)


def _literal_values(hint: Any) -> set[Any] | None:
    if get_origin(hint) is Literal:
        return set(get_args(hint))
    if isinstance(hint, types.UnionType) or get_origin(hint) is typing.Union:
        for arm in get_args(hint):
            if (values := _literal_values(arm)) is not None:
                return values
    return None


def test_every_field_and_every_enum_agree() -> None:
    literals = 0
    for path, hint, schema in _fields(LLMEvent, json_schema(), ""):
        values = _literal_values(hint)
        if values is None:
            assert "enum" not in schema, f"{path}: an enum in the schema, free in the TypedDict"
            continue
        literals += 1
        assert set(schema["enum"]) == values, path
    assert literals >= 3  # source.format, cost.source, status at least: the walk reached them


TABLE_COST = {
    "total": 6.3e-06,
    "input": 2.1e-06,
    "output": 4.2e-06,
    "currency": "USD",
    "source": "table",
    "table": "genai-prices 0.2.3",
}


@pytest.mark.parametrize(
    ("cost", "valid"),
    [
        (TABLE_COST, True),
        ({"total": 0.00885, "currency": "USD", "source": "gateway"}, True),
        ({"currency": "USD", "source": "unknown"}, True),
        # An estimate names its table and has an amount; no other source is allowed.
        ({k: v for k, v in TABLE_COST.items() if k != "table"}, False),
        ({k: v for k, v in TABLE_COST.items() if k != "total"}, False),
        ({**TABLE_COST, "table": ""}, False),
        ({**TABLE_COST, "source": "guessed"}, False),
    ],
)
def test_a_table_cost_names_its_table(cost: dict[str, Any], valid: bool) -> None:
    validator = jsonschema_rs.validator_for(json_schema())
    assert validator.is_valid(event_with(cost)) is valid


def event_with(cost: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "llm-event/1",
        "event_id": "e1",
        "received_at": "2026-11-29T19:25:10.000000000Z",
        "source": {"format": "native", "gateway": "tests", "test": False},
        "trace_id": "1" * 32,
        "span_id": "2" * 16,
        "start_time": "2026-11-29T19:25:09.927539866Z",
        "end_time": "2026-11-29T19:25:10.000000000Z",
        "operation": "chat",
        "status": "ok",
        "usage": {"input_tokens": 14, "output_tokens": 7},
        "cost": cost,
    }
