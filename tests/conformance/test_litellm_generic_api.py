"""LiteLLM's ``generic_api`` callback, the real sender, against the running relay: every format.

For each ``log_format`` (``json_array``, ``ndjson``, ``single``) and the legacy v1 payload, LiteLLM
runs the five conformance scenarios (``tests.conformance.litellm_webhook``, one process per format,
all four at once) against a loopback fake LLM, and posts to a relay with the file sink. Each event
is then compared field by field with what really happened: the fake's record of the call (models,
tokens, prompts, answer, status) and the payload LiteLLM posted (call id, provider, cost, times).
Nothing expected is typed in here except what the scenario itself chose (the end user, the session
id, the operation).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conformance.litellm_webhook import FORMATS
from tests.conformance.scenarios import END_USER, SCENARIOS, session_id
from tests.helpers.fake_llm import Exchange, FakeLLM
from tests.helpers.relay import ROOT, RelayProcess
from tests.helpers.waiting import at_least, wait_until

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT_S = 120.0
TENANT = "conformance"  # the relays take LiteLLM's posts with this tenant's token
CURRENT_FORMATS = ("json_array", "ndjson", "single")
USER_SCENARIOS = ("chat", "stream", "error")  # the calls made with user=END_USER
CASES = [
    pytest.param(fmt, scenario, id=f"{fmt}-{scenario}")
    for fmt in FORMATS
    for scenario in SCENARIOS
    # LiteLLM builds no v1 payload for a failed call (test_v1_sends_nothing_for_a_failed_call)
    if not (fmt == "v1" and scenario == "error")
]


@dataclass
class Run:
    """One format's run: the calls as the fake saw them, the posts as LiteLLM made them, the
    relay's events."""

    fmt: str
    nonce: str
    fake: FakeLLM
    relay: RelayProcess
    token: str
    out: Path
    client: subprocess.Popen[bytes] | None = None
    posts: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def tag(self, scenario: str) -> str:
        return f"[{self.nonce}:{scenario}]"

    def exchange(self, scenario: str) -> Exchange:
        matching = self.fake.matching(self.tag(scenario))
        assert len(matching) == 1, f"{scenario}: {len(matching)} calls reached the fake"
        return matching[0]

    def payload(self, scenario: str) -> dict[str, Any]:
        matching = [p for p in self.payloads if self.tag(scenario) in orjson.dumps(p).decode()]
        assert len(matching) == 1, f"{scenario}: LiteLLM posted {len(matching)} payloads"
        return matching[0]

    def event(self, scenario: str) -> dict[str, Any]:
        matching = [e for e in self.events if self.tag(scenario) in orjson.dumps(e).decode()]
        assert len(matching) == 1, f"{scenario}: the relay stored {len(matching)} events"
        return matching[0]


def start_client(run: Run) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.conformance.litellm_webhook", "--format", run.fmt]
    command += ["--llm", run.fake.url, "--relay", run.relay.url, "--nonce", run.nonce]
    command += ["--out", str(run.out), "--token", run.token]
    # LiteLLM would otherwise fetch its price map from the internet at import: loopback only.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = open(run.out.with_suffix(".log"), "wb")  # noqa: SIM115 - handed to the child process
    with log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_client(client: subprocess.Popen[bytes]) -> None:
    """A client still running when the fixture fails is ended (it is this test's own child)."""
    if client.poll() is None:
        client.kill()
        client.wait()


def posted_payloads(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The payloads in the bodies LiteLLM posted, each body framed as its log_format says."""
    payloads: list[dict[str, Any]] = []
    for post in posts:
        body = post["body"]
        if post["log_format"] == "ndjson":
            items = [orjson.loads(line) for line in body.split("\n") if line]
        else:
            decoded = orjson.loads(body)
            items = decoded if post["log_format"] == "json_array" else [decoded]
        assert isinstance(items, list) and all(isinstance(i, dict) for i in items), body[:200]
        payloads += items
    return payloads


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """All four formats at once: LiteLLM's import is slow, the clients run side by side."""
    with ExitStack() as stack:
        found: dict[str, Run] = {}
        for fmt in FORMATS:
            work = tmp_path_factory.mktemp(f"litellm-{fmt}")
            fake = stack.enter_context(FakeLLM())
            token = f"tok-{uuid.uuid4().hex}"
            relay = RelayProcess(work / "relay", {"RELAY_INGEST_TOKENS": f"{TENANT}={token}"})
            nonce = f"{fmt}-{uuid.uuid4().hex[:12]}"
            found[fmt] = Run(fmt, nonce, fake, relay, token, work / "posts.json")
        with ThreadPoolExecutor(len(found)) as pool:
            list(pool.map(lambda run: stack.enter_context(run.relay), found.values()))
        for run in found.values():
            run.client = start_client(run)
            stack.callback(stop_client, run.client)
        for run in found.values():
            assert run.client is not None
            code = run.client.wait(CLIENT_TIMEOUT_S)
            assert code == 0, run.out.with_suffix(".log").read_text(errors="replace")[-4000:]
            run.posts = orjson.loads(run.out.read_bytes())
            run.payloads = posted_payloads(run.posts)
            count = len(run.payloads)
            run.events = wait_until(
                at_least(count, run.relay.events), message=f"{count} {run.fmt} events stored"
            )
        yield found


# -- the posts as LiteLLM made them, the answers as the relay gave them ----------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_post_is_accepted_whole(runs: dict[str, Run], fmt: str) -> None:
    run = runs[fmt]
    expected_format = "json_array" if fmt == "v1" else fmt  # v1 keeps the default framing
    assert run.posts, "LiteLLM posted nothing"
    for post in run.posts:
        assert post["log_format"] == expected_format
        items = len(posted_payloads([post]))
        assert post["status"] == 200, post["answer"]
        assert orjson.loads(post["answer"]) == {"accepted": items, "skipped": 0, "rejected": []}
    if fmt == "single":
        assert len(run.posts) == len(run.payloads)


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_event_per_payload_each_with_its_own_id(runs: dict[str, Run], fmt: str) -> None:
    run = runs[fmt]
    events = run.relay.events()  # everything stored by now, not only what was waited for
    assert len(events) == len(run.payloads)
    event_ids = [event["event_id"] for event in events]
    assert len(set(event_ids)) == len(event_ids)


def test_v1_sends_nothing_for_a_failed_call(runs: dict[str, Run]) -> None:
    """LiteLLM's v1 builder reads ``response_obj["usage"]``, which a failure does not have: the
    failed call reaches the fake but never the relay (LiteLLM logs a TypeError instead)."""
    run = runs["v1"]
    assert run.exchange("error").status == 400
    assert not [p for p in run.payloads if run.tag("error") in orjson.dumps(p).decode()]
    assert len(run.events) == len(SCENARIOS) - 1


# -- each event against the call the fake saw ---------------------------------------------------


@pytest.mark.parametrize(("fmt", "scenario"), CASES)
def test_event_matches_the_call(runs: dict[str, Run], fmt: str, scenario: str) -> None:
    run = runs[fmt]
    exchange, event = run.exchange(scenario), run.event(scenario)
    source = {"format": "litellm", "gateway": "litellm", "test": False, "tenant": TENANT}
    assert event["source"] == source  # the tenant of the token in the callback's headers
    assert event["operation"] == ("embeddings" if scenario == "embeddings" else "chat")
    assert event["request_model"] == exchange.request["model"]
    assert event.get("stream", False) is (scenario == "stream")
    assert event.get("user_id") == (END_USER if scenario in USER_SCENARIOS else None)
    assert event.get("session_id") == (session_id(run.nonce) if scenario == "chat" else None)
    assert event["input_messages"] == expected_input(exchange)
    if scenario == "error":
        assert_failed_call(event, exchange)
        return
    assert event["status"] == "ok" and "error" not in event
    assert event["response_model"] == reported_response_model(run, scenario, exchange)
    assert event["usage"] == expected_usage(exchange)
    assert event.get("output_messages") == expected_output(exchange)
    assert event.get("finish_reasons") == expected_finish_reasons(exchange)
    if "id" in exchange.response:
        assert event["attributes"]["gen_ai.response.id"] == exchange.response["id"]
    for parameter in ("temperature", "max_tokens"):
        if parameter in exchange.request:
            sent = exchange.request[parameter]
            assert event["attributes"][f"gen_ai.request.{parameter}"] == sent


def assert_failed_call(event: dict[str, Any], exchange: Exchange) -> None:
    assert exchange.status == 400
    assert event["status"] == "error"
    assert event["error"]["http_status"] == exchange.status
    assert event["error"]["type"] == "BadRequestError"
    assert exchange.response["error"]["message"] in event["error"]["message"]
    # LiteLLM reports 0 tokens and $0 for it: placeholders, since nothing was answered or billed.
    # With no usage the price table has nothing to price either (receiver.pricing).
    assert event["usage"] == {}
    assert event["cost"] == {"currency": "USD", "source": "unknown"}
    for absent in ("response_model", "output_messages", "finish_reasons"):
        assert absent not in event


def expected_input(exchange: Exchange) -> list[dict[str, Any]]:
    """The prompts as sent: chat messages, or each embedding input as a user text."""
    if "messages" in exchange.request:
        sent = exchange.request["messages"]
    else:
        sent = [{"role": "user", "content": text} for text in exchange.request["input"]]
    return [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in sent]


def expected_output(exchange: Exchange) -> list[dict[str, Any]] | None:
    if "choices" not in exchange.response:
        return None  # embeddings: vectors are not messages
    message = exchange.response["choices"][0]["message"]
    parts: list[dict[str, Any]] = []
    if message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call["function"]
        arguments = orjson.loads(function["arguments"])
        parts.append(
            {
                "type": "tool_call",
                "id": call["id"],
                "name": function["name"],
                "arguments": arguments,
            }
        )
    return [{"role": "assistant", "parts": parts}]


def expected_finish_reasons(exchange: Exchange) -> list[str] | None:
    choices = exchange.response.get("choices")
    return [choices[0]["finish_reason"]] if choices else None


def expected_usage(exchange: Exchange) -> dict[str, int]:
    usage = exchange.response["usage"]
    expected = {
        "input_tokens": usage["prompt_tokens"],
        # an embedding has no output; LiteLLM's Usage says 0 completion tokens for it
        "output_tokens": usage.get("completion_tokens", 0),
        "total_tokens": usage["total_tokens"],
    }
    if cached := (usage.get("prompt_tokens_details") or {}).get("cached_tokens"):
        expected["cache_read_input_tokens"] = cached
    if reasoning := (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"):
        expected["reasoning_output_tokens"] = reasoning
    return expected


def reported_response_model(run: Run, scenario: str, exchange: Exchange) -> str:
    """The provider's response model; LiteLLM 1.110's current payload names a streamed answer by
    the requested model (its stream assembly drops the chunks' model), so that is what it
    reported and what the relay can have. The v1 payload keeps the provider's in hidden_params."""
    answered = str(exchange.response["model"])
    if run.fmt in CURRENT_FORMATS and scenario == "stream":
        reported = run.payload(scenario)["response"]["model"]
        assert reported in (answered, exchange.request["model"])
        return str(reported)
    return answered


# -- each event against the payload LiteLLM posted ------------------------------------------------


@pytest.mark.parametrize(("fmt", "scenario"), [c for c in CASES if c.values[0] != "v1"])
def test_event_keeps_what_the_current_payload_reported(
    runs: dict[str, Run], fmt: str, scenario: str
) -> None:
    run = runs[fmt]
    payload, event = run.payload(scenario), run.event(scenario)
    assert event["attributes"]["litellm.call_id"] == payload["litellm_call_id"]
    assert (event["provider"], event["upstream"]) == (payload["custom_llm_provider"],) * 2
    assert event["duration_ms"] == pytest.approx(
        (payload["endTime"] - payload["startTime"]) * 1000, abs=0.01
    )
    if scenario == "stream":
        first_token_s = payload["completionStartTime"] - payload["startTime"]
        assert event["ttft_ms"] == pytest.approx(first_token_s * 1000, abs=0.01)
    else:
        assert "ttft_ms" not in event
    if scenario == "error":
        return  # no usage, cost unknown: test_event_matches_the_call
    assert event["cost"] == expected_cost(payload["response_cost"], payload["cost_breakdown"])
    assert event["attributes"]["litellm.call_type"] == payload["call_type"]


@pytest.mark.parametrize(("fmt", "scenario"), [c for c in CASES if c.values[0] == "v1"])
def test_event_keeps_what_the_v1_payload_reported(
    runs: dict[str, Run], fmt: str, scenario: str
) -> None:
    run = runs[fmt]
    payload, event = run.payload(scenario), run.event(scenario)
    # v1's metadata is the call's metadata repr, LiteLLM's hidden params inside; literals only here
    hidden = ast.literal_eval(payload["metadata"]).get("hidden_params", {})
    assert (event["provider"], event["upstream"]) == (hidden["custom_llm_provider"],) * 2
    if "litellm_call_id" in hidden:
        assert event["attributes"]["litellm.call_id"] == hidden["litellm_call_id"]
    else:  # a streamed call: v1 names it only by the provider's response id
        assert "litellm.call_id" not in event["attributes"]
    assert event["cost"] == expected_cost(float(payload["cost"]), None)
    assert event["attributes"]["litellm.payload_version"] == "v1"


def expected_cost(total: Any, breakdown: dict[str, Any] | None) -> dict[str, Any]:
    """The cost as LiteLLM computed it; unknown when it reported none."""
    if total is None:
        return {"currency": "USD", "source": "unknown"}
    expected: dict[str, Any] = {"total": total, "currency": "USD", "source": "gateway"}
    for part in ("input", "output"):
        if breakdown and breakdown.get(f"{part}_cost") is not None:
            expected[part] = breakdown[f"{part}_cost"]
    return expected
