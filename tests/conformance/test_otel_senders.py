"""Real OpenTelemetry senders through the running relay: every field they report, in its place.

Each sender (``otel_clients.SENDERS``: the OpenAI SDK with the official, OpenInference and
OpenLLMetry instrumentations, LiteLLM's ``otel`` callback) makes five calls against the fake LLM
(chat, streaming with usage, an error, embeddings, a tool call) and exports its spans to a relay
with the file sink. For each call the test holds the fake's record, the span the sender exported
and the relay's event, and checks every field the sender reported (``checks``).

The same checks run on each sender's captured request bodies (``tests/fixtures/otlp-*-captured``,
written by ``python -m tests.conformance.capture``), replayed as they were sent: the mapping of a
sender's exact output stays checked wherever the clients are not installed.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conformance.capture import fixture_path
from tests.conformance.checks import dropped, misplaced
from tests.conformance.otel_clients import SENDERS, is_call_span, run_sender
from tests.conformance.reported import Call
from tests.conformance.scenarios import SCENARIOS, prompt
from tests.helpers.fake_llm import Exchange, FakeLLM
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow


@dataclass
class SenderRun:
    sender: str
    spans: list[dict[str, Any]]
    events: list[dict[str, Any]]
    calls: dict[str, Call]
    skipped: int  # spans the relay counted as not LLM calls


RUNS = [f"live {sender}" for sender in sorted(SENDERS)]
RUNS += [f"captured {sender}" for sender in sorted(SENDERS)]


@pytest.fixture(scope="module", params=RUNS)
def sender_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SenderRun]:
    how, sender = str(request.param).split(" ")
    data = tmp_path_factory.mktemp(sender)
    with RelayProcess(data / "relay") as relay:
        if how == "live":
            with FakeLLM() as llm:
                nonce = uuid.uuid4().hex[:10]
                spans = run_sender(sender, llm.url, relay.url, nonce, data / "spans.json")
                exchanges = list(llm.exchanges)
        else:
            captured = orjson.loads(fixture_path(sender).read_bytes())
            nonce, spans = captured["nonce"], captured["spans"]
            exchanges = [Exchange(**exchange) for exchange in captured["exchanges"]]
            replay(relay, captured["bodies"])
        with contextlib.suppress(AssertionError):  # a span unaccounted for fails below
            wait_until(
                lambda: len(relay.events()) + skipped_spans(relay) >= len(spans),
                message=f"every span {sender} exported stored or skipped",
            )
        events = relay.events()
        calls = pair_calls(spans, events, nonce, lambda text: matching(exchanges, text))
        yield SenderRun(sender, spans, events, calls, skipped_spans(relay))


def replay(relay: RelayProcess, bodies: list[str]) -> None:
    """Post captured OTLP request bodies as the sender's exporter did."""
    headers = {"Content-Type": "application/x-protobuf"}
    for body in bodies:
        answer = relay.request("POST", "/v1/traces", base64.b64decode(body), headers)
        assert answer.status == 200, answer.data


def matching(exchanges: list[Exchange], text: str) -> Exchange:
    (exchange,) = [exchange for exchange in exchanges if text in exchange.text_in()]
    return exchange


def pair_calls(
    spans: list[dict[str, Any]],
    events: list[dict[str, Any]],
    nonce: str,
    exchange_for: Callable[[str], Exchange],
) -> dict[str, Call]:
    """Each scenario's call: the exchange, the sender's span and the relay's event for it."""
    calls = {}
    for span in spans:
        scenario = _scenario(span, nonce)
        found = [event for event in events if event.get("span_id") == span["span_id"]]
        if scenario and found:
            calls[scenario] = Call(scenario, exchange_for(prompt(nonce, scenario)), span, found[0])
    return calls


def skipped_spans(relay: RelayProcess) -> int:
    """The spans the relay skipped as no LLM call, from its metrics."""
    text = relay.request("GET", "/metrics").data.decode()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "relay_items_skipped_total" and sample.labels["reason"] == "not_llm"
        )
    )


def _scenario(span: dict[str, Any], nonce: str) -> str | None:
    """The scenario whose prompt a span carries (a child span may quote it too: the LLM span is
    the one with a model)."""
    if not is_call_span(span):
        return None
    text = orjson.dumps(span["attributes"]).decode()
    found = next((s for s in SCENARIOS if prompt(nonce, s) in text), None)
    if found is None and "embedding" in text:  # a sender that keeps no content
        return "embeddings"
    return found


def test_one_event_per_call_and_none_for_other_spans(sender_run: SenderRun) -> None:
    assert sorted(sender_run.calls) == sorted(SCENARIOS)
    assert len(sender_run.events) == len(SCENARIOS), [
        e.get("attributes", {}).get("otlp.span.name") for e in sender_run.events
    ]
    others = [span for span in sender_run.spans if not is_call_span(span)]
    assert sender_run.skipped == len(others), [span["name"] for span in others]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_reported_field_in_its_place(sender_run: SenderRun, scenario: str) -> None:
    call = sender_run.calls.get(scenario)
    assert call is not None, f"no event for the {scenario} call"
    problems = list(misplaced(call))
    assert not problems, "\n".join(problems)


def test_nothing_reported_is_dropped(sender_run: SenderRun) -> None:
    """Every attribute of an LLM span is in a field or in ``attributes``: nothing vanishes."""
    problems = [problem for call in sender_run.calls.values() for problem in dropped(call)]
    assert not problems, "\n".join(problems)
