"""What of an LLMEvent is content (prompts, completions, tool arguments), and the policies for it.

One home for both places that apply a policy: ingest applies the loosest policy any sink needs
before the event is spooled, and each sink's dispatcher applies that sink's own, stricter one
(``RELAY_<SINK>_CONTENT``) to the copy it sends.

- ``full`` keeps content;
- ``hash`` replaces every text with its SHA-256 (``sha256:<hex>``), so that equal prompts can still
  be matched without being readable;
- ``redact`` drops content and keeps the metadata.

Each is stricter than the one before: a hashed event can be redacted, never made full again. The
policy an event was stored under is its ``relay.content_policy`` attribute (absent: ``full``).

A size limit cuts each text longer than it, with a marker saying how much was cut.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any, Final, Literal, cast, get_args

from schemas.llm_event import LLMEvent, Message

ContentPolicy = Literal["full", "redact", "hash"]
CONTENT_POLICIES: Final = get_args(ContentPolicy)
# From loosest to strictest.
_STRICTNESS: Final[dict[str, int]] = {"full": 0, "hash": 1, "redact": 2}
POLICY_ATTRIBUTE: Final = "relay.content_policy"
TRUNCATED_ATTRIBUTE: Final = "relay.content_truncated"
TRUNCATED: Final = "…[truncated by llm-broadcast-relay: {dropped} bytes over {setting}]"
# A text that ends with the marker was cut already (an event replayed from dead letters).
_CUT: Final = re.compile(r"…\[truncated by llm-broadcast-relay: \d+ bytes over \w+\]\Z")

# Attributes that carry prompt or completion text under names senders use.
CONTENT_KEYS: Final = frozenset(
    {
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "span.input",
        "span.output",
        "trace.input",
        "trace.output",
        "input.value",
        "output.value",
        "llm.prompts",
        "llm.choices",
        # OpenInference's request parameters may hold text (OpenAI's predicted output).
        "llm.invocation_parameters",
        "embedding.invocation_parameters",
    }
)
CONTENT_PREFIXES: Final = (
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "llm.input_messages.",
    "llm.output_messages.",
)
MESSAGE_SIDES: Final = ("input_messages", "output_messages")
# What a part says (as opposed to its type, id or tool name): a text, a tool's result, the
# arguments a model chose.
PART_CONTENT: Final = ("content", "response", "arguments")


def is_content_key(key: str) -> bool:
    return key in CONTENT_KEYS or key.startswith(CONTENT_PREFIXES)


def digest(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def loosest(policies: Iterable[ContentPolicy]) -> ContentPolicy:
    """The policy that keeps enough for every one of ``policies``: what the spool must hold."""
    return min(policies, key=_STRICTNESS.__getitem__, default="full")


def stored_policy(event: LLMEvent) -> ContentPolicy:
    attributes = event.get("attributes")
    policy = attributes.get(POLICY_ATTRIBUTE) if attributes else None
    return cast(ContentPolicy, policy) if policy in _STRICTNESS else "full"


def is_stricter(policy: ContentPolicy, than: ContentPolicy) -> bool:
    return _STRICTNESS[policy] > _STRICTNESS[than]


def apply_policy(event: LLMEvent, policy: ContentPolicy) -> None:
    """Apply ``policy`` to ``event`` in place; its messages are replaced, never changed within, and
    its ``attributes`` changed in place (a caller sharing them copies them first)."""
    if policy == "full":
        return
    attributes = event.get("attributes")
    if policy == "redact":
        for side in MESSAGE_SIDES:
            event.pop(side, None)  # type: ignore[misc]
        if attributes:
            for key in [k for k in attributes if is_content_key(k)]:
                del attributes[key]
    else:
        for side in MESSAGE_SIDES:
            if side in event:
                event[side] = _hash_messages(event[side])  # type: ignore[literal-required]
        if attributes:
            for key in [k for k in attributes if is_content_key(k)]:
                attributes[key] = digest(attributes[key])
    event.setdefault("attributes", {})[POLICY_ATTRIBUTE] = policy


def _hash_messages(messages: Iterable[Message]) -> list[Message]:
    hashed: list[Message] = []
    for message in messages:
        parts = [
            {k: digest(v) if k in PART_CONTENT else v for k, v in part.items()}
            for part in message.get("parts", [])
        ]
        hashed.append({**message, "parts": parts})
    return hashed


def truncate_content(event: LLMEvent, max_bytes: int, setting: str) -> int:
    """Cut every text of ``event`` longer than ``max_bytes`` (UTF-8), in place, and mark it.

    A part's content, a tool call's arguments or result, and a content attribute's text are each
    cut to at most ``max_bytes`` at a character boundary, followed by the marker. Messages are
    replaced rather than changed within; ``attributes`` are changed in place. Returns the number
    of texts cut; when there are some, ``relay.content_truncated`` says so.
    """
    cut = 0
    for side in MESSAGE_SIDES:
        messages = cast("list[Message] | None", event.get(side))
        if messages:
            shortened, cut_here = _truncate_messages(messages, max_bytes, setting)
            if cut_here:
                event[side] = shortened
                cut += cut_here
    attributes = event.get("attributes")
    if attributes:
        for key, value in attributes.items():
            if type(value) is str and is_content_key(key):
                short = _truncate_text(value, max_bytes, setting)
                if short is not value:
                    attributes[key] = short
                    cut += 1
    if cut:
        event.setdefault("attributes", {})[TRUNCATED_ATTRIBUTE] = True
    return cut


def _truncate_messages(
    messages: list[Message], max_bytes: int, setting: str
) -> tuple[list[Message], int]:
    cut = 0
    result: list[Message] = []
    for message in messages:
        parts = message.get("parts", [])
        new_parts = []
        for part in parts:
            changed = dict(part)
            for key in PART_CONTENT:
                value = part.get(key)
                if type(value) is str:
                    short = _truncate_text(value, max_bytes, setting)
                    if short is not value:
                        changed[key] = short
                        cut += 1
            new_parts.append(changed)
        result.append({**message, "parts": new_parts})
    return result, cut


def _truncate_text(text: str, max_bytes: int, setting: str) -> str:
    """``text`` itself when it fits or was cut already (the caller tests identity), else its cut
    copy."""
    if len(text) <= max_bytes // 4:  # no UTF-8 character is longer than 4 bytes: it fits
        return text
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    marked = _CUT.search(text)
    if marked and len(text[: marked.start()].encode()) <= max_bytes:
        return text  # cutting it again would only lose how much the first cut dropped
    kept = encoded[:max_bytes].decode(errors="ignore")  # drops a character cut in two
    return kept + TRUNCATED.format(dropped=len(encoded) - len(kept.encode()), setting=setting)
