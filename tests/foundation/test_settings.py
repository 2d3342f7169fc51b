"""``EnvReader``: every bad value is a problem named by its variable, never a traceback later."""

from __future__ import annotations

import pytest

from foundation.settings import EnvReader


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf"])
def test_a_number_must_be_finite(raw: str) -> None:
    """``float()`` reads these, and no bound refuses NaN: a sampling rate of NaN would have
    stopped the start with a traceback, a cost threshold of NaN kept nothing."""
    env = EnvReader({"RELAY_X_SAMPLE_RATE": raw})
    assert env.number("RELAY_X_SAMPLE_RATE", 1.0, 0.0, 1.0) == 1.0
    assert env.problems == [f"RELAY_X_SAMPLE_RATE: expected a finite number, got {raw!r}"]
