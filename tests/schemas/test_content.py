"""Content policies and the content-size limit on one event."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas import LLMEvent
from schemas.content import (
    TRUNCATED_ATTRIBUTE,
    apply_policy,
    digest,
    loosest,
    stored_policy,
    truncate_content,
)
from tests.helpers.payloads import stored_event


def with_content(text: str) -> LLMEvent:
    event: dict[str, Any] = {
        **stored_event(1),
        "input_messages": [{"role": "user", "parts": [{"type": "text", "content": text}]}],
        "output_messages": [
            {"role": "assistant", "parts": [{"type": "tool_call", "arguments": text}]}
        ],
        "attributes": {"gen_ai.prompt": text, "other": text},
    }
    return event  # type: ignore[return-value]


def test_the_spool_keeps_what_the_least_strict_sink_needs() -> None:
    assert loosest(["redact", "hash"]) == "hash"
    assert loosest(["redact", "full", "hash"]) == "full"
    assert loosest(["redact"]) == "redact"


def test_hash_and_redact() -> None:
    hashed = with_content("secret plan")
    apply_policy(hashed, "hash")
    assert hashed["input_messages"][0]["parts"][0]["content"] == digest("secret plan")
    assert hashed["output_messages"][0]["parts"][0]["arguments"] == digest("secret plan")
    assert hashed["attributes"]["gen_ai.prompt"] == digest("secret plan")
    assert hashed["attributes"]["other"] == "secret plan"  # not a content attribute
    assert stored_policy(hashed) == "hash"
    redacted = with_content("secret plan")
    apply_policy(redacted, "redact")
    assert "input_messages" not in redacted and "gen_ai.prompt" not in redacted["attributes"]
    assert stored_policy(redacted) == "redact"


def test_a_policy_replaces_messages_and_never_changes_them_within() -> None:
    event = with_content("secret plan")
    messages = copy.deepcopy(event["input_messages"])
    shared = event["input_messages"]
    apply_policy(event, "hash")
    assert shared == messages


@pytest.mark.parametrize("text", ["a" * 1000, "é" * 1000, "日本語" * 300, "🙂" * 300])
def test_the_limit_cuts_at_a_character_boundary_within_the_bytes(text: str) -> None:
    event = with_content(text)
    shared = event["input_messages"]
    assert truncate_content(event, 100, "RELAY_X_CONTENT_MAX_BYTES") == 3
    cut = event["input_messages"][0]["parts"][0]["content"]
    kept, _, marker = cut.partition("…[truncated")
    assert text.startswith(kept) and 96 < len(kept.encode()) <= 100
    assert marker == (
        f" by llm-broadcast-relay: {len(text.encode()) - len(kept.encode())} bytes over"
        " RELAY_X_CONTENT_MAX_BYTES]"
    )
    assert event["attributes"]["gen_ai.prompt"] == cut
    assert event["attributes"]["other"] == text
    assert event["attributes"][TRUNCATED_ATTRIBUTE] is True
    assert shared[0]["parts"][0]["content"] == text


def test_a_text_cut_already_is_not_cut_again() -> None:
    """A dead letter holds the copy a sink was sent; replayed to that sink, the marker must still
    say how much the first cut dropped."""
    event = with_content("x" * 5000)
    truncate_content(event, 200, "RELAY_X_CONTENT_MAX_BYTES")
    once = copy.deepcopy(event)
    assert truncate_content(event, 200, "RELAY_X_CONTENT_MAX_BYTES") == 0
    assert event == once
    assert "4800 bytes over" in event["input_messages"][0]["parts"][0]["content"]


def test_texts_within_the_limit_are_left_alone() -> None:
    event = with_content("é" * 50)  # 100 bytes
    before = copy.deepcopy(event)
    assert truncate_content(event, 100, "X") == 0
    assert event == before
