"""LiteLLM's legacy generic_api payload (``litellm.generic_api_use_v1 = True``) becomes LLMEvents.

Most cases start from what LiteLLM 1.110.2 really posted (``litellm-generic-api-v1-captured.json``:
every value ``str()``-ed, Python reprs inside); the older reconstructed example covers the rest.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from receiver.normalizers.base import Normalized
from receiver.normalizers.common import stable_id
from receiver.normalizers.litellm import normalize
from receiver.normalizers.litellm_v1 import MAX_REPR_CHARS, read_repr
from tests.conftest import fixture_json
from tests.receiver.normalizers.conftest import CTX, assert_clean, bodies, checked

_, LEGACY = bodies("litellm-standard-logging-payload-example.json")
KEY_HASH = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
CAPTURED_POSTS = fixture_json("litellm-generic-api-v1-captured.json")["posts"]
CAPTURED = [item for post in CAPTURED_POSTS for item in orjson.loads(post["body"])]


def run(inputs: Any, *secrets: str) -> Normalized:
    return checked(normalize, inputs, secrets)


def captured(scenario: str) -> dict[str, Any]:
    """The captured v1 payload of one conformance scenario (its prompt is tagged ``:scenario]``)."""
    (payload,) = [p for p in CAPTURED if f":{scenario}]" in p["messages"]]
    return copy.deepcopy(payload)


def hidden_params(payload: dict[str, Any]) -> dict[str, Any]:
    """What LiteLLM put under metadata['hidden_params'], read from the repr independently."""
    metadata = read_repr(payload["metadata"])
    assert isinstance(metadata, dict)
    return dict(metadata["hidden_params"])


def test_the_captured_post_gives_one_event_per_payload() -> None:
    (post,) = CAPTURED_POSTS
    result = normalize(post["body"].encode(), CTX)
    assert_clean(result, CAPTURED)
    assert (len(result.events), result.rejected) == (len(CAPTURED), [])
    assert all(e["attributes"]["litellm.payload_version"] == "v1" for e in result.events)


def test_event_id_is_litellms_call_id_not_the_response_id() -> None:
    chat = captured("chat")
    call_id = hidden_params(chat)["litellm_call_id"]
    event = run([chat]).events[0]
    assert event["event_id"] == stable_id("litellm", call_id)
    assert event["attributes"]["litellm.call_id"] == call_id
    assert event["attributes"]["gen_ai.response.id"] == chat["id"]


def test_calls_sharing_a_response_id_stay_distinct_events() -> None:
    # A streamed call's v1 payload has no call id of LiteLLM's, only the provider's response id,
    # which two calls can share (a cached answer replayed): the start time tells them apart.
    stream = captured("stream")
    assert "litellm_call_id" not in hidden_params(stream)
    later = dict(stream, startTime="2026-11-29 18:45:00.000001", endTime="2026-11-29 18:45:01")
    first, again, second = run([stream, stream, later]).events
    assert first["event_id"] == again["event_id"] != second["event_id"]
    assert "litellm.call_id" not in first["attributes"]


def test_provider_upstream_and_api_base_come_from_hidden_params() -> None:
    chat = captured("chat")
    hidden = hidden_params(chat)
    event = run([chat]).events[0]
    assert (event["provider"], event["upstream"]) == (hidden["custom_llm_provider"],) * 2
    assert event["attributes"]["server.address"] == "127.0.0.1"  # the fake LLM's api_base
    assert event["attributes"]["litellm.model_name"] == hidden["litellm_model_name"]


def test_rate_limits_come_from_hidden_params_headers() -> None:
    chat = captured("chat")
    limits = (
        "'additional_headers': {'llm_provider-x-ratelimit-limit-requests': '500', "
        "'llm_provider-x-ratelimit-remaining-requests': '499', "
        "'llm_provider-x-ratelimit-limit-tokens': '30000', "
        "'llm_provider-x-ratelimit-remaining-tokens': '29977', "
    )
    assert chat["metadata"].count("'additional_headers': {") == 1
    chat["metadata"] = chat["metadata"].replace("'additional_headers': {", limits)
    event = run([chat]).events[0]
    assert event["rate_limit"] == {
        "requests_limit": 500,
        "requests_remaining": 499,
        "tokens_limit": 30000,
        "tokens_remaining": 29977,
    }


def test_no_user_is_no_user_id_not_the_string_none() -> None:
    tool = captured("tool")
    assert tool["user"] == "None"  # str(None): the call had no user=
    assert "user_id" not in run([tool]).events[0]
    chat = captured("chat")
    assert run([chat]).events[0]["user_id"] == chat["user"]


def test_session_id_from_the_callers_metadata() -> None:
    chat = captured("chat")
    metadata = read_repr(chat["metadata"])
    assert isinstance(metadata, dict)
    assert run([chat]).events[0]["session_id"] == metadata["session_id"]


def test_tool_call_answer_is_one_tool_call_part() -> None:
    event = run([captured("tool")]).events[0]
    assert event["output_messages"] == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call-fake000006",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                }
            ],
        }
    ]
    assert event["finish_reasons"] == ["tool_calls"]


def test_streamed_answer_keeps_the_providers_response_model() -> None:
    # v1's response repr names a streamed answer by the requested model; hidden_params has the
    # model the provider answered with
    stream = captured("stream")
    provider_model = hidden_params(stream)["provider_response_model"]
    assert f"model='{provider_model}'" not in stream["response"]
    event = run([stream]).events[0]
    assert (event["request_model"], event["response_model"]) == (stream["model"], provider_model)
    assert event["stream"] is True


def test_embedding_call() -> None:
    embedding = captured("embeddings")
    event = run([embedding]).events[0]
    assert event["operation"] == "embeddings"
    assert event["response_model"] == "text-embedding-3-small-2026-11-01"
    assert [m["parts"][0]["content"] for m in event["input_messages"]] == [
        m["content"] for m in read_repr(embedding["messages"])
    ]
    assert "output_messages" not in event
    assert event["cost"] == {
        "total": float(embedding["cost"]),
        "currency": "USD",
        "source": "gateway",
    }


@pytest.mark.parametrize(
    ("text", "data"),
    [
        pytest.param("None", None, id="none"),
        pytest.param("hello", "hello", id="a-bare-word-is-text"),
        pytest.param("42", "42", id="a-number-is-text"),
        pytest.param(
            "Usage(prompt_tokens=3, x=-1.5)", {"prompt_tokens": 3, "x": -1.5}, id="object"
        ),
        pytest.param(
            "{'when': datetime.datetime(2025, 1, 24)}", {"when": None}, id="not-a-literal"
        ),
        pytest.param(
            "{'b': b'raw', 'f': 1e999, 'n': -True}", {"b": None, "f": None, "n": None}, id="odd"
        ),
        pytest.param("[{'a': (1, 2)}, {**x}]", [{"a": [1, 2]}, {}], id="tuples-and-spreads"),
        pytest.param("ModelResponse(id='x'", "ModelResponse(id='x'", id="cut-short"),
        pytest.param("[" * 1000 + "]" * 1000, "[" * 1000 + "]" * 1000, id="too-deep"),
    ],
)
def test_repr_reader_builds_data_and_never_evaluates(text: str, data: Any) -> None:
    assert read_repr(text) == data


def test_legacy_v1_payload() -> None:
    result = run(LEGACY)
    event = result.events[0]
    assert event["attributes"]["gen_ai.response.id"] == "chatcmpl-123"
    assert event["start_time"] == "2025-01-24T09:20:46.847371000Z"  # naive datetime read as UTC
    assert event["duration_ms"] == pytest.approx(4.583)
    assert (event["operation"], event["request_model"]) == ("chat", "gpt-4o")
    assert event["usage"] == {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    assert event["cost"] == {"total": 0.000225, "currency": "USD", "source": "gateway"}
    assert event["status"] == "ok"
    assert event["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Hello"}]}
    ]
    assert event["attributes"]["gateway.cache_hit"] is False
    assert event["attributes"]["litellm.payload_version"] == "v1"
    assert "user_id" not in event


def test_legacy_v1_reprs_are_read() -> None:
    response = (
        "ModelResponse(id='chatcmpl-9', created=1737710446, model='gpt-4o-2024-08-06', "
        "object='chat.completion', choices=[Choices(finish_reason='stop', index=0, "
        "message=Message(content=\"It's 42.\\nDone\", role='assistant', tool_calls=None))], "
        "usage=Usage(completion_tokens=7, prompt_tokens=12, total_tokens=19, "
        "completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=3), "
        "prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=4)))"
    )
    legacy = dict(
        LEGACY[0],
        id="chatcmpl-9",
        response=response,
        usage=response[response.index("usage=") + 6 : -1],
        user="end-user-7",
        cache_hit="True",
        metadata="{'user_api_key_alias': 'ops', 'user_api_key': '" + KEY_HASH + "', "
        "'headers': {'authorization': 'Bearer sk-legacy-0123456789abcdef'}, "
        "'endpoint': datetime.datetime(2025, 1, 24)}",
    )
    result = run([legacy], "sk-legacy-0123456789abcdef")
    event = result.events[0]
    assert event["response_model"] == "gpt-4o-2024-08-06"
    assert event["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "It's 42.\nDone"}]}
    ]
    assert event["finish_reasons"] == ["stop"]
    assert event["usage"] == {
        "input_tokens": 12,
        "output_tokens": 7,
        "total_tokens": 19,
        "cache_read_input_tokens": 4,
        "reasoning_output_tokens": 3,
    }
    assert event["user_id"] == "end-user-7"
    assert event["api_key"] == {"name": "ops", "hash": "sha256:" + KEY_HASH[:16]}
    assert event["attributes"]["gateway.cache_hit"] is True


def test_a_repr_too_long_to_parse_stays_text_without_its_credentials() -> None:
    """Past MAX_REPR_CHARS a repr is not parsed (it would hold the relay): it is kept as the text
    it is, and the structure it quotes still loses its credentials."""
    long_text = "x" * (MAX_REPR_CHARS + 1)
    written = str([{"role": "user", "content": long_text, "api_key": "tok-too-long"}])
    kept = read_repr(written)
    assert isinstance(kept, str) and long_text in kept
    assert "tok-too-long" not in kept
