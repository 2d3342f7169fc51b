"""Recognising secrets in attributes and headers so that they never reach a sink or a log."""

from __future__ import annotations

import re
from typing import Any

from foundation.memo import remember_short

# Keys whose values are credentials whatever the sender calls them.
_SECRET_KEY = re.compile(
    r"(^|[._-])(authorization|api[._-]?key|apikey|secret|client[._-]?secret|password|passwd|"
    r"token|access[._-]?token|bearer|cookie|set-cookie|x-api-key|private[._-]?key)$",
    re.IGNORECASE,
)
# Values that are credentials whatever key they sit under.
_SECRET_VALUE = re.compile(
    r"^(Bearer|Basic)\s+\S+$|^(sk|sk-or|sk-ant|glc|pk|rk)[-_][A-Za-z0-9_\-]{12,}$",
    re.IGNORECASE,
)
# Keys that name a key without being one (openrouter.api_key_name, api_key.hash).
_NOT_SECRET = re.compile(r"(_name|\.name|_hash|\.hash|_id|\.id|_count|tokens?_?(limit|remaining))$")


@remember_short(maxsize=8192, max_chars=256)  # keys repeat from event to event
def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET.search(key)


def is_secret_value(value: Any) -> bool:
    return isinstance(value, str) and len(value) < 512 and bool(_SECRET_VALUE.match(value.strip()))


def scrub(attributes: dict[str, Any]) -> dict[str, Any]:
    """Remove credentials from a flat attribute mapping, in place, and return it."""
    for key in [k for k, v in attributes.items() if is_secret_key(k) or is_secret_value(v)]:
        del attributes[key]
    return attributes


_TEXT_SECRETS = (
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), r"\1 [REDACTED]"),
    (re.compile(r"\b(?:sk|sk-or|sk-ant|sk-proj|glc|pk|rk)[-_][A-Za-z0-9_\-]{12,}"), "[REDACTED]"),
    (
        re.compile(
            r"""\b((?:api[_-]?key|apikey|client[_-]?secret|secret|password|access[_-]?token|token)"""
            r"""['"]?\s*[:=]\s*['"]?)[^\s'",;&}]{6,}""",
            re.IGNORECASE,
        ),
        r"\1[REDACTED]",
    ),
)


def redact_text(text: str) -> str:
    """Free text (error messages) with bearer tokens, API keys and ``key=value`` secrets masked."""
    for pattern, replacement in _TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    return text
