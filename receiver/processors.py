"""What happens to every event between its normalizer and the spool, whatever its input format.

- the tenant of the ingest token is recorded;
- credentials left in attributes are removed (normalizers remove the ones they know by name);
- the prompt/completion policy ``RELAY_CONTENT`` is applied: ``full`` keeps content, ``redact``
  drops it and keeps the metadata, ``hash`` replaces every text with its SHA-256 so equal prompts
  can still be matched without being readable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Final, Literal, get_args

from foundation.secrets import redact_text, scrub
from schemas import LLMEvent, Message

ContentPolicy = Literal["full", "redact", "hash"]
CONTENT_POLICIES: Final = get_args(ContentPolicy)

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


def is_content_key(key: str) -> bool:
    return key in CONTENT_KEYS or key.startswith(CONTENT_PREFIXES)


def digest(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# What a part says (as opposed to its type, id or tool name): a text, a tool's result, the
# arguments a model chose.
_PART_CONTENT: Final = ("content", "response", "arguments")


def _hash_messages(messages: Iterable[Message]) -> list[Message]:
    hashed: list[Message] = []
    for message in messages:
        parts = [
            {k: digest(v) if k in _PART_CONTENT else v for k, v in part.items()}
            for part in message.get("parts", [])
        ]
        hashed.append({**message, "parts": parts})
    return hashed


def process(events: list[LLMEvent], tenant: str | None, content: ContentPolicy) -> None:
    """Apply tenant, secret removal and content policy to events, in place."""
    for event in events:
        event["source"]["tenant"] = tenant
        attributes = event.get("attributes")
        if attributes:
            scrub(attributes)
        error = event.get("error")
        if error and isinstance(error.get("message"), str):
            # Senders quote requests in their errors (an exception's text, a status message).
            error["message"] = redact_text(error["message"])
        if content == "full":
            continue
        if content == "redact":
            event.pop("input_messages", None)
            event.pop("output_messages", None)
            if attributes:
                for key in [k for k in attributes if is_content_key(k)]:
                    del attributes[key]
        else:
            for side in ("input_messages", "output_messages"):
                if side in event:
                    event[side] = _hash_messages(event[side])
            if attributes:
                for key in [k for k in attributes if is_content_key(k)]:
                    attributes[key] = digest(attributes[key])
        event.setdefault("attributes", {})["relay.content_policy"] = content
