"""Prompt and completion from each sender's message convention (``otlp_content``).

The attribute names and shapes are those the real senders exported in the conformance suite
(``tests/conformance``), reduced to what each case needs; the suite checks the same through the
running relay with the senders themselves.
"""

from __future__ import annotations

from typing import Any

import orjson

from receiver.normalizers.otlp import normalize_json
from receiver.normalizers.otlp_attributes import SpanNames
from receiver.normalizers.otlp_content import take_content
from tests.receiver.normalizers.conftest import checked
from tests.receiver.normalizers.otlp_bodies import json_request, json_span


def content(attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``take_content`` found, and the attributes it left."""
    left = dict(attributes)
    found = take_content(left, SpanNames.of(tuple(attributes)).indexed)
    return found, left


def test_an_openinference_tool_call_is_one_tool_call_part() -> None:
    prefix = "llm.output_messages.0.message."
    found, left = content(
        {
            prefix + "role": "assistant",
            prefix + "tool_calls.0.tool_call.id": "call-1",
            prefix + "tool_calls.0.tool_call.function.name": "get_weather",
            prefix + "tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
        }
    )
    assert found["output_messages"] == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call-1",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                }
            ],
        }
    ]
    assert left == {}


def test_litellm_tool_call_fills_its_empty_output_message() -> None:
    empty = [{"role": "assistant", "parts": [], "finish_reason": "tool_calls"}]
    found, _ = content(
        {
            "gen_ai.output.messages": orjson.dumps(empty).decode(),
            "gen_ai.completion.0.function_call.name": "get_weather",
            "gen_ai.completion.0.function_call.arguments": '{"city": "Paris"}',
        }
    )
    (message,) = found["output_messages"]
    assert message["parts"] == [
        {"type": "tool_call", "name": "get_weather", "arguments": {"city": "Paris"}}
    ]
    assert found["finish_reasons"] == ["tool_calls"]


def test_embedded_texts_are_input_messages_and_vectors_are_dropped() -> None:
    found, left = content(
        {
            "embedding.embeddings.1.embedding.text": "second",
            "embedding.embeddings.0.embedding.text": "first",
            "embedding.embeddings.0.embedding.vector": [0.25, -0.5],
            "embedding.embeddings.1.embedding.vector": [0.5, 0.125],
            "input.value": '{"model": "text-embedding-3-small", "input": ["first", "second"]}',
            "input.mime_type": "application/json",
            "output.value": '{"data": [{"embedding": [0.25, -0.5]}]}',
            "output.mime_type": "application/json",
        }
    )
    assert [m["parts"] for m in found["input_messages"]] == [
        [{"type": "text", "content": "first"}],
        [{"type": "text", "content": "second"}],
    ]
    assert "output_messages" not in found
    assert "output.value" not in left
    assert not [key for key in left if key.endswith(".vector")]
    assert left["input.value"].startswith("{")  # the request body stays, as sent


def test_a_json_value_is_a_message_only_when_it_is_a_chat_body() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    found, left = content(
        {
            "input.value": orjson.dumps(request).decode(),
            "input.mime_type": "application/json",
            "output.value": '{"result": 42}',
            "output.mime_type": "application/json",
        }
    )
    assert found["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    ]
    assert "output_messages" not in found
    assert left["output.value"] == '{"result": 42}'


def test_a_plain_text_value_is_a_message() -> None:
    found, left = content({"input.value": "hello", "output.value": "hi there"})
    assert found["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]}
    ]
    assert found["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi there"}]}
    ]
    assert left == {}


def test_openrouter_completion_wrapper_is_one_assistant_message() -> None:
    completion = {
        "completion": "Done.",
        "reasoning": "Short.",
        "toolCalls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
        "rawRequest": {"model": "<omitted>"},
    }
    found, left = content({"gen_ai.completion": orjson.dumps(completion).decode()})
    assert found["output_messages"] == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "Short."},
                {"type": "text", "content": "Done."},
                {"type": "tool_call", "id": "t1", "name": "f", "arguments": {}},
            ],
        }
    ]
    assert left == {"gen_ai.completion.raw_request": {"model": "<omitted>"}}


def test_a_failed_openrouter_completion_has_no_output() -> None:
    found, left = content({"gen_ai.completion": '{"completion": null}'})
    assert "output_messages" not in found
    assert left == {}


def test_finish_reasons_come_from_output_messages_when_no_attribute_has_them() -> None:
    outputs = [{"role": "assistant", "parts": [], "finish_reason": "length"}]
    found, _ = content({"gen_ai.output.messages": orjson.dumps(outputs).decode()})
    assert found["finish_reasons"] == ["length"]


def test_messages_in_the_genai_shape_are_held_to_it() -> None:
    """Whatever a sender puts in ``parts``, the event keeps the schema's shape (``checked``
    validates it): a role, and parts that are objects with a text ``type``."""
    sent = [
        {"parts": [1, 2]},
        {"role": "user", "parts": [None, {"type": 7}, "hi", {"content": "x"}], "name": 5},
    ]
    span = json_span(
        {"gen_ai.operation.name": "chat", "gen_ai.input.messages": orjson.dumps(sent).decode()}
    )
    (event,) = checked(normalize_json, json_request(span)).events
    assert event["input_messages"] == [
        {
            "role": "user",
            "parts": [{"type": "other", "content": 1}, {"type": "other", "content": 2}],
        },
        {
            "role": "user",
            "name": "5",
            "parts": [
                {"type": "7"},
                {"type": "text", "content": "hi"},
                {"type": "other", "content": "x"},
            ],
        },
    ]


def test_an_output_message_without_a_role_is_the_assistant_s() -> None:
    sent = [{"parts": [{"type": "text", "content": "ok"}]}]
    span = json_span(
        {"gen_ai.operation.name": "chat", "gen_ai.output.messages": orjson.dumps(sent).decode()}
    )
    (event,) = checked(normalize_json, json_request(span)).events
    assert event["output_messages"][0]["role"] == "assistant"
