"""Cost from a maintained price table when the gateway reported none: ``cost.source = "table"``.

LiteLLM's failures, the OTLP instrumentations (OpenLLMetry, OpenInference, OpenAI v2) and some
Otoroshi setups report no cost. ``price_events`` prices such an event from its usage with PyPI
``genai-prices`` (the Pydantic team's table, read from the data in its wheel; its ``UpdatePrices``,
which downloads newer prices, is never started) and marks it ``source: "table"`` with ``table:
"genai-prices <version>"`` (the table has no version of its own: the package's is what changes
it). It never:

- replaces a cost the event has: any ``source`` but ``unknown``, or any amount, is kept as is;
- guesses. Without usage (no input or output tokens above 0), for a model or provider the
  table lacks (``LookupError``), for a model it lists without a token price (a free tier, or
  priced by the audio second or the character, which the LLMEvent does not count: its tokens
  would cost 0), or for counts it refuses (``ValueError``: cache reads above the input tokens that
  include them), the cost stays unknown: never a 0 made up.

Test events (``source.test``) are priced too: harmless (the metrics leave them out), and a
gateway's "Send Trace" then shows what its real calls will carry.

Usage as genai-prices counts it (its README, ``genai_prices.data_units``): ``input_tokens``
includes cache reads and writes, ``output_tokens`` includes reasoning; ``cache_read_tokens``,
``cache_write_tokens`` and ``output_reasoning_tokens`` are parts of them with rates of their own.
The LLMEvent counts the same way. The call's start is ``genai_request_timestamp``: some prices
depend on the date, or the time of day.

The model: ``response_model`` (the snapshot that answered), then ``request_model`` (the table
may not know a new snapshot's date suffix). The price list (genai-prices' ``provider_id``), by the
first rule that applies:

- gateway ``openrouter``: ``openrouter``. Its model ids are OpenRouter's (``openai/gpt-4o``) and
  it bills its own list, which the table has under that name.
- gateway ``litellm`` and a model id ``<prefix>/<model>``: LiteLLM names deployments after the
  provider that serves them (``azure/gpt-4o``, ``bedrock/anthropic.claude-...``,
  ``openrouter/openai/gpt-4o``), so the prefix's list and the rest of the id come first, as
  genai-prices does for ``provider_id="litellm"``.
- who served the call, ``upstream``, else ``provider`` (for LiteLLM only ``provider``: its
  upstream without one is the host of the deployment's ``api_base``, a name its user chose, such as
  ``my-openai-compatible-vllm``, that genai-prices' "contains openai" rule would price as OpenAI's
  models), matched as genai-prices matches provider names (its ids, and rules such as "contains
  bedrock"). ``SEMCONV_PRICES`` spells out four GenAI
  semconv names the normalizers write that it would miss or send to another list:
  ``azure.ai.openai`` (its "contains openai" rule would pick OpenAI's own prices) and
  ``azure.ai.inference`` are Azure's list, ``x_ai`` is ``x-ai``, ``gcp.gen_ai`` is ``google``. A
  provider the table lacks (``ollama``, ``hosted_vllm``, ``localhost``) leaves the cost unknown,
  rather than a self-hosted model priced as another provider's.
- no name at all: the provider whose model ids look like this one (``gpt-`` is OpenAI's); for
  LiteLLM, no price, since its calls always name their provider unless it is self-hosted.

Cost per event. Finding a model scans the table (0.05-1.5 ms, the most for a model it lacks),
so each answer, a miss too, is remembered per (price list, model) in a bounded ``Memo``. It is
found with genai-prices' own matching (``find_provider_by_id``, ``Provider.find_model``) rather
than through ``calc_price``, whose caches keep every model name ever asked, without bound. The
price (``ModelInfo.calc_price``) is computed for each event, since counts differ from call to
call: 0.2 ms, or 0.09 ms with the units the LLMEvent never counts passed as 0 (``_NOT_TOKENS``
says why that is the same price). The first price builds the table's indexes and the first scan
of a provider compiles its model patterns (40-50 ms in all): ``warm`` does both at import, before
any request. Names longer than ``MAX_NAME_CHARS`` are no model or provider id: unpriced, and
never remembered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, NamedTuple, cast

import genai_prices
from genai_prices import Usage
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot
from genai_prices.data_units import unit_data
from genai_prices.types import ModelInfo, ModelPrice, Provider

from foundation.memo import Memo
from foundation.times import unix_ns
from schemas import LLMEvent
from schemas.llm_event import Cost

TABLE: Final = f"genai-prices {genai_prices.__version__}"
# GenAI semconv provider names (``gen_ai.provider.name``) that genai-prices' provider matching
# would miss or send to another price list; see the module docstring.
SEMCONV_PRICES: Final = {
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "x_ai": "x-ai",
    "gcp.gen_ai": "google",
}
# Model and provider ids are short (the longest, Bedrock ARNs, about 120 characters).
MAX_NAME_CHARS: Final = 256
LOOKUPS_REMEMBERED: Final = 1024

# genai-prices' units that are not token counts (web searches, audio seconds, pages, ...), by
# price key. The LLMEvent counts tokens only, so each of these is 0 for it. genai-prices would
# infer an unreported unit it charges for, and given only token counts that inference always ends
# at 0 (no token count is a part of such a unit, nor two of them add up to one); it is 60 % of
# pricing a call. Passed as 0, the price is the same, in less than half the time
# (``tests/receiver/test_pricing.py`` prices every model of the table both ways).
_NOT_TOKENS: Final = {
    unit.get("price_key", usage_key): usage_key
    for usage_key, unit in unit_data.items()
    if unit["dimensions"].get("family") != "tokens" and usage_key != "requests"
}
_TOKEN_PRICES: Final = frozenset(
    unit.get("price_key", usage_key)
    for usage_key, unit in unit_data.items()
    if unit["dimensions"].get("family") == "tokens"
)

# A model the table has: its provider, the model, the non-token units it charges (at 0), and its
# per-token rates when its price is a plain sum of them.
Found = tuple[Provider, ModelInfo, Mapping[str, int], "_Rates | None"]
_NOT_FOUND: Final[tuple[()]] = ()
_lookups: Memo[tuple[str | None, str], Found | tuple[()]] = Memo(LOOKUPS_REMEMBERED)


def price_events(events: Iterable[LLMEvent]) -> None:
    """Give every event without a cost one from the table, when the table can price it."""
    for event in events:
        cost: Mapping[str, object] | None = event.get("cost")
        if (
            cost is not None
            and cost.get("source") == "unknown"
            and "total" not in cost
            and "input" not in cost
            and "output" not in cost
        ):
            priced = table_cost(event)
            if priced is not None:
                event["cost"] = priced


def table_cost(event: LLMEvent) -> Cost | None:
    """The table's cost of the event's usage, or None when it has no price for it."""
    usage = event.get("usage")
    if not usage or not (usage.get("input_tokens") or usage.get("output_tokens")):
        return None
    found = find(event)
    if found is None:
        return None
    counts = _Counts(
        usage.get("input_tokens") or 0,
        usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_write_input_tokens") or 0,
        usage.get("output_tokens") or 0,
        usage.get("reasoning_output_tokens") or 0,
    )
    rates = found[3]
    calculated: tuple[Decimal, Decimal, Decimal] | None
    if rates is not None and counts.consistent:
        calculated = rates.price(counts)
    else:
        calculated = _calc(found, usage, _started(event))
        if calculated is None:
            return None
    total, input_cost, output_cost = map(float, calculated)
    if not (math.isfinite(total) and math.isfinite(input_cost) and math.isfinite(output_cost)):
        return None
    return {
        "total": total,
        "input": input_cost,
        "output": output_cost,
        "currency": "USD",
        "source": "table",
        "table": TABLE,
    }


def _calc(
    found: Found, usage: Mapping[str, Any], started: datetime | None
) -> tuple[Decimal, Decimal, Decimal] | None:
    """genai-prices' own calculation: (total, input, output) in USD, None for counts it
    refuses."""
    provider, model, zeros, _ = found
    counts = Usage(  # None: not reported, which genai-prices takes as 0 or refuses
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        cache_read_tokens=usage.get("cache_read_input_tokens"),
        cache_write_tokens=usage.get("cache_write_input_tokens"),
        output_reasoning_tokens=usage.get("reasoning_output_tokens"),
        **zeros,
    )
    try:
        price = model.calc_price(counts, provider, genai_request_timestamp=started)
        return price.total_price, price.input_price, price.output_price
    except (ValueError, ArithmeticError):
        return None  # counts the table refuses (cache reads above the input tokens, ...)


class _Counts(NamedTuple):
    """An event's token counts as genai-prices reads them (cache and reasoning are parts)."""

    input: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int

    @property
    def consistent(self) -> bool:
        """Whether the parts fit in their wholes; genai-prices refuses counts that do not, and
        those go to its own calculation to be refused there."""
        return (
            min(self) >= 0
            and self.cache_read + self.cache_write <= self.input
            and self.reasoning <= self.output
        )


# Usages that each add one kind of token to none, a million of them (prices are per million).
_MILLION: Final = 1_000_000
_BASIS: Final = (
    _Counts(0, 0, 0, 0, 0),
    _Counts(_MILLION, 0, 0, 0, 0),
    _Counts(_MILLION, _MILLION, 0, 0, 0),
    _Counts(_MILLION, 0, _MILLION, 0, 0),
    _Counts(0, 0, 0, _MILLION, 0),
    _Counts(0, 0, 0, _MILLION, _MILLION),
)
# A usage with every kind of token, to check the rates against genai-prices' own figure.
_PROBE: Final = _Counts(123_457, 23_456, 3_456, 34_567, 4_567)


class _Rates(NamedTuple):
    """What each kind of token costs a model whose prices are plain numbers (no tiers, no
        prices that change with the date), read from genai-prices itself: for total, input and
    output, the price of a call, then USD per uncached input, cache read, cache write, plain
    output and reasoning token.

    Such a price is linear in the counts, so these reproduce ``calc_price``, in Decimal as it
    computes, in 7 µs where it takes 100-150 (a third of the relay's CPU per event for OTLP
    senders, which report no cost: ``make bench``, scenario otlp-proto). ``rates_for`` checks
    them against ``calc_price`` before they are used, and ``tests/receiver/test_pricing.py``
    against every model of the table.
    """

    total: tuple[Decimal, ...]
    input: tuple[Decimal, ...]
    output: tuple[Decimal, ...]

    def price(self, counts: _Counts) -> tuple[Decimal, Decimal, Decimal]:
        parts = (
            1,
            counts.input - counts.cache_read - counts.cache_write,
            counts.cache_read,
            counts.cache_write,
            counts.output - counts.reasoning,
            counts.reasoning,
        )
        return (
            sum(r * n for r, n in zip(self.total, parts, strict=True)),  # type: ignore[return-value]
            sum(r * n for r, n in zip(self.input, parts, strict=True)),
            sum(r * n for r, n in zip(self.output, parts, strict=True)),
        )


def rates_for(provider: Provider, model: ModelInfo, zeros: Mapping[str, int]) -> _Rates | None:
    """The model's rates, read from genai-prices on ``_BASIS`` and checked on ``_PROBE``; None
    when its price is not a plain sum of them (tiers, prices that change with the date). Price
    variants (a service tier, batch) only apply to a call that names one, which no event does."""
    if not isinstance(model.prices, ModelPrice):
        return None
    if any(not isinstance(value, Decimal | None) for value in vars(model.prices).values()):
        return None  # tiered: the rate changes past a threshold
    found: Found = (provider, model, zeros, None)
    prices = [_calc(found, _usage(counts), None) for counts in _BASIS]
    if any(price is None for price in prices):
        return None
    base, *each = cast(list[tuple[Decimal, Decimal, Decimal]], prices)
    rates = _Rates(
        *((base[k], *((price[k] - base[k]) / _MILLION for price in each)) for k in range(3))
    )
    expected = _calc(found, _usage(_PROBE), None)
    if expected is None:
        return None
    return rates if rates.price(_PROBE) == expected else None


def _usage(counts: _Counts) -> dict[str, int]:
    return {
        "input_tokens": counts.input,
        "cache_read_input_tokens": counts.cache_read,
        "cache_write_input_tokens": counts.cache_write,
        "output_tokens": counts.output,
        "reasoning_output_tokens": counts.reasoning,
    }


def find(event: LLMEvent) -> Found | None:
    """The table's provider and model for the event: the answering model, then the requested
    one, each on the price lists the module docstring's rules choose."""
    gateway = event["source"]["gateway"]
    # LiteLLM's upstream, without a provider, is its api_base's host: a name its user chose
    # (``my-openai-compatible-vllm``), which must not pick a price list.
    served = (
        event.get("provider")
        if gateway == "litellm"
        else event.get("upstream") or event.get("provider")
    )
    for model in (event.get("response_model"), event.get("request_model")):
        if model:
            for provider_id, ref in _price_lists(gateway, served, model):
                found = lookup(provider_id, ref)
                if found is not None:
                    return found
    return None


def _price_lists(gateway: str, served: str | None, model: str) -> list[tuple[str | None, str]]:
    """Where to look ``model`` up, in order: (genai-prices provider id or None, model id)."""
    if gateway == "openrouter":
        return [("openrouter", model)]
    lists: list[tuple[str | None, str]] = []
    if gateway == "litellm" and "/" in model:
        prefix, rest = model.split("/", 1)
        lists.append((prefix, rest))  # a prefix the table has no provider for finds nothing
    if served:
        lists.append((SEMCONV_PRICES.get(served, served), model))
    elif gateway != "litellm":
        lists.append((None, model))
    return lists


def lookup(provider_id: str | None, model: str) -> Found | None:
    """genai-prices' provider and model for these names (None: the table has none), remembered."""
    if len(model) > MAX_NAME_CHARS or len(provider_id or "") > MAX_NAME_CHARS:
        return None
    key = (provider_id, model)
    found = _lookups.get(key)
    if found is None:
        found = _lookups.put(key, _find(provider_id, model))
    return found or None


def _find(provider_id: str | None, model: str) -> Found | tuple[()]:
    """``DataSnapshot.find_provider_model`` without its caches (they keep every name asked)."""
    providers = get_snapshot().providers
    ref = model.lower()
    provider: Provider | None
    if provider_id is None:
        provider = next(
            (p for p in providers if p.model_match is not None and p.model_match.is_match(ref)),
            None,
        )
    else:
        provider = find_provider_by_id(providers, provider_id)
    if provider is None:
        return _NOT_FOUND
    info = provider.find_model(ref, all_providers=providers)
    if info is None:
        return _NOT_FOUND
    charged = _charged(info)
    if not charged & _TOKEN_PRICES:
        return _NOT_FOUND  # priced by the second, character or page: tokens would say 0
    zeros = {_NOT_TOKENS[key]: 0 for key in sorted(charged) if key in _NOT_TOKENS}
    return provider, info, zeros, rates_for(provider, info, zeros)


def _charged(model: ModelInfo) -> set[str]:
    """The price keys (``input_mtok``, ``web_searches_kcount``, ...) any of its prices has."""
    prices = [model.prices] if isinstance(model.prices, ModelPrice) else []
    if isinstance(model.prices, list):
        prices += [conditional.prices for conditional in model.prices]
    prices += [variant.prices for variant in model.price_variants or ()]
    return {key for price in prices for key, value in vars(price).items() if value is not None}


def _started(event: LLMEvent) -> datetime | None:
    """The call's start (some prices depend on the date); None: genai-prices takes now."""
    nanos = unix_ns(event.get("start_time"))
    return datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None


def warm() -> None:
    """Build what the first price and the first scan of each provider's models build (40-50 ms,
    once), so that no request waits for it."""
    providers = get_snapshot().providers
    for provider in providers:  # compiles the model patterns of every provider
        provider.find_model("llm-broadcast-relay-warm-up", all_providers=providers)
    found = lookup("openai", "gpt-4o")
    if found is not None:
        provider, model, _, _ = found
        model.calc_price(Usage(input_tokens=2, cache_read_tokens=1, output_tokens=2), provider)


warm()
