"""``/v1/events``: LLMEvents already in this project's schema, checked against its JSON Schema.

Senders of this format are our own tools and other relays, so events are kept as given (their
``event_id`` included, which keeps re-sends deduplicable); only what a sender may reasonably leave
to the receiver is filled in: ``schema``, ``received_at`` and ``source.format``. An event that
does not validate is rejected with the validator's own message, which names the field.
"""

from __future__ import annotations

from typing import Final, cast

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from foundation.secrets import is_secret_key, is_secret_value, redact_text, scrub
from receiver.normalizers.base import IngestContext, Normalized
from receiver.normalizers.jsonitems import json_items
from schemas import SCHEMA_ID, LLMEvent, json_schema
from schemas.llm_event import SourceFormat

FORMAT: Final[SourceFormat] = "native"
_MAX_REASON = 300


# Built once, at import: compiling the schema costs far more than validating an event with it.
# The verdict comes from jsonschema-rs, about 80 times faster than jsonschema on a full event (6
# against 500 µs, measured: a 20 MiB body took 15 s of CPU); a refusal's reason from jsonschema,
# whose ``best_match`` names the field that matters. Where the two disagree jsonschema decides:
# an event it finds valid is kept.
_SCHEMA: Final = json_schema()
_VERDICT: Final = jsonschema_rs.validator_for(_SCHEMA)
_REASONS: Final = Draft202012Validator(_SCHEMA)


def normalize(body: bytes, ctx: IngestContext) -> Normalized:
    result = Normalized()
    for index, item in enumerate(json_items(body)):
        label = f"[{index}]"
        if not isinstance(item, dict):
            result.reject(label, "expected an LLMEvent object")
            continue
        event_id = item.get("event_id")
        if isinstance(event_id, str) and event_id and not is_secret_value(event_id):
            label = event_id[:128]
        item.setdefault("schema", SCHEMA_ID)
        item.setdefault("received_at", ctx.received_at)
        if isinstance(item.get("source"), dict):
            item["source"].setdefault("format", FORMAT)
        if not _VERDICT.is_valid(item) and (errors := list(_REASONS.iter_errors(item))):
            result.reject(label, _reason(errors))
            continue
        if isinstance(item.get("attributes"), dict):
            scrub(item["attributes"])
        result.events.append(cast(LLMEvent, item))
    return result


def _reason(errors: list[ValidationError]) -> str:
    """The most relevant problem, e.g. ``$.usage.input_tokens: -1 is less than the minimum of 0``.

    The message quotes the offending value, which is masked when it looks like a credential (an
    API key sent where ``api_key.hash`` belongs must not come back in a 400 or a log line).
    """
    error = best_match(errors)
    message = error.message
    field = str(error.path[-1]) if error.path else ""
    suspect = "api_key" in error.path or is_secret_key(field) or is_secret_value(error.instance)
    if isinstance(error.instance, str) and suspect:
        message = message.replace(repr(error.instance), "<redacted>")
    reason = f"{error.json_path}: {redact_text(message)}"
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 3] + "..."
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return reason
