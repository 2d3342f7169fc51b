"""Only short text is remembered, so that a sender cannot pin memory with huge names."""

from __future__ import annotations

from foundation.memo import remember_short


def test_short_text_is_remembered_long_text_and_other_values_are_not() -> None:
    calls: list[object] = []

    @remember_short(maxsize=16, max_chars=8)
    def upper(value: object) -> str:
        calls.append(value)
        return str(value).upper()

    for _ in range(3):
        assert upper("openai") == "OPENAI"
        assert upper("x" * 9) == "X" * 9
        assert upper(42) == "42"
    assert calls.count("openai") == 1
    assert calls.count("x" * 9) == 3
    assert calls.count(42) == 3
