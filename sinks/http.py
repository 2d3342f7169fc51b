"""What HTTP sinks share: reading Retry-After, and saying in a few words why a request failed."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC

import aiohttp
import urllib3


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def transport_failure(error: BaseException, timeout: float | None, setting: str = "") -> str:
    """A failure to get any answer, without the object reprs libraries put in their messages."""
    if isinstance(error, TimeoutError):
        hint = f" ({setting})" if setting else ""
        return f"no answer within {timeout:g}s{hint}" if timeout else f"no answer{hint}"
    if isinstance(error, aiohttp.ClientConnectorError):
        if isinstance(error.os_error, ConnectionRefusedError):
            return "connection refused"
        return error.os_error.strerror or str(error.os_error) or type(error.os_error).__name__
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason
    text = str(error) or type(error).__name__
    marker = text.find("Failed to establish")
    return text[marker:] if marker >= 0 else text
