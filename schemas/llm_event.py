"""The LLMEvent: one JSON object per LLM call, whatever gateway reported it.

Events are plain dicts typed with ``TypedDict`` rather than classes: the relay builds, stores and
serialises hundreds of thousands of them a second, and ``orjson`` writes a dict directly. Absent
keys mean "unknown"; normalizers never invent a value (a missing cost is ``cost.source="unknown"``,
never a 0; a cost the relay estimated from a price table says so, ``cost.source="table"``).
``llm_event.v1.schema.json`` beside this module is the contract every emitted event validates
against.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final, Literal, NotRequired, TypedDict

import orjson

SCHEMA_ID: Final = "llm-event/1"

SourceFormat = Literal["otlp-json", "otlp-proto", "otoroshi", "litellm", "native"]


class Source(TypedDict):
    format: SourceFormat
    gateway: str
    test: bool
    tenant: NotRequired[str | None]


class Usage(TypedDict, total=False):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    reasoning_output_tokens: int


CostSource = Literal["gateway", "table", "unknown"]


class Cost(TypedDict, total=False):
    total: float
    input: float
    output: float
    currency: str
    # "gateway": reported by the sender; "table": estimated by the relay from a price table
    # (``receiver.pricing``), named in ``table``; "unknown": neither, and no amount.
    source: CostSource
    table: str


class Error(TypedDict, total=False):
    type: str
    message: str
    http_status: int


class RateLimit(TypedDict, total=False):
    requests_limit: int
    requests_remaining: int
    tokens_limit: int
    tokens_remaining: int


class ApiKey(TypedDict, total=False):
    name: str
    hash: str


# A GenAI message part: {"type": "text", "content": ...}, {"type": "tool_call", "id", "name",
# "arguments"}, ... Part shapes vary by type, so they stay plain dicts.
MessagePart = dict[str, Any]


class Message(TypedDict, total=False):
    role: str
    parts: list[MessagePart]
    name: str
    finish_reason: str  # on an output message, when the sender gave it per message


class LLMEvent(TypedDict, total=False):
    schema: str
    event_id: str
    received_at: str
    source: Source
    trace_id: str
    span_id: str
    parent_span_id: str
    start_time: str
    end_time: str
    duration_ms: float
    ttft_ms: float
    operation: str
    provider: str
    upstream: str
    request_model: str
    response_model: str
    stream: bool
    usage: Usage
    cost: Cost
    status: Literal["ok", "error"]
    error: Error
    finish_reasons: list[str]
    rate_limit: RateLimit
    user_id: str
    session_id: str
    api_key: ApiKey
    input_messages: list[Message]
    output_messages: list[Message]
    attributes: dict[str, Any]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of LLMEvent v1, as shipped in this package."""
    text = resources.files("schemas").joinpath("llm_event.v1.schema.json").read_bytes()
    schema: dict[str, Any] = orjson.loads(text)
    return schema
