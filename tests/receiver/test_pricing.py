"""``receiver.pricing``: a cost from genai-prices' table for events the gateway did not price.

Every expected figure is genai-prices' own (``calc_price``, its public API), computed here for the
usage and the price list each rule should choose; the relay must agree with it to the digit.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import genai_prices
import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot

from receiver import pricing
from schemas import LLMEvent
from tests.helpers.relay import ROOT

START = "2026-11-29T19:25:09.927539866Z"
STARTED = datetime(2026, 11, 29, 19, 25, 9, 927539, tzinfo=UTC)
UNKNOWN = {"currency": "USD", "source": "unknown"}
TABLE = f"genai-prices {genai_prices.__version__}"


def event(usage: dict[str, int], gateway: str = "tests", **fields: Any) -> LLMEvent:
    """An LLM call as a normalizer leaves it when the gateway reported no cost."""
    call: dict[str, Any] = {
        "schema": "llm-event/1",
        "event_id": "e1",
        "source": {"format": "native", "gateway": gateway, "test": False},
        "trace_id": "1" * 32,
        "span_id": "2" * 16,
        "start_time": START,
        "end_time": START,
        "operation": "chat",
        "status": "ok",
        "usage": usage,
        "cost": dict(UNKNOWN),
    }
    priced: LLMEvent = call | fields  # type: ignore[assignment]
    return priced


def priced(call: LLMEvent) -> dict[str, Any]:
    pricing.price_events([call])
    return dict(call["cost"])


def expected(
    usage: Usage, model: str, provider_id: str | None, when: datetime = STARTED
) -> dict[str, Any]:
    price = calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=when)
    return {
        "total": float(price.total_price),
        "input": float(price.input_price),
        "output": float(price.output_price),
        "currency": "USD",
        "source": "table",
        "table": TABLE,
    }


@pytest.fixture(autouse=True)
def fresh_memo() -> Iterator[None]:
    pricing._lookups.clear()
    yield
    pricing._lookups.clear()


def test_an_event_without_cost_gets_the_tables_price_for_its_usage() -> None:
    usage = {
        "input_tokens": 1200,
        "output_tokens": 350,
        "total_tokens": 1550,
        "cache_read_input_tokens": 1024,
        "cache_write_input_tokens": 0,
        "reasoning_output_tokens": 0,
    }
    call = event(usage, provider="openai", request_model="gpt-4o", response_model="gpt-4o")
    counts = Usage(input_tokens=1200, output_tokens=350, cache_read_tokens=1024)
    assert priced(call) == expected(counts, "gpt-4o", "openai")
    assert call["cost"]["table"] == TABLE and call["cost"]["total"] > 0


# (provider, model, the event's count, genai-prices' name for it): each count changes the price.
COUNTS = [
    ("openai", "gpt-4o", "cache_read_input_tokens", "cache_read_tokens"),
    ("anthropic", "claude-sonnet-4-20250514", "cache_write_input_tokens", "cache_write_tokens"),
    ("perplexity", "sonar-deep-research", "reasoning_output_tokens", "output_reasoning_tokens"),
]


@pytest.mark.parametrize(("provider", "model", "field", "name"), COUNTS)
def test_every_usage_count_goes_where_genai_prices_expects_it(
    provider: str, model: str, field: str, name: str
) -> None:
    """Input includes cache reads and writes, output includes reasoning, as in the LLMEvent."""
    usage = {"input_tokens": 5000, "output_tokens": 800, field: 400}
    cost = priced(event(usage, provider=provider, request_model=model))
    counts = Usage(input_tokens=5000, output_tokens=800, **{name: 400})
    assert cost == expected(counts, model, provider)
    without = expected(Usage(input_tokens=5000, output_tokens=800), model, provider)
    assert cost["total"] != without["total"], f"{field} must change the price of {model}"


def test_the_calls_start_picks_the_price_in_force_then() -> None:
    """DeepSeek's off-peak discount: the same usage costs less at 02:00 UTC than at 18:00."""
    usage = {"input_tokens": 100_000, "output_tokens": 20_000}
    costs = []
    for start in ("2026-11-29T18:00:00Z", "2026-11-29T02:00:00Z"):
        call = event(usage, provider="deepseek", request_model="deepseek-chat", start_time=start)
        when = datetime.fromisoformat(start)
        counts = Usage(input_tokens=100_000, output_tokens=20_000)
        costs.append(priced(call))
        assert costs[-1] == expected(counts, "deepseek-chat", "deepseek", when)
    assert costs[0]["total"] != costs[1]["total"]


@pytest.mark.parametrize(
    "cost",
    [
        {
            "total": 0.00885,
            "input": 0.0036,
            "output": 0.00525,
            "currency": "USD",
            "source": "gateway",
        },
        {"total": 0.0, "currency": "USD", "source": "gateway"},  # a gateway's own 0 stays its own
        {"currency": "USD", "source": "gateway"},  # said to be the gateway's, whatever it lacks
        {"input": 0.002, "currency": "USD", "source": "unknown"},  # an amount, however labelled
    ],
    ids=["gateway", "gateway-zero", "gateway-without-amount", "amount"],
)
def test_a_cost_the_event_has_is_never_replaced(cost: dict[str, Any]) -> None:
    call = event({"input_tokens": 1200, "output_tokens": 350}, provider="openai")
    call["request_model"] = "gpt-4o"
    call["cost"] = dict(cost)  # type: ignore[typeddict-item]
    assert priced(call) == cost


@pytest.mark.parametrize(
    "usage",
    [{}, {"total_tokens": 30}, {"input_tokens": 0, "output_tokens": 0}],
    ids=["none", "total-only", "zeros"],
)
def test_without_usage_the_cost_stays_unknown_never_zero(usage: dict[str, int]) -> None:
    assert priced(event(usage, provider="openai", request_model="gpt-4o")) == UNKNOWN


@pytest.mark.parametrize(
    "fields",
    [
        {"provider": "openai", "request_model": "llm-broadcast-relay-no-such-model"},
        # A self-hosted server's model is never priced as another provider's.
        {"provider": "ollama", "request_model": "gpt-4o"},
        {"upstream": "localhost", "request_model": "gpt-4o"},
        {"request_model": "m" * (pricing.MAX_NAME_CHARS + 1)},
        {},
    ],
    ids=["unknown-model", "unknown-provider", "a-host", "too-long", "no-model"],
)
def test_what_the_table_lacks_stays_unknown(fields: dict[str, str]) -> None:
    assert priced(event({"input_tokens": 100, "output_tokens": 20}, **fields)) == UNKNOWN


@pytest.mark.parametrize("upstream", ["my-openai-compatible-vllm", "azure-openai-eastus"])
def test_a_litellm_deployment_named_by_its_host_stays_unknown(upstream: str) -> None:
    """Without a provider, LiteLLM's upstream is its api_base's host, a name its user chose:
    genai-prices' "contains openai" rule would price it as OpenAI's."""
    usage = {"input_tokens": 100, "output_tokens": 20}
    assert priced(event(usage, "litellm", upstream=upstream, request_model="gpt-4o")) == UNKNOWN
    named = event(usage, "litellm", provider="openai", upstream="openai", request_model="gpt-4o")
    assert priced(named)["source"] == "table"


def test_counts_the_table_refuses_stay_unknown() -> None:
    refused = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 500}
    with pytest.raises(ValueError, match="cannot exceed"):
        calc_price(Usage(input_tokens=100, output_tokens=20, cache_read_tokens=500), "gpt-4o")
    assert priced(event(refused, provider="openai", request_model="gpt-4o")) == UNKNOWN
    absurd = {"input_tokens": 10**400, "output_tokens": 1}  # a price no float can hold
    assert priced(event(absurd, provider="openai", request_model="gpt-4o")) == UNKNOWN


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("groq", "whisper-large-v3"),  # by the audio hour
        ("groq", "canopylabs/orpheus-v1-english"),  # by the character
        ("google", "gemma-3"),  # listed without a price
    ],
)
def test_a_model_the_table_does_not_price_by_tokens_stays_unknown(
    provider: str, model: str
) -> None:
    """genai-prices would say 0 for its tokens: a 0 the relay would have made up."""
    counts = Usage(input_tokens=5000, output_tokens=800)
    assert calc_price(counts, model, provider_id=provider).total_price == 0
    call = event({"input_tokens": 5000, "output_tokens": 800}, provider=provider)
    call["request_model"] = model
    assert priced(call) == UNKNOWN


@pytest.mark.parametrize(
    "tokens",
    [(5000, 800, 1000, 200, 100), (350_000, 64_000, 120_000, 30_000, 20_000), (7, 0, 0, 0, 0)],
)
def test_every_model_of_the_table_costs_what_genai_prices_says(
    tokens: tuple[int, int, int, int, int],
) -> None:
    """For speed the relay passes the units it never counts (searches, seconds, pages) as 0
    rather than letting genai-prices infer them (``pricing._NOT_TOKENS``), and prices a model
    whose prices are plain numbers from its per-token rates (``pricing._Rates``). For every model
    of the table, on its own provider's list, at small counts and past the tiers of long-context
    prices, the figure must be genai-prices' own to the digit."""
    input_tokens, output_tokens, cache_read, cache_write, reasoning = tokens
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_write_input_tokens": cache_write,
        "reasoning_output_tokens": reasoning,
    }
    counts = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_reasoning_tokens=reasoning,
    )
    compared = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            try:
                reference = expected(counts, model.id, provider.id)
            except (LookupError, ValueError):
                reference = UNKNOWN
            if reference.get("total") == 0:
                reference = UNKNOWN  # not priced by tokens: see the test above
            call = event(usage, provider=provider.id, request_model=model.id)
            assert priced(call) == reference, f"{provider.id} {model.id}"
            compared += reference != UNKNOWN
    assert compared > 1500


def test_the_answering_model_first_then_the_requested_one() -> None:
    usage = {"input_tokens": 2000, "output_tokens": 500}
    counts = Usage(input_tokens=2000, output_tokens=500)
    both = event(usage, provider="openai", request_model="gpt-4o-mini", response_model="gpt-4o")
    assert priced(both) == expected(counts, "gpt-4o", "openai")
    # A snapshot the table does not know yet: the requested model prices it.
    new = "gpt-4o-mini-2026-11-01"
    with pytest.raises(LookupError):
        calc_price(counts, new, provider_id="openai")
    dated = event(usage, provider="openai", request_model="gpt-4o-mini", response_model=new)
    assert priced(dated) == expected(counts, "gpt-4o-mini", "openai")


# (gateway, event fields, the price list genai-prices should use, calc_price's model and
# provider_id for the expected figure)
PRICE_LISTS = {
    "openrouter-own-list": (
        "openrouter",
        {"provider": "anthropic", "upstream": "amazon-bedrock"},
        "anthropic/claude-sonnet-4",
        "openrouter",
        ("anthropic/claude-sonnet-4", "openrouter"),
    ),
    "litellm-azure-deployment": (
        "litellm",
        {"provider": "azure.ai.openai", "upstream": "azure.ai.openai"},
        "azure/gpt-4o",
        "azure",
        ("azure/gpt-4o", "litellm"),  # genai-prices' own handling of LiteLLM's ids
    ),
    "litellm-bedrock-deployment": (
        "litellm",
        {"provider": "aws.bedrock", "upstream": "aws.bedrock"},
        "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
        "aws",
        ("bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0", "litellm"),
    ),
    "litellm-via-openrouter": (
        "litellm",
        {"provider": "openrouter", "upstream": "openrouter"},
        "openrouter/openai/gpt-4o",
        "openrouter",
        ("openai/gpt-4o", "openrouter"),
    ),
    "upstream-before-provider-azure": (
        "in-house",
        {"provider": "openai", "upstream": "azure.ai.openai"},
        "gpt-4o",
        "azure",
        ("gpt-4o", "azure"),
    ),
    "azure-ai-inference": (
        "otoroshi",
        {"provider": "azure.ai.inference", "upstream": "azure.ai.inference"},
        "gpt-4o",
        "azure",
        ("gpt-4o", "azure"),
    ),
    "semconv-x-ai": ("litellm", {"provider": "x_ai", "upstream": "x_ai"}, "grok-4", "x-ai", None),
    "semconv-gcp-gen-ai": (
        "unknown",
        {"provider": "gcp.gen_ai"},
        "gemini-2.5-flash",
        "google",
        None,
    ),
    "semconv-bedrock": (
        "unknown",
        {"provider": "aws.bedrock"},
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "aws",
        None,
    ),
    "no-provider-model-decides": ("unknown", {}, "claude-sonnet-4-20250514", "anthropic", None),
}


@pytest.mark.parametrize("case", sorted(PRICE_LISTS))
def test_each_gateway_and_provider_name_finds_its_price_list(case: str) -> None:
    gateway, fields, model, price_list, reference = PRICE_LISTS[case]
    usage = {"input_tokens": 3000, "output_tokens": 700}
    call = event(usage, gateway, request_model=model, **fields)
    found = pricing.find(call)
    assert found is not None and found[0].id == price_list
    ref_model, ref_provider = reference or (model, price_list)
    counts = Usage(input_tokens=3000, output_tokens=700)
    assert priced(call) == expected(counts, ref_model, ref_provider)


def test_lookups_are_remembered_misses_too_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[tuple[str | None, str]] = []
    find = pricing._find

    def counted(provider_id: str | None, model: str) -> Any:
        looked_up.append((provider_id, model))
        return find(provider_id, model)

    monkeypatch.setattr(pricing, "_find", counted)
    usage = {"input_tokens": 100, "output_tokens": 20}
    for model in ("gpt-4o", "gpt-4o", "no-such-model", "no-such-model"):
        pricing.price_events([event(usage, provider="openai", request_model=model)])
    assert looked_up == [("openai", "gpt-4o"), ("openai", "no-such-model")]
    long = "m" * (pricing.MAX_NAME_CHARS + 1)
    pricing.price_events([event(usage, provider="openai", request_model=long)] * 2)
    assert len(looked_up) == 2  # never scanned for, never remembered
    for n in range(pricing.LOOKUPS_REMEMBERED + 10):
        pricing.lookup("openai", f"model-{n}")
    assert len(pricing._lookups) <= pricing.LOOKUPS_REMEMBERED


def test_test_events_are_priced_too() -> None:
    call = event({"input_tokens": 100, "output_tokens": 20}, provider="openai")
    call["request_model"] = "gpt-4o"
    call["source"]["test"] = True
    assert priced(call)["source"] == "table"


def test_the_table_is_warm_after_import_and_never_updated() -> None:
    """A fresh interpreter: importing the module builds what the first price needs (so no
    request pays 30-45 ms for it), and the prices are the wheel's, not a download's."""
    script = (
        "import genai_prices.units as units, genai_prices.data_snapshot as snapshot\n"
        "assert units._bundled_registry is None\n"
        "import receiver.pricing\n"
        "assert units._bundled_registry is not None, 'not warm'\n"
        "assert not snapshot.get_snapshot().from_auto_update\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
