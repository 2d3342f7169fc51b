"""End to end with a real OTLP store: an OpenRouter trace posted to the relay is read back from
Arize Phoenix, through the generic sink started from the phoenix preset and through the phoenix
sink itself. Phoenix starts once per session (``phoenix`` fixture); each case has its project.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import fixture_json
from tests.helpers.phoenix import Phoenix
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until


def openrouter_trace() -> tuple[bytes, dict[str, Any]]:
    """OpenRouter Broadcast's production-style request (research fixture), with fresh ids and
    times so that each run is its own trace; and the span as posted."""
    (request,) = [
        r["request"]
        for r in fixture_json("openrouter-otlp-example.json")["requests"]
        if r["_label"].startswith("production-chat-request")
    ]
    body = copy.deepcopy(request["body"])
    (span,) = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    now = time.time_ns()
    span.update(
        traceId=os.urandom(16).hex(),
        spanId=os.urandom(8).hex(),
        startTimeUnixNano=str(now - 2_350_000_000),
        endTimeUnixNano=str(now),
    )
    return orjson.dumps(body), span


def posted_value(span: dict[str, Any], key: str) -> Any:
    (value,) = [a["value"] for a in span["attributes"] if a["key"] == key]
    (kind,) = value
    return int(value[kind]) if kind == "intValue" else value[kind]


@pytest.mark.parametrize("sink", ["otlp", "phoenix"])
def test_an_openrouter_trace_is_read_back_from_phoenix(
    phoenix: Phoenix, tmp_path: Path, sink: str
) -> None:
    project = f"relay-{sink}"
    prefix = f"RELAY_{sink.upper()}_"
    env = {
        "RELAY_SINKS": sink,
        prefix + "ENDPOINT": phoenix.traces_url,
        prefix + "PROJECT": project,  # sent as x-project-name
        prefix + "FLUSH_INTERVAL": "0.05",
    }
    if sink == "otlp":
        env["RELAY_OTLP_PRESET"] = "phoenix"
    body, posted = openrouter_trace()
    with RelayProcess(tmp_path / "data", env) as relay:
        answer = relay.request("POST", "/v1/traces", body, {"Content-Type": "application/json"})
        assert answer.status == 200, answer.data
        # Phoenix answers before it stores (a background task): poll until the span is there.
        (stored,) = wait_until(
            lambda: phoenix.spans(project), timeout=30, message=f"the span in {project}"
        )
        assert relay.get_json("/v1/status")["sinks"][sink]["sent"] == 1

    assert stored["context"] == {"trace_id": posted["traceId"], "span_id": posted["spanId"]}
    attributes = stored["attributes"]
    for key in ("gen_ai.request.model", "gen_ai.response.model"):
        assert attributes[key] == posted_value(posted, key) == "anthropic/claude-sonnet-4"
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        assert attributes[key] == posted_value(posted, key)
    # Phoenix understood the GenAI span as an LLM call, with its model and token counts.
    assert stored["span_kind"] == "LLM"
    assert attributes["llm.model_name"] == "anthropic/claude-sonnet-4"
    assert attributes["llm.token_count.prompt"] == 1200
    assert attributes["llm.token_count.completion"] == 350
    assert attributes["gen_ai.route.gateway"] == "openrouter"
