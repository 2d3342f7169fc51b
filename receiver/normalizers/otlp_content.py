"""Prompt and completion of an OTLP LLM span, from whichever message convention its sender used.

- GenAI semconv: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (parts) and
  ``gen_ai.system_instructions``; the older ``gen_ai.prompt`` / ``gen_ai.completion`` as a
  message list, an OpenAI-style request or response body, or plain text. OpenRouter sends a
  ``{"messages": [...]}`` prompt and a ``{"completion", "reasoning", "toolCalls"}`` completion.
- Indexed names: OpenLLMetry's ``gen_ai.prompt.0.role`` and OpenInference's
  ``llm.input_messages.0.message.content``, their tool calls
  (``...tool_calls.0.tool_call.function.name``, LiteLLM's ``gen_ai.completion.0.function_call.*``)
  each becoming one ``tool_call`` part.
- OpenInference embeddings: each ``embedding.embeddings.N.embedding.text`` is an input message.
  The vectors are dropped: numbers no one reads in a trace, often kilobytes per input, and the
  response body in ``output.value`` that repeats them goes with them.
- OpenInference ``input.value`` / ``output.value``: used for messages only as a last resort, as
  plain text or as an OpenAI-style body; any other body stays in ``attributes``.
"""

from __future__ import annotations

import re
from typing import Any, Final

from receiver.normalizers.common import chat_messages, completion_messages, maybe_json
from schemas import LLMEvent, Message

_EMBEDDING = re.compile(r"^embedding\.embeddings\.(\d+)\.embedding\.(text|vector)$")
# A tool call's field inside an indexed message: OpenInference ``tool_calls.0.tool_call.id``,
# OpenLLMetry ``tool_calls.0.name``, LiteLLM ``function_call.arguments`` (one call, no index).
_TOOL_FIELD = re.compile(
    r"^(?:tool_calls\.(\d+)\.(?:tool_call\.)?|function_call\.)(?:function\.)?(id|name|arguments)$"
)
_JSON_MIME: Final = "application/json"


def take_content(
    left: dict[str, Any], indexed: tuple[tuple[str, str, int, str], ...]
) -> dict[str, Any]:
    """The ``input_messages``, ``output_messages`` and ``finish_reasons`` found in ``left``,
    taken out of it (``indexed`` is ``SpanNames.indexed``)."""
    by_side = _indexed_messages(left, indexed)
    inputs = _system_instructions(maybe_json(left.pop("gen_ai.system_instructions", None)))

    raw_prompt = left.get("gen_ai.input.messages") or left.get("gen_ai.prompt")
    inputs.extend(_take_prompt(left, raw_prompt))
    inputs.extend(by_side.get("input", ()))
    inputs.extend(_embedding_inputs(left))

    raw_completion = left.get("gen_ai.output.messages") or left.get("gen_ai.completion")
    outputs, reasons = _take_completion(left, raw_completion)
    outputs = _merged(outputs, by_side.get("output", []))
    reasons = reasons or _reasons_of(outputs)

    if not inputs:
        inputs, _ = _from_value(left, "input")
    if not outputs:
        outputs, value_reasons = _from_value(left, "output")
        reasons = reasons or value_reasons
    # OpenRouter repeats the prompt and completion under Langfuse-style names: keep one copy.
    for key, same_as in (
        ("span.input", raw_prompt),
        ("span.output", raw_completion),
        ("trace.output", raw_completion),
    ):
        if same_as is not None and left.get(key) == same_as:
            del left[key]
    found: dict[str, Any] = {}
    if inputs:
        found["input_messages"] = inputs
    if outputs:
        found["output_messages"] = outputs
    if reasons:
        found["finish_reasons"] = reasons
    return found


def apply_content(event: LLMEvent, found: dict[str, Any]) -> None:
    """Set what ``take_content`` found; finish reasons from an attribute win over the body's."""
    if "input_messages" in found:
        event["input_messages"] = found["input_messages"]
    if "output_messages" in found:
        event["output_messages"] = found["output_messages"]
    if "finish_reasons" in found and "finish_reasons" not in event:
        event["finish_reasons"] = found["finish_reasons"]


def _system_instructions(instructions: Any) -> list[Message]:
    """``gen_ai.system_instructions`` (parts or plain text) as a system message, if any."""
    if isinstance(instructions, list):
        return [{"role": "system", "parts": instructions}]
    if isinstance(instructions, str) and instructions:
        return [{"role": "system", "parts": [{"type": "text", "content": instructions}]}]
    return []


def _take_prompt(left: dict[str, Any], raw_prompt: Any) -> list[Message]:
    """Input messages from ``gen_ai.input.messages`` or ``gen_ai.prompt`` (a message list, an
    OpenAI-style request body or plain text); a body of another shape stays in ``left``."""
    prompt = maybe_json(left.pop("gen_ai.input.messages", None) or left.pop("gen_ai.prompt", None))
    if isinstance(prompt, dict):
        if isinstance(prompt.get("messages"), list):
            return chat_messages(prompt["messages"])
        if isinstance(prompt.get("prompt"), str):
            return [{"role": "user", "parts": [{"type": "text", "content": prompt["prompt"]}]}]
        left["gen_ai.prompt"] = raw_prompt
        return []
    if isinstance(prompt, list):
        return chat_messages(prompt)
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
    return []


def _take_completion(left: dict[str, Any], raw_completion: Any) -> tuple[list[Message], list[str]]:
    """Output messages and finish reasons from ``gen_ai.output.messages`` or
    ``gen_ai.completion`` (a message list, an OpenAI-style response body, OpenRouter's
    ``{"completion", "reasoning", "toolCalls"}`` or plain text)."""
    completion = maybe_json(
        left.pop("gen_ai.output.messages", None) or left.pop("gen_ai.completion", None)
    )
    if isinstance(completion, dict):
        if "choices" not in completion and "completion" in completion:
            return _openrouter_completion(left, completion), []
        outputs, reasons = completion_messages(completion)
        if isinstance(completion.get("id"), str):
            left.setdefault("gen_ai.response.id", completion["id"])
        if not outputs and set(completion) - {"id"}:
            left["gen_ai.completion"] = raw_completion
        return outputs, reasons
    if isinstance(completion, list):
        return chat_messages(completion, default_role="assistant"), []
    if isinstance(completion, str) and completion:
        return [{"role": "assistant", "parts": [{"type": "text", "content": completion}]}], []
    return [], []


def _reasons_of(outputs: list[Message]) -> list[str]:
    """The finish reasons output messages carry themselves (semconv's ``finish_reason``)."""
    found = (message.get("finish_reason") for message in outputs)
    return [str(reason) for reason in found if reason]


def _openrouter_completion(left: dict[str, Any], completion: dict[str, Any]) -> list[Message]:
    """OpenRouter's completion wrapper: the answer, its reasoning and its tool calls as one
    assistant message. ``rawRequest`` (the request body echoed) stays in ``attributes``."""
    parts: list[Any] = []
    if isinstance(completion.get("reasoning"), str) and completion["reasoning"]:
        parts.append({"type": "reasoning", "content": completion["reasoning"]})
    if isinstance(completion.get("completion"), str) and completion["completion"]:
        parts.append({"type": "text", "content": completion["completion"]})
    calls = completion.get("toolCalls")
    if isinstance(calls, list):
        parts.extend(chat_messages([{"role": "assistant", "tool_calls": calls}])[0]["parts"])
    if completion.get("rawRequest") is not None:
        left["gen_ai.completion.raw_request"] = completion["rawRequest"]
    return [{"role": "assistant", "parts": parts}] if parts else []


def _merged(outputs: list[Message], indexed: list[Message]) -> list[Message]:
    """Structured output messages, with the indexed ones filling those left without parts
    (LiteLLM sends a tool call's message empty and the call under indexed names)."""
    if not indexed:
        return outputs
    if not outputs:
        return indexed
    merged: list[Message] = []
    for number, message in enumerate(outputs):
        if not message.get("parts") and number < len(indexed):
            merged.append({**message, "parts": indexed[number]["parts"]})
        else:
            merged.append(message)
    return merged


def _from_value(left: dict[str, Any], side: str) -> tuple[list[Message], list[str]]:
    """OpenInference ``input.value`` / ``output.value`` as messages: plain text, or an
    OpenAI-style request or response body. Anything else stays where it is."""
    value = left.get(f"{side}.value")
    if not isinstance(value, str) or not value:
        return [], []
    if left.get(f"{side}.mime_type") != _JSON_MIME:
        del left[f"{side}.value"]
        role = "user" if side == "input" else "assistant"
        return [{"role": role, "parts": [{"type": "text", "content": value}]}], []
    body = maybe_json(value)
    if not isinstance(body, dict):
        return [], []
    if side == "input" and isinstance(body.get("messages"), list):
        return chat_messages(body["messages"]), []
    if side == "output" and isinstance(body.get("choices"), list):
        return completion_messages(body)
    return [], []


def _embedding_inputs(left: dict[str, Any]) -> list[Message]:
    """Each embedded text as a user message, in index order; the vectors dropped."""
    texts: dict[int, Any] = {}
    dropped = False
    for key in [k for k in left if k.startswith("embedding.embeddings.")]:
        match = _EMBEDDING.match(key)
        if match is None:
            continue
        value = left.pop(key)
        if match.group(2) == "text":
            texts[int(match.group(1))] = value
        else:
            dropped = True
    if dropped and left.get("output.mime_type") == _JSON_MIME:
        left.pop("output.value", None)  # the response body: the same vectors again
    return [
        {"role": "user", "parts": [{"type": "text", "content": text}]}
        for _, text in sorted(texts.items())
    ]


def _indexed_messages(
    left: dict[str, Any], indexed: tuple[tuple[str, str, int, str], ...]
) -> dict[str, list[Message]]:
    """OpenLLMetry ``gen_ai.prompt.0.role`` and OpenInference ``llm.input_messages.0.message.*``.

    ``indexed`` lists those names, as ``SpanNames.indexed`` parsed them, in the order of ``left``.
    """
    if not indexed:
        return {}
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for key, side, index, field in indexed:
        found.setdefault((side, index), {})[field] = left.pop(key)
    messages: dict[str, list[Message]] = {}
    for (side, _), fields in sorted(found.items()):
        role = str(fields.pop("role", "assistant" if side == "output" else "user"))
        content = fields.pop("content", None)
        reason = fields.pop("finish_reason", None)  # OpenLLMetry's, per completion
        answered = fields.pop("tool_call_id", None)  # a tool's result, answering that call
        parts: list[Any] = [] if content is None else [{"type": "text", "content": content}]
        if answered is not None:
            parts = [{"type": "tool_call_response", "id": str(answered), "response": content}]
        parts.extend(_tool_calls(fields))
        parts.extend({"type": "other", "field": k, "content": v} for k, v in fields.items())
        message: Message = {"role": role, "parts": parts}
        if reason:
            message["finish_reason"] = str(reason)
        messages.setdefault(side, []).append(message)
    return messages


def _tool_calls(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls among an indexed message's fields (taken out of ``fields``), one
    ``tool_call`` part each, in index order."""
    calls: dict[int, dict[str, Any]] = {}
    for field in list(fields):
        match = _TOOL_FIELD.match(field)
        if match is None:
            continue
        number = int(match.group(1) or 0)
        calls.setdefault(number, {})[match.group(2)] = fields.pop(field)
    parts = []
    for _, call in sorted(calls.items()):
        part: dict[str, Any] = {"type": "tool_call"}
        if call.get("id") is not None:
            part["id"] = call["id"]
        part["name"] = call.get("name")
        part["arguments"] = maybe_json(call.get("arguments"))
        parts.append(part)
    return parts
