"""The content of GenAI spans (``sinks.otlp_spans``): input and output messages in the shapes of
semconv's ``gen_ai-input-messages.json`` and ``gen_ai-output-messages.json`` (each output message
with its ``finish_reason``), and the gateway's cost under its GenAI and OpenInference names.

What a real store makes of them is checked end to end in ``test_otlp_phoenix``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import LLMEvent
from tests.sinks.test_otlp_spans import llm_event, local_spans


def sent_messages(event: LLMEvent, side: str) -> Any:
    [span] = local_spans([event])
    values = {kv.key: kv.value for kv in span.attributes}
    return orjson.loads(values[f"gen_ai.{side}.messages"].string_value)


def answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "parts": [{"type": "text", "content": text}]}


@pytest.mark.parametrize(
    ("reported", "status", "expected"),
    [
        (["stop"], "ok", ["stop", "stop", "stop"]),  # one reason: every choice's
        (["stop", "length", "tool_calls"], "ok", ["stop", "length", "tool_calls"]),  # by index
        (["stop", "length"], "ok", ["", "", ""]),  # deduplicated or partial: which is which?
        (None, "ok", ["", "", ""]),  # not reported: not made up
        (None, "error", ["error", "error", "error"]),
        ([], "error", ["error", "error", "error"]),
    ],
    ids=["one-for-all", "by-index", "counts-differ", "unreported", "failed", "failed-empty"],
)
def test_every_output_message_has_a_finish_reason(
    reported: list[str] | None, status: str, expected: list[str]
) -> None:
    fields: dict[str, Any] = {"status": status, "output_messages": [answer(t) for t in "abc"]}
    if reported is not None:
        fields["finish_reasons"] = reported
    messages = sent_messages(llm_event(**fields), "output")
    assert [m["finish_reason"] for m in messages] == expected
    assert [m["parts"] for m in messages] == [answer(t)["parts"] for t in "abc"]


def test_a_finish_reason_the_message_already_had_is_kept() -> None:
    own = {**answer("Hi"), "finish_reason": "content_filter"}
    event = llm_event(finish_reasons=["stop"], output_messages=[own, answer("there")])
    assert [m["finish_reason"] for m in sent_messages(event, "output")] == [
        "content_filter",
        "stop",
    ]


def test_messages_take_semconvs_shape() -> None:
    """Text content is a string, ``name`` and ``id`` are strings or absent, a tool call keeps its
    ``arguments`` (null included) and a part of an unknown kind stays as it was."""
    image = {"type": "image_url", "content": {"url": "https://example.com/a.png"}}
    call = {"type": "tool_call", "id": None, "name": "lookup", "arguments": None}
    event = llm_event(
        input_messages=[
            {"role": "user", "name": None, "parts": [{"type": "text", "content": 42}, image]},
            {"role": None, "parts": [{"type": "text", "content": None}, {"content": "typeless"}]},
        ],
        output_messages=[{"role": "assistant", "name": "bot", "parts": [call]}],
        finish_reasons=["tool_calls"],
    )
    assert sent_messages(event, "input") == [
        {"role": "user", "parts": [{"type": "text", "content": "42"}, image]},
        {
            "role": "user",
            "parts": [{"type": "text", "content": ""}, {"type": "text", "content": "typeless"}],
        },
    ]
    assert sent_messages(event, "output") == [
        {
            "role": "assistant",
            "name": "bot",
            "parts": [{"type": "tool_call", "name": "lookup", "arguments": None}],
            "finish_reason": "tool_calls",
        }
    ]


def test_cost_is_sent_under_both_names_and_only_when_reported() -> None:
    [priced, unpriced] = local_spans(
        [
            llm_event(cost={"total": 0.5, "input": 0.2, "currency": "USD", "source": "gateway"}),
            llm_event(),
        ]
    )
    costs = {kv.key: kv.value for kv in priced.attributes if "cost" in kv.key}
    assert costs.pop("gen_ai.usage.cost_source").string_value == "gateway"  # billed, not estimated
    assert {key: value.double_value for key, value in costs.items()} == {
        "gen_ai.usage.cost": 0.5,
        "gen_ai.usage.input_cost": 0.2,
        "llm.cost.total": 0.5,
        "llm.cost.prompt": 0.2,
    }
    assert not [kv.key for kv in unpriced.attributes if "cost" in kv.key]
