"""What happens to every event between its normalizer and the spool, whatever its input format.

- the tenant of the ingest token is recorded;
- credentials left in attributes are removed (normalizers remove the ones they know by name), and
  so are those under other names of a message or a part (what a message says is left as said);
- the content policy is applied (``schemas.content``): the loosest that any sink's policy needs
  (``RELAY_CONTENT``, ``RELAY_<SINK>_CONTENT``); each sink's dispatcher applies its own, stricter
  one to what it sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from foundation.secrets import is_secret_key, might_hold_secret, redact_text, scrub, scrub_value
from schemas import LLMEvent, Message
from schemas.content import (
    PART_CONTENT,
    POLICY_ATTRIBUTE,
    TRUNCATED_ATTRIBUTE,
    ContentPolicy,
    apply_policy,
)

# The event's fields that hold a name a sender chose. A normalizer may have had to write a
# structure it was given there as text (its repr), credentials and all.
_NAMES: Final = (
    "operation",
    "provider",
    "upstream",
    "request_model",
    "response_model",
    "user_id",
    "session_id",
)


def _redact_names(event: LLMEvent) -> None:
    for field in _NAMES:
        value = event.get(field)
        if type(value) is str and might_hold_secret(value):
            event[field] = redact_text(value)
    error = event.get("error")
    if error:
        for key in ("type", "message"):
            if isinstance(error.get(key), str):
                # Senders quote requests in their errors (an exception's text, a status message).
                error[key] = redact_text(error[key])
    source = event["source"]
    if might_hold_secret(source["gateway"]):
        source["gateway"] = redact_text(source["gateway"])
    api_key = event.get("api_key")
    if api_key and isinstance(api_key.get("name"), str):
        api_key["name"] = redact_text(api_key["name"])
    reasons = event.get("finish_reasons")
    if reasons and not _PLAIN_VALUES.issuperset(reasons):
        event["finish_reasons"] = [redact_text(reason) for reason in reasons]


# Keys of a message or a part that name nothing secret; every other one is read as an attribute.
_PLAIN_KEYS: Final = frozenset({"role", "name", "finish_reason", "type", "id"})
# Their usual values, which need no closer look: roles, part types, finish reasons.
_PLAIN_VALUES: Final = frozenset(
    {"user", "assistant", "system", "developer", "tool", "text", "reasoning", "tool_call"}
    | {"tool_call_response", "stop", "length", "tool_calls", "content_filter", "end_turn", ""}
)


def _scrub_messages(messages: Iterable[Message]) -> None:
    """Credentials beside what messages say, in place: a sender's extra keys on a message or a
    part (``{"type": "text", "content": ..., "api_key": ...}``) are read as attributes are, names
    and ids as names are. What a part says is left as said, unless it is a structure, whose
    credential-named keys go."""
    for message in messages:
        _scrub_fields(message)  # type: ignore[arg-type]
        for part in message.get("parts", ()):
            _scrub_fields(part)


def _scrub_fields(fields: dict[str, Any]) -> None:
    doomed = []
    for key, value in fields.items():
        kind = type(value)
        if key == "parts":
            continue
        if key in PART_CONTENT:
            if kind is dict or kind is list:
                fields[key] = scrub_value(value)
        elif key not in _PLAIN_KEYS and is_secret_key(key):
            doomed.append(key)
        elif kind is str:
            if value not in _PLAIN_VALUES and might_hold_secret(value):
                fields[key] = redact_text(value)
        elif kind is dict or kind is list:
            fields[key] = scrub_value(value)
    for key in doomed:
        del fields[key]


def process(events: list[LLMEvent], tenant: str | None, content: ContentPolicy) -> None:
    """Apply tenant, secret removal and content policy to events, in place."""
    for event in events:
        event["source"]["tenant"] = tenant
        attributes = event.get("attributes")
        if attributes:
            scrub(attributes)
            # What the relay itself records of content: a sender's value would have a sink's
            # dispatcher take the event for redacted, hashed or cut already.
            attributes.pop(POLICY_ATTRIBUTE, None)
            attributes.pop(TRUNCATED_ATTRIBUTE, None)
        for messages in ("input_messages", "output_messages"):
            if messages in event:
                _scrub_messages(event[messages])
        _redact_names(event)
        apply_policy(event, content)
