"""Which OTLP span attribute names mean which LLMEvent field, and reading values by those names.

Senders mix convention generations: GenAI semconv old and new (``gen_ai.system`` /
``gen_ai.provider.name``, ``prompt_tokens`` / ``input_tokens``), OpenInference ``llm.*``,
OpenLLMetry, and OpenRouter's own (``gen_ai.usage.input_tokens.cached``, ``openrouter.*`` or
``trace.metadata.openrouter.*``, numbers as strings, arrays as JSON strings). Each alias table
below lists the names one field accepts, first match wins. ``Taker`` takes fields out of a span's
attributes by those tables; every attribute not used for a field stays in what is left, and an
alias whose value differs from the one chosen is kept too, so nothing is dropped silently.

The span mapping that uses these tables is in ``receiver.normalizers.otlp``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from foundation.memo import Memo, remember_short
from receiver.normalizers.common import as_float, as_int, as_str_list

PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.system", "llm.provider", "llm.vendor")
REQUEST_MODEL = ("gen_ai.request.model", "llm.request.model_name", "llm.request.model")
# OpenInference's model names are the ones the response named (the requested model is in its
# ``llm.invocation_parameters``): a request model only when no requested one is known.
OPENINFERENCE_MODEL = ("llm.model_name", "embedding.model_name")
RESPONSE_MODEL = ("gen_ai.response.model", "llm.response.model_name", "llm.response.model")
USAGE: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "input_tokens",
        (
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
            "llm.usage.prompt_tokens",
        ),
    ),
    (
        "output_tokens",
        (
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
            "llm.usage.completion_tokens",
        ),
    ),
    (
        "total_tokens",
        ("gen_ai.usage.total_tokens", "llm.token_count.total", "llm.usage.total_tokens"),
    ),
    (
        "cache_read_input_tokens",
        (
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "gen_ai.usage.input_tokens.cached",
            "llm.token_count.prompt_details.cache_read",
        ),
    ),
    (
        "cache_write_input_tokens",
        (
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
            "gen_ai.usage.input_tokens.cache_write",
            "llm.token_count.prompt_details.cache_write",
        ),
    ),
    (
        "reasoning_output_tokens",
        (
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.output_tokens.reasoning",
            "gen_ai.usage.reasoning_tokens",
            "llm.token_count.completion_details.reasoning",
        ),
    ),
)
COST: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "total",
        (
            "gen_ai.usage.total_cost",
            "gen_ai.usage.cost",
            "gen_ai.cost.total_cost",
            "llm.cost.total",
        ),
    ),
    ("input", ("gen_ai.usage.input_cost", "gen_ai.cost.input_cost", "llm.cost.prompt")),
    ("output", ("gen_ai.usage.output_cost", "gen_ai.cost.output_cost", "llm.cost.completion")),
)
FINISH_REASONS = (
    "gen_ai.response.finish_reasons",
    "gen_ai.response.finish_reason",
    "llm.finish_reason",
    "llm.response.finish_reason",
)
# Who served an OpenRouter call; the slug may name a deployment (``novita/fp8``). Read, not
# taken: both names stay in ``attributes`` (see ``otlp.upstream_of``).
UPSTREAM_SLUG = ("trace.metadata.openrouter.provider_slug", "openrouter.provider_slug")
UPSTREAM_NAME = ("trace.metadata.openrouter.provider_name", "openrouter.provider_name")
API_KEY_NAME = ("openrouter.api_key_name", "trace.metadata.openrouter.api_key_name")
SESSION = ("gen_ai.conversation.id", "session.id")
USER = ("user.id", "enduser.id", "llm.user", "gen_ai.user")
STREAM = ("gen_ai.request.stream", "llm.is_streaming", "gen_ai.is_streaming")
TTFT_SECONDS = ("gen_ai.response.time_to_first_chunk",)
TTFT_MS = ("trace.metadata.openrouter.first_token_ms", "openrouter.first_token_ms")
OPERATION = ("gen_ai.operation.name",)
REQUEST_TYPE = ("llm.request.type",)
ERROR_TYPE = ("error.type",)
HTTP_STATUS = ("http.response.status_code", "http.status_code")
# Every table ``Taker.take`` is given. No name is in two tables (checked at import below): so
# one look at a span's names tells which tables have something to take, see ``SpanNames``.
ALIAS_TABLES: Final[tuple[tuple[str, ...], ...]] = (
    PROVIDER,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    OPENINFERENCE_MODEL,
    *(keys for _, keys in USAGE),
    *(keys for _, keys in COST),
    FINISH_REASONS,
    API_KEY_NAME,
    SESSION,
    USER,
    STREAM,
    TTFT_SECONDS,
    TTFT_MS,
    OPERATION,
    REQUEST_TYPE,
    ERROR_TYPE,
    HTTP_STATUS,
)
# Request parameters OpenRouter sends as strings; semconv types them, and sinks need the numbers.
TYPED_PARAMETERS: Final[dict[str, Callable[[Any], Any]]] = {
    "gen_ai.request.temperature": as_float,
    "gen_ai.request.top_p": as_float,
    "gen_ai.request.frequency_penalty": as_float,
    "gen_ai.request.presence_penalty": as_float,
    "gen_ai.request.max_tokens": as_int,
    "gen_ai.request.seed": as_int,
    "gen_ai.request.top_k": as_int,
    "gen_ai.request.choice.count": as_int,
}
_INDEXED = re.compile(
    r"^(gen_ai\.(?:prompt|completion)|llm\.(?:input|output)_messages)\.(\d+)\.(.+)$"
)
_OPENROUTER_PREFIXES: Final = ("openrouter.", "trace.metadata.openrouter.")


def _table_by_alias(tables: Iterable[tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    by_alias: dict[str, tuple[str, ...]] = {}
    for table in tables:
        for alias in table:
            if alias in by_alias:
                raise ValueError(f"{alias!r} is in two alias tables")
            if alias in TYPED_PARAMETERS or _INDEXED.match(alias):
                raise ValueError(f"{alias!r} is an alias and a typed or indexed name")
            by_alias[alias] = table
    return by_alias


_TABLE_BY_ALIAS: Final = _table_by_alias(ALIAS_TABLES)
_ALIASES: Final = frozenset(_TABLE_BY_ALIAS)


@dataclass(frozen=True, slots=True)
class SpanNames:
    """What only depends on a span's attribute names, worked out once per list of names.

    Spans from one sender nearly always carry the same names in the same order, and finding
    aliases, prefixes and indexed messages among a few dozen names costs more than the rest of
    a take. As no alias is a typed or an indexed name, taking fields leaves those in place.
    """

    # A table's first alias (no name is in two tables) -> its aliases present, in table order.
    aliases: dict[str, tuple[str, ...]]
    openrouter: bool  # some name is ``openrouter.*`` or ``trace.metadata.openrouter.*``
    indexed: tuple[tuple[str, str, int, str], ...]  # (name, side, index, field), in name order
    typed: tuple[tuple[str, Callable[[Any], Any]], ...]  # TYPED_PARAMETERS present, table order

    @classmethod
    def of(cls, names: tuple[str, ...]) -> SpanNames:
        present = _ALIASES.intersection(names)
        aliases = {
            table[0]: tuple(alias for alias in table if alias in present)
            for table in {_TABLE_BY_ALIAS[alias] for alias in present}
        }
        indexed = []
        for name in names:
            match = _INDEXED.match(name)
            if match:
                prefix, index, field = match.groups()
                side = "input" if prefix in ("gen_ai.prompt", "llm.input_messages") else "output"
                indexed.append((name, side, int(index), field.removeprefix("message.")))
        return cls(
            aliases=aliases,
            openrouter=any(name.startswith(_OPENROUTER_PREFIXES) for name in names),
            indexed=tuple(indexed),
            typed=tuple((k, convert) for k, convert in TYPED_PARAMETERS.items() if k in names),
        )


# Names seen lately. Entries are bounded in count and size: a sender inventing names for every
# span only gets uncached lookups.
_NAMES_SEEN: Final[Memo[tuple[str, ...], SpanNames]] = Memo(256)
_NAMES_SEEN_MAX_NAMES: Final = 128  # names per entry
_NAMES_SEEN_MAX_CHARS: Final = 8192  # characters of all names per entry


def _names_of(attributes: dict[str, Any]) -> SpanNames:
    names = tuple(attributes)
    known = _NAMES_SEEN.get(names)
    if known is not None:
        return known
    known = SpanNames.of(names)
    if len(names) <= _NAMES_SEEN_MAX_NAMES and sum(map(len, names)) <= _NAMES_SEEN_MAX_CHARS:
        _NAMES_SEEN.put(names, known)
    return known


class Taker:
    """Takes fields out of a span's attributes; what is left becomes ``event.attributes``.

    A span has a few dozen attributes and the alias tables ~60 names, most of them absent from
    any one span: ``take`` only looks at the aliases ``SpanNames`` found in the span.
    """

    __slots__ = ("_aliases", "left", "names")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.left = dict(attributes)
        self.names = names = _names_of(attributes)
        self._aliases = names.aliases

    def take(self, keys: tuple[str, ...], convert: Callable[[Any], Any] = lambda v: v) -> Any:
        """The first usable value of the aliases ``keys``, one of ``ALIAS_TABLES``.

        Each table is taken at most once per span: as no name is in two tables, the aliases
        ``SpanNames`` found are then all still in ``left``.
        """
        present = self._aliases.get(keys[0])  # cheaper to hash than the whole table
        if present is None:
            return None
        left = self.left
        if len(present) == 1:  # the common case: one name, no alias to compare
            key = present[0]
            value = convert(left[key])
            if value is None or value == "":
                return None  # unusable: the raw value stays in attributes
            del left[key]
            return value
        # The conversions are pure and total: converting every alias, each once, changes nothing.
        taken = []
        chosen: Any = None
        for key in present:
            raw = left.pop(key)
            value = convert(raw)
            taken.append((key, raw, value))
            if chosen is None and value is not None and value != "":
                chosen = value
        for key, raw, value in taken:
            # An alias that says something else than the chosen value stays visible.
            if raw is not None and value != chosen and str(raw) != str(chosen):
                left[key] = raw
        return chosen


# -- conversions ``Taker.take`` is given -----------------------------------------------------


def as_text(value: Any) -> str | None:
    """A non-empty string as it is, anything else but ``None`` as its ``str()``."""
    return value if isinstance(value, str) and value else (None if value is None else str(value))


def as_token(value: Any) -> str | None:
    """A provider name as a semconv-style token: ``Google AI Studio`` -> ``google_ai_studio``."""
    text = as_text(value)
    return _tokenized(text) if text else None


@remember_short(maxsize=4096)  # a handful of provider names repeat
def _tokenized(text: str) -> str | None:
    return re.sub(r"[^a-z0-9.-]+", "_", text.strip().lower()).strip("_") or None


def as_finish_reasons(value: Any) -> list[str] | None:
    """``as_str_list``, each call with its own list: events must not share one."""
    reasons = _finish_reasons_once(value)
    return None if reasons is None else list(reasons)


@remember_short(maxsize=1024)
def _finish_reasons_once(value: Any) -> tuple[str, ...] | None:
    # Senders repeat a few spellings ('["stop"]', "stop") and decoding them is one of the
    # dearest takes (switched off, a protobuf span cost 8 % more: `python -m bench.memos`).
    reasons = as_str_list(value)
    return None if reasons is None else tuple(reasons)
