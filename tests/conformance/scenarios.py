"""The five calls every conformance sender makes, and what tags them.

Each sender (``otel_clients``, ``litellm_webhook``) runs these against the loopback fake LLM:
a chat with a system message, parameters and an end user; a streamed chat with usage; a call the
provider refuses (400); embeddings of two texts; a chat that gets a tool call. Every prompt carries
the run's nonce and the scenario's name, so a test can pair the call, the fake's record of it, what
the sender reported and the relay's event.
"""

from __future__ import annotations

import contextlib
from typing import Any

SCENARIOS = ("chat", "stream", "error", "embeddings", "tool")
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
END_USER = "conformance-user-7"


def prompt(nonce: str, scenario: str) -> str:
    return f"[{nonce}:{scenario}] What is the weather like in Paris?"


API_KEY = "sk-conformance-not-a-key"  # the fake LLM takes any key
CHAT_MODEL = "gpt-4o-mini"
FAIL_MODEL = "gpt-fail-model"  # the fake refuses any model named "fail"
EMBEDDING_MODEL = "text-embedding-3-small"
SECOND_EMBEDDING_TEXT = "A second text to embed."


def session_id(nonce: str) -> str:
    return f"session-{nonce}"


def run_openai(llm_url: str, nonce: str) -> None:
    """The scenarios through the OpenAI SDK (which an instrumentation may have patched)."""
    import openai

    client = openai.OpenAI(base_url=llm_url, api_key=API_KEY, max_retries=0)
    model = CHAT_MODEL
    messages: list[Any] = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": prompt(nonce, "chat")},
    ]
    client.chat.completions.create(
        model=model, messages=messages, temperature=0.2, max_tokens=64, user=END_USER
    )
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt(nonce, "stream")}],
        stream=True,
        stream_options={"include_usage": True},
        user=END_USER,
    )
    for _ in stream:
        pass
    with contextlib.suppress(openai.BadRequestError):
        client.chat.completions.create(
            model=FAIL_MODEL, messages=[{"role": "user", "content": prompt(nonce, "error")}]
        )
    client.embeddings.create(
        model=EMBEDDING_MODEL,
        input=[prompt(nonce, "embeddings"), SECOND_EMBEDDING_TEXT],
    )
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt(nonce, "tool")}],
        tools=[WEATHER_TOOL],
    )


async def run_litellm(litellm: Any, llm_url: str, nonce: str) -> None:
    """The scenarios through LiteLLM's async API, the way its proxy calls it."""
    common = {"api_base": llm_url, "api_key": API_KEY, "num_retries": 0}
    await litellm.acompletion(
        model="openai/" + CHAT_MODEL,
        messages=[
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": prompt(nonce, "chat")},
        ],
        temperature=0.2,
        max_tokens=64,
        user=END_USER,
        metadata={"session_id": session_id(nonce)},
        **common,
    )
    stream = await litellm.acompletion(
        model="openai/" + CHAT_MODEL,
        messages=[{"role": "user", "content": prompt(nonce, "stream")}],
        stream=True,
        stream_options={"include_usage": True},
        user=END_USER,
        **common,
    )
    async for _ in stream:
        pass
    with contextlib.suppress(litellm.exceptions.BadRequestError):
        await litellm.acompletion(
            model="openai/" + FAIL_MODEL,
            messages=[{"role": "user", "content": prompt(nonce, "error")}],
            user=END_USER,
            **common,
        )
    await litellm.aembedding(
        model="openai/" + EMBEDDING_MODEL,
        input=[prompt(nonce, "embeddings"), SECOND_EMBEDDING_TEXT],
        **common,
    )
    await litellm.acompletion(
        model="openai/" + CHAT_MODEL,
        messages=[{"role": "user", "content": prompt(nonce, "tool")}],
        tools=[WEATHER_TOOL],
        **common,
    )
