"""What HTTP sinks share: what an answer's status means for the batch, reading Retry-After, and
saying in a few words why a request failed.

``failure`` is the one place that turns a non-2xx status into the ``SinkError`` the dispatcher
acts on, for every HTTP sink's send and setup probe alike. What differs between peers is passed
in, never decided again: which statuses the peer wants retried, and what a person should check
when it refuses the credentials or does not know the URL.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import urllib3

from sinks.base import (
    MisconfiguredError,
    PayloadTooLargeError,
    PermanentError,
    RetryableError,
    SinkError,
)


@dataclass(frozen=True, slots=True)
class Hints:
    """What to check, in a person's words, when the peer refuses every batch alike."""

    credentials: str  # after a 401/403, e.g. "check RELAY_TEMPO_BASIC_AUTH"
    endpoint: str  # after a 404/405 or a redirect, e.g. "check RELAY_TEMPO_ENDPOINT"


def otlp_retryable(status: int) -> bool:
    """The OTLP/HTTP specification: retry 429, 502, 503 and 504 only; all others MUST NOT be."""
    return status in (429, 502, 503, 504)


def datadog_retryable(status: int) -> bool:
    """Datadog's intakes: a timeout, throttling and any 5xx but 501 (not implemented) may pass."""
    return status in (408, 429) or (status >= 500 and status != 501)


def failure(
    status: int,
    said: str,
    hints: Hints,
    *,
    retry_after: float | None,
    retryable: Callable[[int], bool],
    too_large: bool = False,
) -> SinkError:
    """The error a non-2xx answer means; ``said`` is how it reads (who answered what).

    ``too_large`` marks an answer the peer gave for the batch's size other than 413 (Grafana
    Cloud's 429 "larger than max"): retrying the same batch could never pass, a split can.
    """
    if status == 413 or too_large:
        return PayloadTooLargeError(said)
    if retryable(status):
        return RetryableError(said, retry_after=retry_after)
    if status in (401, 403):
        return MisconfiguredError(f"{said}; {hints.credentials}")
    if status in (404, 405) or status < 400:  # redirects are not followed: a POST would be lost
        return MisconfiguredError(f"{said}; {hints.endpoint}")
    # Only a 4xx can be about some of the events; a 5xx the peer will not have retried refuses
    # any batch alike, so bisecting it would only multiply requests.
    return PermanentError(said, isolate=status < 500)


def safe_url(url: str) -> str:
    """A URL as shown to people: no ``user:password@``, no query that may hold a key."""
    parts = urlsplit(url)
    netloc = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
