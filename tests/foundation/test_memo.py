"""The one bounded memo: short text only, never more than its limit, one call per key."""

from __future__ import annotations

from foundation.memo import Memo, remember, remember_short


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


def test_a_memo_never_holds_more_than_its_limit() -> None:
    memo: Memo[int, str] = Memo(limit=100)
    for key in range(10_000):  # a sender making every value unique
        assert memo.put(key, str(key)) == str(key)
        assert len(memo) <= 100
    assert memo.get(9_999) == "9999"  # the newest answers are kept
    assert memo.get(0) is None


def test_remember_calls_the_function_once_per_key() -> None:
    calls: list[int] = []

    @remember(limit=8)
    def square(value: int) -> int:
        calls.append(value)
        return value * value

    assert [square(n) for n in (3, 3, 4, 3, 4)] == [9, 9, 16, 9, 16]
    assert calls == [3, 4]
