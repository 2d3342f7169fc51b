"""The schema's times as nanoseconds: the fast path and the general parser agree."""

from __future__ import annotations

import pytest

from foundation.times import unix_ns

BASE = 1772367346 * 1_000_000_000  # 2026-03-01T12:15:46Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:15:46.123456789Z", BASE + 123456789),  # what the normalizers write
        ("2026-03-01T12:15:46.123Z", BASE + 123000000),
        ("2026-03-01T12:15:46Z", BASE),
        ("1970-01-01T00:00:00.000000000Z", 0),
        (None, 0),
        ("", 0),
        ("2026-03-01 12:15:46", 0),
        ("2026-03-01T12:15:46.1234567890Z", 0),  # ten fraction digits: not RFC 3339 as we write it
    ],
)
def test_times(text: str | None, expected: int) -> None:
    assert unix_ns(text) == expected
    assert unix_ns(text) == expected  # the second time from the cache


def test_a_shape_that_is_no_date_is_an_error() -> None:
    with pytest.raises(ValueError, match="month"):
        unix_ns("2026-13-01T12:15:46.000000000Z")
