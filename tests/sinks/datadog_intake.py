"""A strict stand-in for Datadog's public LLM Observability span intake (the documented v1 API).

No offline peer takes ``POST /api/intake/llm-obs/v1/trace/spans`` (ddapm-test-agent answers 404
there), so tests run a ``ScriptedServer`` with ``check=intake_check(key)``. The check enforces the
documented schema (docs.datadoghq.com/llm_observability/instrumentation/api/) and answers as the
intake would: 403 ``{"errors": ["Forbidden"]}`` for a missing or wrong ``DD-API-KEY``, 413 over
the size limit, 400 listing every violation. A conforming body gets ``None``, so the server's
scripted answers (fault modes) or its default, ``ACCEPTED`` (202, empty body), apply.

Where the docs only say "string", the check also holds the sink to what ddtrace sends: decimal
span ids, a 32-hex or decimal trace id. It refuses spans the intake would silently drop (older
than 24 hours, over 1 MB), so that a test fails instead of data vanishing. Other paths (such as
``/api/v1/validate``) pass through unchecked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from tests.helpers.scripted_server import Answer, Received, ScriptedServer, json_error

SPANS_PATH: Final = "/api/intake/llm-obs/v1/trace/spans"
ACCEPTED: Final = Answer(status=202)
PAYLOAD_LIMIT: Final = 5 * 1024 * 1024  # ddtrace: "actual server limit is 5.1 MB"
SPAN_LIMIT: Final = 1_000_000  # bigger spans were silently not ingested (dd-trace-py #13260)
MAX_AGE_NS: Final = 24 * 3600 * 1_000_000_000
KINDS: Final = frozenset({"agent", "workflow", "llm", "tool", "task", "embedding", "retrieval"})
TOKEN_METRICS: Final = frozenset({"input_tokens", "output_tokens", "total_tokens"})
SPAN_REQUIRED: Final = frozenset(
    {"name", "span_id", "trace_id", "parent_id", "start_ns", "duration", "meta"}
)
SPAN_OPTIONAL: Final = frozenset({"status", "apm_trace_id", "metrics", "session_id", "tags"})
META_KEYS: Final = frozenset({"kind", "error", "input", "output", "metadata"})
IO_KEYS: Final = frozenset({"value", "messages", "documents", "prompt"})
_DECIMAL = re.compile(r"^[0-9]{1,20}$")
_HEX128 = re.compile(r"^[0-9a-f]{32}$")


def intake_check(
    api_key: str,
    *,
    max_bytes: int = PAYLOAD_LIMIT,
    now_ns: Callable[[], int] = time.time_ns,
) -> Callable[[Received], Answer | None]:
    """A ``ScriptedServer`` check that answers as the public span intake would."""

    def check(request: Received) -> Answer | None:
        if request.path.split("?")[0] != SPANS_PATH:
            return None
        if request.method != "POST":
            return json_error(405, "Method Not Allowed")
        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("dd-api-key") != api_key:
            return json_error(403, "Forbidden")
        if len(request.body) > max_bytes:
            return json_error(413, "Request entity too large")
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return json_error(400, "Content-Type must be application/json")
        try:
            payload = orjson.loads(request.body)
        except orjson.JSONDecodeError as error:
            return json_error(400, f"invalid JSON: {error}")
        problems = violations(payload, now_ns())
        if problems:
            return Answer(status=400, body=orjson.dumps({"errors": problems[:20]}))
        return None

    return check


def install(server: ScriptedServer, api_key: str, **options: Any) -> ScriptedServer:
    """Make ``server`` the intake: strict check, 202 unless a test scripts another answer."""
    server.default = ACCEPTED
    server.check = intake_check(api_key, **options)
    return server


def violations(payload: Any, now_ns: int) -> list[str]:
    """Every way ``payload`` breaks the documented v1 span schema (empty when it conforms)."""
    problems: list[str] = []
    if not _keys(payload, "body", {"data"}, {"data"}, problems):
        return problems
    data = payload["data"]
    if not _keys(data, "data", {"type", "attributes"}, {"type", "attributes"}, problems):
        return problems
    if data["type"] != "span":
        problems.append(f"data.type: expected 'span', got {data['type']!r}")
    attributes = data["attributes"]
    allowed = {"ml_app", "spans", "tags", "session_id"}
    if not _keys(attributes, "attributes", {"ml_app", "spans"}, allowed, problems):
        return problems
    problems += [f"attributes.ml_app: {p}" for p in _ml_app_problems(attributes["ml_app"])]
    _tags(attributes.get("tags", []), "attributes.tags", problems)
    if not isinstance(attributes.get("session_id", ""), str):
        problems.append("attributes.session_id: expected a string")
    spans = attributes["spans"]
    if not isinstance(spans, list) or not spans:
        problems.append("attributes.spans: expected a non-empty array")
        return problems
    for index, span in enumerate(spans):
        _span(span, f"spans[{index}]", now_ns, problems)
    return problems


def _span(span: Any, at: str, now_ns: int, problems: list[str]) -> None:
    if not _keys(span, at, SPAN_REQUIRED, SPAN_REQUIRED | SPAN_OPTIONAL, problems):
        return
    if len(orjson.dumps(span)) > SPAN_LIMIT:
        problems.append(f"{at}: over {SPAN_LIMIT} bytes")
    for key in ("name", "span_id", "trace_id", "parent_id", "apm_trace_id", "session_id"):
        if key in span and not isinstance(span[key], str):
            problems.append(f"{at}.{key}: expected a string, got {type(span[key]).__name__}")
    if isinstance(span["span_id"], str) and not _is_u64(span["span_id"]):
        problems.append(f"{at}.span_id: expected a decimal 64-bit id, got {span['span_id']!r}")
    parent = span["parent_id"]
    if isinstance(parent, str) and parent != "undefined" and not _is_u64(parent):
        problems.append(f"{at}.parent_id: expected 'undefined' or a decimal id, got {parent!r}")
    trace = span["trace_id"]
    if isinstance(trace, str) and not (_HEX128.match(trace) or _DECIMAL.match(trace)):
        problems.append(f"{at}.trace_id: expected 32 hex digits or a decimal id, got {trace!r}")
    start, duration = span["start_ns"], span["duration"]
    if not _is_int(start) or start < 0:
        problems.append(f"{at}.start_ns: expected a uint64 of nanoseconds, got {start!r}")
    elif start < 10**18:
        problems.append(f"{at}.start_ns: {start} is not in nanoseconds (before 2001)")
    elif now_ns - start > MAX_AGE_NS:
        problems.append(f"{at}.start_ns: older than 24 hours")
    if not _is_number(duration) or duration < 0:
        problems.append(f"{at}.duration: expected a non-negative number of ns, got {duration!r}")
    elif 0 < duration < 1000:
        problems.append(f"{at}.duration: {duration} is not in nanoseconds (under 1 µs)")
    if span.get("status", "ok") not in ("ok", "error"):
        problems.append(f"{at}.status: expected 'ok' or 'error', got {span['status']!r}")
    _tags(span.get("tags", []), f"{at}.tags", problems)
    kind = _meta(span["meta"], f"{at}.meta", problems)
    metrics = span.get("metrics", {})
    if not isinstance(metrics, dict):
        problems.append(f"{at}.metrics: expected an object")
        return
    for name, value in metrics.items():
        if not _is_number(value):
            problems.append(f"{at}.metrics.{name}: expected a number, got {value!r}")
        if name in TOKEN_METRICS and kind not in ("llm", "embedding", None):
            problems.append(f"{at}.metrics.{name}: only valid on llm spans, not {kind!r}")


def _meta(meta: Any, at: str, problems: list[str]) -> str | None:
    if not _keys(meta, at, {"kind"}, META_KEYS, problems):
        return None
    kind = meta["kind"]
    if kind not in KINDS:
        problems.append(f"{at}.kind: expected one of {sorted(KINDS)}, got {kind!r}")
    error = meta.get("error", {})
    if _keys(error, f"{at}.error", set(), {"message", "stack", "type"}, problems):
        problems += [
            f"{at}.error.{k}: expected a string" for k, v in error.items() if not isinstance(v, str)
        ]
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict):
        problems.append(f"{at}.metadata: expected an object")
    else:
        for key, value in metadata.items():
            if not isinstance(value, str | bool | int | float):
                problems.append(
                    f"{at}.metadata.{key}: expected a number, boolean or string, got {value!r}"
                )
    for side in ("input", "output"):
        if side in meta:
            _io(meta[side], f"{at}.{side}", side, kind, problems)
    return kind if isinstance(kind, str) else None


def _io(io: Any, at: str, side: str, kind: Any, problems: list[str]) -> None:
    if not _keys(io, at, set(), IO_KEYS, problems):
        return
    if not isinstance(io.get("value", ""), str):
        problems.append(f"{at}.value: expected a string")
    if "messages" in io:
        if kind != "llm":
            problems.append(f"{at}.messages: only valid on llm spans, not {kind!r}")
        messages = io["messages"]
        if not isinstance(messages, list):
            problems.append(f"{at}.messages: expected an array")
            return
        for index, message in enumerate(messages):
            where = f"{at}.messages[{index}]"
            if _keys(message, where, {"content"}, {"content", "role"}, problems):
                problems += [
                    f"{where}.{k}: expected a string"
                    for k, v in message.items()
                    if not isinstance(v, str)
                ]
    if "documents" in io and not (side == "output" and kind == "retrieval"):
        problems.append(f"{at}.documents: only valid on retrieval output")
    if "prompt" in io and not (side == "input" and kind == "llm"):
        problems.append(f"{at}.prompt: only valid on llm input")


def _keys(
    value: Any,
    at: str,
    required: set[str] | frozenset[str],
    allowed: set[str] | frozenset[str],
    problems: list[str],
) -> bool:
    if not isinstance(value, dict):
        problems.append(f"{at}: expected an object, got {type(value).__name__}")
        return False
    missing = sorted(set(required) - value.keys())
    unknown = sorted(value.keys() - set(allowed))
    problems += [f"{at}: missing required field {key!r}" for key in missing]
    problems += [f"{at}: unknown field {key!r}" for key in unknown]
    return not missing


def _tags(tags: Any, at: str, problems: list[str]) -> None:
    if not isinstance(tags, list):
        problems.append(f"{at}: expected an array of 'key:value' strings")
        return
    for tag in tags:
        if not isinstance(tag, str) or ":" not in tag or tag.startswith(":"):
            problems.append(f"{at}: {tag!r} is not a 'key:value' string")
        elif len(tag) > 200:
            problems.append(f"{at}: {tag[:40]!r}... is over 200 characters")


def _ml_app_problems(name: Any) -> list[str]:
    if not isinstance(name, str) or not name:
        return ["expected a non-empty string"]
    problems = []
    if len(name) > 193:
        problems.append("over 193 characters")
    if any(not (c in "_-:./" or (c.isalnum() and c == c.lower())) for c in name):
        problems.append(f"{name!r}: only lower-case alphanumerics and _ - : . / are allowed")
    if "__" in name or name.endswith("_"):
        problems.append(f"{name!r}: no contiguous or trailing underscores")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_u64(text: str) -> bool:
    return bool(_DECIMAL.match(text)) and int(text) < 2**64
