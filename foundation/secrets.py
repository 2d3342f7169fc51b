"""Recognising secrets in attributes and headers so that they never reach a sink or a log.

The one home of secret handling: which keys and values are credentials (``is_secret_key``,
``is_secret_value``), removing them from attributes (``scrub``), masking them in free text
(``redact_text``) and masking values known to be secrets wherever they appear (``mask_known``).
"""

from __future__ import annotations

import re
from typing import Any, Final

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


MASK: Final = "[REDACTED]"

_TEXT_SECRETS = (
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), rf"\1 {MASK}"),
    (re.compile(r"\b(?:sk|sk-or|sk-ant|sk-proj|glc|pk|rk)[-_][A-Za-z0-9_\-]{12,}"), MASK),
    (
        re.compile(
            r"""\b((?:api[_-]?key|apikey|client[_-]?secret|secret|password|access[_-]?token|token)"""
            r"""['"]?\s*[:=]\s*['"]?)[^\s'",;&}]{6,}""",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
)


def redact_text(text: str) -> str:
    """Free text (error messages) with bearer tokens, API keys and ``key=value`` secrets masked."""
    for pattern, replacement in _TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    return text


def mask_known(value: Any, secrets: list[str]) -> Any:
    """A copy of ``value`` (JSON-like, nested) in which every occurrence of a known secret is
    masked; give longer secrets first, so that one containing another is masked whole."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {key: mask_known(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_known(item, secrets) for item in value]
    return value
