"""Time in both directions: nanoseconds since the epoch and the schema's RFC 3339 text.

The schema's times are RFC 3339 in UTC with nine fraction digits
(``2026-03-01T12:15:46.123456789Z``); ``rfc3339_ns`` writes them, ``unix_ns`` reads them back.

Sinks need nanoseconds since the epoch for every event they encode; parsing each time in full
would cost more than the rest of a span's fields. The normalizers always write nine fraction
digits, so that shape is taken apart by position, with the seconds part cached (the events of a
busy second share it); any other shape the schema allows goes through the general parser.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime
from typing import Final

from foundation.memo import remember


def rfc3339_ns(unix_ns: int) -> str:
    """``2026-03-01T12:15:46.123456789Z``: RFC 3339 in UTC with nanosecond precision."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return f"{_utc_seconds(seconds)}.{str(nanos).zfill(9)}Z"  # zfill: faster than :09d


@remember(1024)
def _utc_seconds(seconds: int) -> str:
    # The events of one busy second share it: formatted once, not per event.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def now() -> tuple[int, str]:
    """This instant as nanoseconds since the epoch and as RFC 3339 text."""
    ns = time.time_ns()
    return ns, rfc3339_ns(ns)


_TIME: Final = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z$")
_SECONDS: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")  # _TIME's first group


def unix_ns(text: str | None) -> int:
    """Nanoseconds since the epoch; 0 when absent or not an RFC 3339 UTC time.

    A time of that shape that is no date (month 13) raises ``ValueError``.
    """
    if type(text) is str and len(text) == 30 and text[19] == "." and text[29] == "Z":
        fraction = text[20:29]
        if fraction.isdecimal():  # what the general parser's \d and int() take
            seconds = _epoch_seconds(text[:19])
            if seconds is not None:
                return seconds * 1_000_000_000 + int(fraction)
    return _parse(text)


@remember(1024)
def _epoch_seconds(head: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS`` as seconds since the epoch; None leaves it to ``_parse``."""
    if _SECONDS.fullmatch(head) is None:
        return None
    try:
        return calendar.timegm(datetime.fromisoformat(head).timetuple())
    except ValueError:  # the general parser raises it, with its own message
        return None


def _parse(text: str | None) -> int:
    match = _TIME.match(text or "")
    if match is None:
        return 0
    seconds = calendar.timegm(datetime.fromisoformat(match[1]).timetuple())
    return seconds * 1_000_000_000 + int((match[2] or "").ljust(9, "0"))
