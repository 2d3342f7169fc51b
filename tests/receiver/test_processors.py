"""``process``: what every event goes through whatever its format; here, the secrets beside what a
message says and in names, and what is left as said."""

from __future__ import annotations

from typing import Any

from foundation.secrets import MASK
from receiver.processors import process
from tests.helpers.payloads import native_event


def processed(**fields: Any) -> dict[str, Any]:
    event: Any = native_event("processors", **fields)
    process([event], None, "full")
    result: dict[str, Any] = event
    return result


def test_credentials_beside_a_message_or_a_part_are_removed() -> None:
    messages = [
        {
            "role": "user",
            "api_key": "tok-message",
            "parts": [{"type": "text", "content": "hello", "authToken": "tok-part"}],
        }
    ]
    event = processed(input_messages=messages)
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]}
    ]


def test_what_a_part_says_is_left_as_said_unless_it_is_a_structure() -> None:
    said = "my key is Bearer abcdefghijkl, keep it"
    structure = {"query": "q", "nested": {"password": "tok-args"}}
    messages = [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": said},
                {"type": "tool_call", "id": "c1", "name": "search", "arguments": structure},
            ],
        }
    ]
    (message,) = processed(output_messages=messages)["output_messages"]
    text, call = message["parts"]
    assert text == {"type": "text", "content": said}
    assert call == {
        "type": "tool_call",
        "id": "c1",
        "name": "search",
        "arguments": {"query": "q", "nested": {}},
    }


def test_a_structure_written_where_a_name_was_expected_loses_its_credentials() -> None:
    written = str({"call": {"api_key": "tok-op"}})
    event = processed(
        operation=written, request_model="gpt-4o", error={"type": "x", "message": written}
    )
    assert "tok-op" not in str(event)
    assert MASK in event["operation"] and event["request_model"] == "gpt-4o"


def test_a_key_name_and_a_gateway_that_carry_a_credential_are_masked() -> None:
    event = processed(api_key={"name": str({"api_key": "tok-key-name"})})
    event_source: Any = native_event("gateway")
    event_source["source"]["gateway"] = "Bearer tok-gateway-1234"
    process([event_source], None, "full")
    assert "tok-key-name" not in str(event["api_key"])
    assert "tok-gateway" not in event_source["source"]["gateway"]


def test_a_sender_cannot_say_what_the_relay_did_to_content() -> None:
    """``relay.content_policy`` and ``relay.content_truncated`` are the relay's record of what it
    did to an event's content: a sink's dispatcher trusts them, a sender may not set them."""
    event = processed(
        attributes={"relay.content_policy": "redact", "relay.content_truncated": True, "k": 1}
    )
    assert event["attributes"] == {"k": 1}
