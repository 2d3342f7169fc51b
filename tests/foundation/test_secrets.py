"""Recognising credentials by the names senders give them, at any depth, and inside text."""

from __future__ import annotations

import time

import pytest

from foundation.secrets import MASK, is_secret_key, redact_text, scrub

# Key names seen holding credentials, the secret word anywhere a reader would see it.
SECRET_KEYS = [
    "authorization",
    "Authorization",
    "api_key",
    "apiKey",
    "x-api-key",
    "authToken",
    "api_key_value",
    "aws_secret_access_key",
    "user_password_plain",
    "openai_key",
    "x-auth",
    "client_secret",
    "apikey.clientSecret",
    "access_token",
    "set-cookie",
    "private_key",
    "http.request.header.authorization",
]
# Names that look alike but hold no credential: counts, limits, names and hashes of keys, caches.
PLAIN_KEYS = [
    "gen_ai.usage.input_tokens",
    "gen_ai.request.max_tokens",
    "llm.token_count.prompt",
    "rate_limit.tokens_remaining",
    "openrouter.api_key_name",
    "api_key.hash",
    "cache_key",
    "idempotency_key",
    "author",
    "auth_type",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_credential_names_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_lookalike_names_are_not(key: str) -> None:
    assert not is_secret_key(key)


def test_scrub_reaches_nested_values_arrays_and_urls() -> None:
    attributes = {
        "llm.invocation_parameters": {"model": "m", "api_key": "abc", "extra": {"token": "t"}},
        "http.request.headers": ["Bearer abcdefghijkl", "text/plain"],
        "server.url": "https://user:hunter2@proxy.example/v1?api_key=abc123&x=1",
        "authToken": "plain",
        "gen_ai.request.max_tokens": 64,
    }
    assert scrub(attributes) == {
        "llm.invocation_parameters": {"model": "m", "extra": {}},
        "http.request.headers": ["text/plain"],
        "server.url": f"https://{MASK}@proxy.example/v1?api_key={MASK}&x=1",
        "gen_ai.request.max_tokens": 64,
    }


def test_redact_text_masks_credentials_in_messages() -> None:
    text = "401 for https://bot:s3cr3tpass@api.example/x?token=zzz9 with Bearer abcdefghij"
    redacted = redact_text(text)
    for secret in ("s3cr3tpass", "zzz9", "abcdefghij"):
        assert secret not in redacted
    assert redacted.startswith("401 for https://")


def test_redact_text_masks_credential_named_pairs_in_a_written_structure() -> None:
    """A structure a sender gave where a name was expected arrives as its repr or JSON text."""
    text = str({"model": "m", "nested": {"authToken": "tok-1", "x-auth": "tok-2"}})
    text += ' {"aws_secret_access_key": "tok-3", "cache_key": "k-1"}'
    redacted = redact_text(text)
    for secret in ("tok-1", "tok-2", "tok-3"):
        assert secret not in redacted
    assert "'model': 'm'" in redacted and '"cache_key": "k-1"' in redacted


@pytest.mark.parametrize("text", ["gpt-4o", "chat", "anthropic/claude-3.5-sonnet", ""])
def test_redact_text_leaves_plain_names_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("400, message: b'Cookie: session=tok-cookie\\x01'", "tok-cookie"),
        ("Authorization: Token tok-header", "tok-header"),
        ("login failed, password: tok-word", "tok-word"),
        ("Baſic dXNlcjpwYXNzd29yZA", "dXNlcjpwYXNzd29yZA"),
    ],
)
def test_redact_text_masks_named_values_as_logs_and_headers_write_them(
    text: str, secret: str
) -> None:
    assert secret not in redact_text(text)


@pytest.mark.parametrize(
    "text", ["Content-Type: application/json", "model: gpt-4o", "openai/gpt-4o:free"]
)
def test_redact_text_leaves_other_named_values_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "a." * 100_000 + ":",
        "'a':'" * 40_000,
        "token " * 30_000,
        "sk-" * 60_000,
        "a:" * 100_000,
        "x=" * 100_000,
        "Bearer " * 30_000,
    ],
)
def test_redact_text_takes_time_in_proportion_to_the_text(text: str) -> None:
    """200 KB of the worst text for each pattern: a pattern that backtracks over the whole text
    from every position (``a.a.a.…:`` took 10 s for 40 KB) would hold the relay for minutes."""
    started = time.process_time()
    redact_text(text)
    assert time.process_time() - started < 1.0
