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
