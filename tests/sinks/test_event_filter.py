"""``RELAY_<SINK>_FILTER``: compile errors, unknown variables, failures per event, and that handing
an expression only the fields it names never changes its verdict."""

from __future__ import annotations

from typing import Any

import cel
import pytest

from schemas import LLMEvent
from sinks.event_filter import EventFilter, FilterError, FilterSyntaxError
from tests.helpers.payloads import stored_event


def event(**fields: Any) -> LLMEvent:
    return {**stored_event(1), **fields}  # type: ignore[typeddict-item]


def test_a_syntax_error_is_one_line_with_where() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        EventFilter.compile("event.status ==")
    message = str(caught.value)
    assert "\n" not in message and "1:16" in message and "Syntax error" in message


@pytest.mark.parametrize(
    ("source", "unknown"),
    [('evnt.status == "error"', "evnt"), ("status == 1 || cost > 2", "cost, status")],
)
def test_a_variable_other_than_event_is_refused_by_name(source: str, unknown: str) -> None:
    with pytest.raises(FilterSyntaxError, match=f"unknown variable {unknown}:"):
        EventFilter.compile(source)


@pytest.mark.parametrize(
    ("source", "unknown"),
    [
        ('event.stauts == "error"', "event.stauts"),
        ("has(event.cost.totl) || event.usage.input > 1", "event.cost.totl, event.usage.input"),
    ],
)
def test_a_field_the_schema_cannot_have_is_refused_by_name(source: str, unknown: str) -> None:
    with pytest.raises(FilterSyntaxError, match=f"no field {unknown} in the LLMEvent schema"):
        EventFilter.compile(source)


@pytest.mark.parametrize(
    "source",
    [
        'event.attributes.app_env == "prod"',  # free-form
        "event.status.size() > 2",  # a method
        'event.operation == "event.stauts"',  # a string
        'event.input_messages.exists(m, m.role == "user")',
        'event.status == "ok" // or event.stauts, in a comment',
    ],
)
def test_what_the_schema_does_not_fix_is_not_checked(source: str) -> None:
    EventFilter.compile(source)


def test_a_field_this_event_lacks_does_not_match() -> None:
    costly = EventFilter.compile("event.cost.total > 0.05")
    assert not costly.matches(event(cost={"currency": "USD", "source": "unknown"}))
    assert not EventFilter.compile('event.error.type != "x"').matches(event())


def test_a_macro_variable_is_not_unknown() -> None:
    chosen = EventFilter.compile('event.attributes.exists(k, k.startsWith("app."))')
    assert chosen.matches(event(attributes={"app.env": "prod"}))
    assert not chosen.matches(event(attributes={"other": 1}))


def test_verdicts() -> None:
    errors = EventFilter.compile('event.status == "error"')
    assert errors.matches(event(status="error")) and not errors.matches(event(status="ok"))
    # A JSON 0 is an integer, a threshold a double: CEL compares them.
    costly = EventFilter.compile("event.cost.total > 0.01")
    assert not costly.matches(event(cost={"total": 0, "currency": "USD", "source": "gateway"}))
    assert costly.matches(event(cost={"total": 1, "currency": "USD", "source": "gateway"}))
    tested = EventFilter.compile("has(event.error) && event.error.http_status >= 500")
    assert not tested.matches(event())
    assert tested.matches(event(error={"http_status": 503}))


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("event.status > 3", "No such overload"),
        ('event.status + "!"', "gave str, not a boolean"),
        ("1 / (size(event.attributes) - 2) == 1", "division by zero"),
    ],
)
def test_a_failure_on_an_event_is_a_filter_error_that_quotes_no_value(
    source: str, says: str
) -> None:
    secret = "sk-or-v1-" + "a" * 40
    failing = event(status=secret, attributes={"a": 1, "b": 2})
    with pytest.raises(FilterError) as caught:
        EventFilter.compile(source).matches(failing)
    assert says in str(caught.value) and secret not in str(caught.value)


EVENTS = [
    event(),
    event(status="error", error={"type": "RateLimit", "http_status": 429}),
    event(
        cost={"total": 0.2, "currency": "USD", "source": "gateway"},
        usage={"input_tokens": 10},
        request_model="gpt-4o",
        session_id="s1",
        input_messages=[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
    ),
]
SOURCES = [
    'event.status == "error"',
    "size(event) > 13",
    'event.exists(k, k == "session_id")',
    'event["request_model"] == "gpt-4o"',
    'has(event.cost.total) && event["cost"]["total"] > 0.1',
    'event.input_messages.exists(m, m.parts.exists(p, p.content == "hi"))',
    'event.source.gateway == "tests" && !event.source.test',
    "event.all(k, k != 'error')",
    "event.size() > 13",
    'event["sta" + "tus"] == "ok"',
    'event.status == "ok" // event.cost.total > 1',
]


@pytest.mark.parametrize("source", SOURCES)
def test_only_the_named_fields_are_handed_over_and_the_verdict_is_the_same(source: str) -> None:
    """The filter hands CEL only the fields an expression names (conversion is the cost); the
    verdict must be the one CEL gives on the whole event."""
    program = cel.compile(source)
    chosen = EventFilter.compile(source)
    for each in EVENTS:
        try:
            expected: Any = program.execute({"event": each})
        except KeyError:
            expected = False  # a field this event lacks
        except Exception:
            expected = FilterError
        try:
            got: Any = chosen.matches(each)
        except FilterError:
            got = FilterError
        assert got == expected, (source, each)
