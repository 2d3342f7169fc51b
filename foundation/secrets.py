"""Recognising secrets in attributes and headers so that they never reach a sink or a log.

The one home of secret handling: which keys and values are credentials (``is_secret_key``,
``is_secret_value``), which settings hold a template's placeholder instead (``is_placeholder``),
removing them from attributes (``scrub``), masking them in free text (``redact_text``) and
masking values known to be secrets wherever they appear (``mask_known``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from foundation.memo import remember_short

# A key's words: ``authToken``, ``api_key_value`` and ``x-auth`` split as a reader splits them.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A key whose last word (after qualifiers) is one of these holds a credential.
_SECRET_WORDS: Final = frozenset(
    {
        "authorization", "auth", "apikey", "secret", "password", "passwd", "pwd", "passphrase",
        "token", "bearer", "cookie", "credential", "credentials", "privatekey", "accesskey",
    }
)  # fmt: skip
# ``key`` is a credential after these (``x-api-key``, ``aws_secret_access_key``, ``openai_key``),
# and not after others (``cache_key``, ``idempotency_key``).
_KEY_OWNERS: Final = frozenset(
    {
        "api", "private", "access", "secret", "client", "signing", "master", "subscription",
        "openai", "anthropic", "azure", "aws", "gcp", "google", "gemini", "mistral", "cohere",
        "groq", "openrouter", "together", "deepseek", "xai", "huggingface", "hf", "llm",
    }
)  # fmt: skip
# Trailing words that say how a credential is written, not what it is (``user_password_plain``).
_QUALIFIERS: Final = frozenset({"value", "plain", "raw", "string", "str", "text", "b64", "base64"})
# Values that are credentials whatever key they sit under.
_SECRET_VALUE = re.compile(
    r"^(Bearer|Basic)\s+\S+$|^(sk|sk-or|sk-ant|glc|pk|rk)[-_][A-Za-z0-9_\-]{12,}$",
    re.IGNORECASE,
)
# Keys that name a key without being one (openrouter.api_key_name, api_key.hash).
_NOT_SECRET = re.compile(r"(_name|\.name|_hash|\.hash|_id|\.id|_count|tokens?_?(limit|remaining))$")


@remember_short(maxsize=8192, max_chars=256)  # keys repeat from event to event
def is_secret_key(key: str) -> bool:
    if _NOT_SECRET.search(key):
        return False
    words = [word.lower() for word in _WORDS.findall(key)]
    while len(words) > 1 and words[-1] in _QUALIFIERS:
        words.pop()
    if not words:
        return False
    last = words[-1]
    if last in _SECRET_WORDS:
        return True
    return last == "key" and len(words) > 1 and words[-2] in _KEY_OWNERS


# Values that are a template's placeholder, not a credential (README, Configuration): compared
# case-blind, without the separators people put in them (``Replace_Me`` is ``replace-me``).
_PLACEHOLDER_WORDS: Final = re.compile(
    r"replaceme|changeme|changeit|placeholder|todo|your(?:ingest|api)?(?:token|key|secret)(?:here)?"
    r"|x{3,}|\*{3,}"
)
_SEPARATORS: Final = re.compile(r"[-_.\s]+")
# ``<token>``, ``<one of RELAY_INGEST_TOKENS>``, an unexpanded ``${VARIABLE}``.
_PLACEHOLDER_SHAPES: Final = re.compile(r"<[^<>]*>|\$\{[^{}]*\}")


def is_placeholder(value: str, pair: bool = False) -> bool:
    """Whether a credential setting holds an obvious placeholder (``replace-me``, ``changeme``,
    ``<token>``, ``xxxx``, ``your-token``, the log's own mask ``***``...).

    A Kubernetes Secret or an ``.env`` file applied as shipped would otherwise make the
    placeholder a working ingest token that anyone who read the manifest knows. The list is short
    on purpose: a real token refused at start stops a running deployment at its next restart.
    """
    text = value.strip()
    # Basic credentials (``pair``) are ``user:password``: a template's ``<instance id>:<access
    # token>``. Only they are split: a token may hold a colon, and a part of it is no placeholder.
    parts = [text, *text.split(":")] if pair and ":" in text else [text]
    return any(
        _PLACEHOLDER_SHAPES.fullmatch(part)
        or _PLACEHOLDER_WORDS.fullmatch(_SEPARATORS.sub("", part.lower()))
        for part in parts
        if part
    )


def is_secret_value(value: Any) -> bool:
    return isinstance(value, str) and len(value) < 512 and bool(_SECRET_VALUE.match(value.strip()))


def scrub(attributes: dict[str, Any]) -> dict[str, Any]:
    """Remove credentials from an attribute mapping, in place, and return it: keys that name one,
    values that are one, at any depth (a kvlist's ``api_key``, ``["Bearer ..."]``), and
    credentials inside URLs."""
    doomed = []
    deeper = []
    for key, value in attributes.items():
        if is_secret_key(key) or is_secret_value(value):
            doomed.append(key)
        elif type(value) is str:  # the usual value: only a URL needs a closer look
            if "://" in value:
                deeper.append(key)
        elif type(value) in _CONTAINERS:
            deeper.append(key)
    for key in doomed:
        del attributes[key]
    for key in deeper:
        attributes[key] = _scrubbed(attributes[key], 0)
    return attributes


_CONTAINERS: Final = (dict, list)


def scrub_value(value: Any) -> Any:
    """A copy of one value (a structure, a URL) without the credentials ``scrub`` removes."""
    return _scrubbed(value, 0)


_MAX_SCRUB_DEPTH: Final = 32


def _scrubbed(value: Any, depth: int) -> Any:
    if depth > _MAX_SCRUB_DEPTH:
        return MASK  # deeper than any sender nests: not read, so not kept
    if isinstance(value, dict):
        return {
            key: _scrubbed(item, depth + 1)
            for key, item in value.items()
            if not (is_secret_key(str(key)) or is_secret_value(item))
        }
    if isinstance(value, list):
        return [_scrubbed(item, depth + 1) for item in value if not is_secret_value(item)]
    if isinstance(value, str) and "://" in value:
        return redact_text(value)
    return value


MASK: Final = "[REDACTED]"

_TEXT_SECRETS = (
    # The scheme's length is bounded: unbounded, ``a.a.a.…:`` took seconds per 40 KB.
    (re.compile(r"\b([a-z][a-z0-9+.-]{0,31}://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE), rf"\1{MASK}@"),
    (
        re.compile(
            r"([?&](?:api[_-]?key|apikey|key|token|access[_-]?token|secret|password|sig|"
            r"signature|auth)=)[^&\s#]+",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
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


# A quoted key and its quoted value, as a JSON text or a Python repr writes them: the value is
# masked when the key names a credential (read as ``is_secret_key`` reads keys).
_QUOTED_PAIR = re.compile(r"""(["'])([^"'\s]{1,64})\1(\s*[:=]\s*)(["'])([^"'\\]*)\4""")


# ``Name: value`` or ``name=value`` as a header line or a log writes it: the value (to the end of
# the line, of the quoted text or of a query parameter) is masked when the name is a credential's.
_NAMED_VALUE = re.compile(r"""\b([A-Za-z][\w.-]{0,63})(\s*[:=]\s*)([^\r\n'"&]+)""")


def _mask_named_value(match: re.Match[str]) -> str:
    if not is_secret_key(match.group(1)):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"


def _mask_pair(match: re.Match[str]) -> str:
    if not is_secret_key(match.group(2)):
        return match.group(0)
    quote, key, sep, value_quote = match.group(1, 2, 3, 4)
    return f"{quote}{key}{quote}{sep}{value_quote}{MASK}{value_quote}"


def might_hold_secret(text: str) -> bool:
    """Whether any pattern above could match: most texts (model names, operations) are clear at a
    glance. Substring tests, ten times faster here than one case-blind regex search."""
    if ":" in text or "=" in text:  # URLs, key=value, quoted pairs, header lines
        return True
    if not text.isascii():  # case-blind matching folds some letters of other scripts into s, i
        return True
    low = text.lower()
    # Bearer and Basic credentials; sk-, pk-, rk-, glc_ keys (how their prefixes end).
    return (
        "bearer" in low
        or "basic" in low
        or "k-" in low
        or "k_" in low
        or "c-" in low
        or "c_" in low
    )


def redact_text(text: str) -> str:
    """Free text (error messages, a structure a sender wrote where a name was expected) with
    bearer tokens, API keys, ``key=value`` secrets and credential-named quoted pairs masked."""
    if not might_hold_secret(text):
        return text
    for pattern, replacement in _TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    text = _QUOTED_PAIR.sub(_mask_pair, text)
    return _NAMED_VALUE.sub(_mask_named_value, text)


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
