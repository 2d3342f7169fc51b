"""Real OpenTelemetry senders, through the running relay, read back from Arize Phoenix.

Each sender (``otel_clients.SENDERS``) makes its five calls against the fake LLM and exports its
spans to a relay with the file sink and the ``phoenix`` sink, pointed at one Phoenix (the session's
``phoenix`` fixture) under a project of its own. For every call the test holds the fake's record
(what was really asked and answered), the span the sender exported, the relay's event and the
span Phoenix stored, found by its span id; and checks what Phoenix shows, in the OpenInference
fields its UI reads (``llm.output_messages.*``, ``llm.input_messages.*``, ``llm.model_name``,
``llm.token_count.*``, the status): the model's answer on every call that has one, the prompt,
the model and the token counts, and the failed call as an error.

The calls of one sender run one after the other, so the sender's call spans, ordered by start
time, are the scenarios in ``SCENARIOS`` order; the prompt Phoenix shows confirms the pairing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.conformance.otel_clients import SENDERS, run_sender
from tests.conformance.reported import Call, usage_reported
from tests.conformance.scenarios import SCENARIOS, prompt
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.phoenix import Phoenix, phoenix_messages
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

ANSWERED = ("chat", "stream", "tool")

# The relay event's usage field -> the OpenInference count Phoenix shows: derived from the GenAI
# names, or (total, reasoning: Phoenix derives neither) sent under OpenInference's own.
PHOENIX_TOKENS = {
    "input_tokens": "llm.token_count.prompt",
    "output_tokens": "llm.token_count.completion",
    "total_tokens": "llm.token_count.total",
    "cache_read_input_tokens": "llm.token_count.prompt_details.cache_read",
    "reasoning_output_tokens": "llm.token_count.completion_details.reasoning",
}


@dataclass
class StoredCall(Call):
    """One LLM call as the fake, the sender, the relay and Phoenix each recorded it."""

    stored: dict[str, Any]

    @property
    def shown(self) -> dict[str, Any]:
        """The attributes Phoenix keeps for the span, its derived ``llm.*`` fields among them."""
        attributes: dict[str, Any] = self.stored["attributes"]
        return attributes


@pytest.fixture(scope="module", params=sorted(SENDERS))
def stored_calls(
    request: pytest.FixtureRequest, phoenix: Phoenix, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, StoredCall]:
    """Every call of one sender, once Phoenix has stored each call's span, by scenario."""
    sender: str = request.param
    data = tmp_path_factory.mktemp(f"phoenix-{sender}")
    nonce = uuid.uuid4().hex[:10]
    project = f"conformance-{sender}-{nonce}"
    env = {
        "RELAY_SINKS": "phoenix,file",
        "RELAY_PHOENIX_ENDPOINT": phoenix.traces_url,
        "RELAY_PHOENIX_PROJECT": project,
        "RELAY_PHOENIX_FLUSH_INTERVAL": "0.05",
    }
    with FakeLLM() as llm, RelayProcess(data / "relay", env) as relay:
        spans = run_sender(sender, llm.url, relay.url, nonce, data / "spans.json")
        by_id = {span["span_id"]: span for span in spans}
        events = wait_until(
            lambda: called(relay.events(), by_id),
            timeout=30,
            message=f"an event for each of {sender}'s {len(SCENARIOS)} calls",
        )
        stored = wait_until(
            lambda: stored_by_id(phoenix, project, {e["span_id"] for e in events}),
            timeout=30,
            message=f"{sender}'s {len(SCENARIOS)} spans in Phoenix's project {project}",
        )
        exchanges = {s: llm.matching(prompt(nonce, s)) for s in SCENARIOS}
    assert len(events) == len(SCENARIOS), [by_id[e["span_id"]]["name"] for e in events]
    in_order = sorted(events, key=lambda event: by_id[event["span_id"]]["start_ns"])
    calls = {}
    for scenario, event in zip(SCENARIOS, in_order, strict=True):
        (exchange,) = exchanges[scenario]
        span = by_id[event["span_id"]]
        calls[scenario] = StoredCall(scenario, exchange, span, event, stored[event["span_id"]])
    return calls


def called(
    events: list[dict[str, Any]], spans: dict[str, dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The relay's events for the sender's spans, once there is one for every scenario."""
    found = [event for event in events if event.get("span_id") in spans]
    return found if len(found) >= len(SCENARIOS) else None


def stored_by_id(phoenix: Phoenix, project: str, span_ids: set[str]) -> dict[str, Any] | None:
    """Phoenix's spans of a project by span id, once it has stored all of ``span_ids``
    (it answers the export before it stores the spans)."""
    stored = {span["context"]["span_id"]: span for span in phoenix.spans(project)}
    return stored if span_ids <= stored.keys() else None


def test_each_call_is_one_span_in_phoenix_in_the_senders_trace(
    stored_calls: dict[str, StoredCall],
) -> None:
    assert sorted(stored_calls) == sorted(SCENARIOS)
    for scenario, call in stored_calls.items():
        assert call.stored["context"] == {
            "trace_id": call.span["trace_id"],
            "span_id": call.span["span_id"],
        }, scenario
        kind = "EMBEDDING" if scenario == "embeddings" else "LLM"
        assert call.stored["span_kind"] == kind, scenario


@pytest.mark.parametrize("scenario", ANSWERED)
def test_the_models_answer_shows_in_phoenix(
    stored_calls: dict[str, StoredCall], scenario: str
) -> None:
    """What the fake answered (its text, or its tool call), with the finish reason the relay
    gave it: Phoenix drops an output message list without one, the answer with it."""
    call = stored_calls[scenario]
    message = call.exchange.response["choices"][0]["message"]
    [reason] = call.event["finish_reasons"]
    expected: dict[str, Any] = {"role": "assistant", "finish_reason": reason}
    if message.get("content"):
        expected["content"] = message["content"]
    for index, tool_call in enumerate(message.get("tool_calls") or []):
        prefix = f"tool_calls.{index}.tool_call."
        expected[prefix + "function.name"] = tool_call["function"]["name"]
        expected[prefix + "function.arguments"] = orjson.loads(tool_call["function"]["arguments"])
        if call.reported.has(tool_call["id"]):  # LiteLLM does not report the call's id
            expected[prefix + "id"] = tool_call["id"]
    assert phoenix_messages(call.shown, "output") == [expected], (
        f"the relay's output_messages: {call.event.get('output_messages')!r}"
    )


@pytest.mark.parametrize("scenario", [*ANSWERED, "error"])
def test_the_prompt_shows_in_phoenix(stored_calls: dict[str, StoredCall], scenario: str) -> None:
    """Every message the client sent, in order (which also confirms the call's pairing)."""
    call = stored_calls[scenario]
    sent = [
        {"role": message["role"], "content": message["content"]}
        for message in call.exchange.request["messages"]
    ]
    assert phoenix_messages(call.shown, "input") == sent


@pytest.mark.parametrize("scenario", [*ANSWERED, "embeddings"])
def test_the_model_and_token_counts_show_in_phoenix(
    stored_calls: dict[str, StoredCall], scenario: str
) -> None:
    """The model the client asked for (Phoenix's model name is the request model) and every
    token count the sender reported, as the fake counted them."""
    call = stored_calls[scenario]
    model_field = "embedding.model_name" if scenario == "embeddings" else "llm.model_name"
    requested = call.exchange.request["model"]
    assert call.event["request_model"] == requested
    assert call.shown.get(model_field) == requested
    counts = usage_reported(call.exchange, call.reported)
    assert counts, "the sender reported no token count"
    for field, count in counts.items():
        assert call.event["usage"][field] == count, field
        if field in PHOENIX_TOKENS:
            assert call.shown.get(PHOENIX_TOKENS[field]) == count, field


def test_a_failed_call_shows_as_an_error_in_phoenix(stored_calls: dict[str, StoredCall]) -> None:
    call = stored_calls["error"]
    assert call.exchange.status >= 400
    assert call.stored["status_code"] == "ERROR"
    assert call.exchange.response["error"]["message"] in call.stored["status_message"]
    assert call.shown.get("llm.model_name") == call.exchange.request["model"]
    assert phoenix_messages(call.shown, "output") == []
    assert not any(key.startswith("llm.token_count.") for key in call.shown)
