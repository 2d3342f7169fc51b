"""/v1/events: LLMEvents in our own schema are validated item by item and kept as given."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from receiver.normalizers import litellm, native, otoroshi
from receiver.normalizers.base import InputError, Normalized
from tests.receiver.normalizers.conftest import CTX, RECEIVED_AT, bodies, checked, ndjson, wire

(EVENTS,) = bodies("native-llm-events-example.json")
FULL, MINIMAL = EVENTS


def run(inputs: Any, *secrets: str) -> Normalized:
    """The normalizer on ``inputs`` as sent; every result is checked for schema and secrets."""
    return checked(native.normalize, inputs, secrets)


def test_fixture_events_are_kept_as_given() -> None:
    result = run(EVENTS)
    assert (len(result.events), result.rejected, result.skipped) == (2, [], {})
    assert result.events[0] == FULL  # complete: nothing added, nothing changed
    minimal = result.events[1]
    assert minimal["event_id"] == "native-minimal-1"
    assert minimal["schema"] == "llm-event/1"
    assert minimal["received_at"] == RECEIVED_AT
    assert minimal["source"] == {"format": "native", "gateway": "batch-job", "test": False}


def test_given_source_format_and_received_at_are_kept() -> None:
    relayed = dict(MINIMAL, received_at="2026-02-01T00:00:00Z")
    relayed["source"] = {"format": "otoroshi", "gateway": "otoroshi", "test": True}
    event = run([relayed]).events[0]
    assert event["source"] == {"format": "otoroshi", "gateway": "otoroshi", "test": True}
    assert event["received_at"] == "2026-02-01T00:00:00Z"


def test_events_from_the_other_normalizers_round_trip() -> None:
    produced = []
    for module, name in (
        (otoroshi, "otoroshi-llmusageaudit-example.json"),
        (litellm, "litellm-standard-logging-payload-example.json"),
    ):
        for body in bodies(name):
            produced += module.normalize(wire(body), CTX).events
    result = run(produced)
    assert result.rejected == []
    assert result.events == produced


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(
            {"usage": {"input_tokens": -1}},
            "$.usage.input_tokens: -1 is less than the minimum of 0",
            id="negative-count",
        ),
        pytest.param(
            {"trace_id": None},
            "$: 'trace_id' is a required property",
            id="missing-trace-id",
        ),
        pytest.param(
            {"trace_id": "4BF92F35"},
            "$.trace_id: '4BF92F35' does not match '^[0-9a-f]{32}$'",
            id="bad-trace-id",
        ),
        pytest.param(
            {"cost": {"total": 0.1, "currency": "EUR", "source": "gateway"}},
            "$.cost.currency: 'USD' was expected",
            id="currency",
        ),
        pytest.param(
            {"token_count": 3},
            "$: Additional properties are not allowed ('token_count' was unexpected)",
            id="unknown-field",
        ),
    ],
)
def test_invalid_event_is_rejected_with_the_field_named(
    change: dict[str, Any], reason: str
) -> None:
    bad = copy.deepcopy(MINIMAL)
    for key, value in change.items():
        if value is None:
            del bad[key]
        else:
            bad[key] = value
    result = run([FULL, bad, MINIMAL])
    assert [e["event_id"] for e in result.events] == [FULL["event_id"], "native-minimal-1"]
    assert [(r.item, r.reason) for r in result.rejected] == [("native-minimal-1", reason)]


def test_several_problems_are_counted_in_the_reason() -> None:
    bad = {"event_id": "e-1", "source": {"gateway": "g", "test": False}}
    (rejection,) = run([bad]).rejected
    assert rejection.item == "e-1"
    assert rejection.reason.startswith("$: '")
    assert rejection.reason.endswith("more problems)")


def test_non_object_items_are_rejected_by_position() -> None:
    result = run([MINIMAL, [1], "event"])
    assert len(result.events) == 1
    assert [(r.item, r.reason) for r in result.rejected] == [
        ("[1]", "expected an LLMEvent object"),
        ("[2]", "expected an LLMEvent object"),
    ]


def test_secrets_in_native_events_do_not_come_back() -> None:
    raw_key = "sk-or-v1-0123456789abcdef0123"
    misplaced = dict(MINIMAL, event_id="k-1", api_key={"name": "bot", "hash": raw_key})
    with_header = dict(MINIMAL, event_id="k-2")
    with_header["attributes"] = {"http.request.header.authorization": f"Bearer {raw_key}", "a": 1}
    result = run([misplaced, with_header], raw_key)
    assert [(r.item, r.reason) for r in result.rejected] == [
        ("k-1", "$.api_key.hash: <redacted> does not match '^sha256:[0-9a-f]{16,64}$'")
    ]
    assert result.events[0]["attributes"] == {"a": 1}


def test_single_object_and_ndjson() -> None:
    assert run(FULL).events == [FULL]
    expected = run(EVENTS).events
    assert native.normalize(ndjson(EVENTS), CTX).events == expected


@pytest.mark.parametrize("body", [b"", b"[{]", b"true", b'{"event_id": "x"}\n{'])
def test_malformed_body_raises_input_error(body: bytes) -> None:
    with pytest.raises(InputError):
        native.normalize(body, CTX)
