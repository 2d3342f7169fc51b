"""Bounding the values a sender-chosen metric label may take.

Label values such as model names come from senders: 20,000 distinct names once became 480,000
series, a 60 MB scrape longer than Prometheus waits. Each label keeps its first values up to a
budget (per worker); later ones are booked under ``other``, and how many were folded is counted.
"""

from __future__ import annotations

import threading
from typing import Final

# Models are many, the rest few. Each model brings about 30 series (two histograms): 100 of them
# keep /metrics near 400 KB and a scrape near a tenth of a second (`make bench`); every event
# still has its model in the sinks.
LABEL_VALUES_MAX: Final = {"model": 100, "gateway": 50, "provider": 50, "upstream": 50}
ERROR_TYPES_MAX: Final = 50
FOLDED: Final = "other"


class LabelBudget:
    """The values one label has taken, up to ``limit``; the rest become ``FOLDED``.

    Called from the event loop and from the thread that counts large requests
    (``receiver.ingest``): what changes is changed under a lock.
    """

    __slots__ = ("_folded", "_limit", "_lock", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._folded = 0
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if value in self._seen or len(self._seen) < self._limit:
                self._seen.add(value)
                return value
            self._folded += 1
            return FOLDED

    def take_folded(self) -> int:
        """How many values were folded since the last call."""
        with self._lock:
            folded, self._folded = self._folded, 0
        return folded
