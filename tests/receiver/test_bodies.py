"""``read_body`` behind a real aiohttp server: each Content-Encoding decodes, the size cap holds
before and after decompression, and what cannot be read is answered 400, 413 or 415."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
import zstandard
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from pytest_aiohttp import AiohttpClient

from receiver.bodies import SUPPORTED_ENCODINGS, BodyError, read_body

LIMIT = 4096
# Half random (does not compress), half repeated (does): several zlib blocks and zstd blocks.
PAYLOAD = random.Random(7).randbytes(1500) + b"llm span " * 200


def raw_deflate(data: bytes) -> bytes:
    encoder = zlib.compressobj(wbits=-15)
    return encoder.compress(data) + encoder.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # RFC 9110: zlib-wrapped
    "zstd": zstd,
    "identity": lambda data: data,
}


async def echo(request: web.Request) -> web.Response:
    """The body as ``read_body`` gives it, or the ``BodyError`` as the HTTP answer it names."""
    try:
        body = await read_body(request, LIMIT, 5.0)
    except BodyError as error:
        return web.Response(status=error.status, text=str(error))
    return web.Response(body=body)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> TestClient[web.Request, web.Application]:
    # As the relay runs it: aiohttp must not decompress before the capped decoders do.
    app = web.Application(handler_args={"auto_decompress": False})
    app.router.add_post("/", echo)
    return await aiohttp_client(app)


async def post(
    client: TestClient[web.Request, web.Application], body: bytes, encoding: str | None
) -> tuple[int, bytes]:
    headers = {"Content-Encoding": encoding} if encoding is not None else {}
    async with client.post("/", data=body, headers=headers) as answer:
        return answer.status, await answer.read()


def as_sent_message(limit: int) -> bytes:
    return f"request body exceeds {limit} bytes as sent (RELAY_MAX_BODY_BYTES)".encode()


def expanded_message(limit: int) -> bytes:
    return f"request body exceeds {limit} bytes after decompression (RELAY_MAX_BODY_BYTES)".encode()


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
async def test_each_encoding_decodes_to_the_original(
    client: TestClient[web.Request, web.Application], encoding: str
) -> None:
    sent = ENCODERS[encoding](PAYLOAD)
    if encoding != "identity":
        assert sent != PAYLOAD
    assert await post(client, sent, encoding) == (200, PAYLOAD)


async def test_no_content_encoding_is_the_body_as_sent(
    client: TestClient[web.Request, web.Application],
) -> None:
    assert await post(client, PAYLOAD, None) == (200, PAYLOAD)


async def test_encoding_names_are_case_and_space_insensitive(
    client: TestClient[web.Request, web.Application],
) -> None:
    assert await post(client, gzip.compress(PAYLOAD), " GZip ") == (200, PAYLOAD)


async def test_raw_deflate_is_accepted_too(
    client: TestClient[web.Request, web.Application],
) -> None:
    assert await post(client, raw_deflate(PAYLOAD), "deflate") == (200, PAYLOAD)


async def test_stacked_encodings_are_undone_last_to_first(
    client: TestClient[web.Request, web.Application],
) -> None:
    sent = zstd(gzip.compress(PAYLOAD))  # gzip applied first, then zstd
    assert await post(client, sent, "gzip, zstd") == (200, PAYLOAD)


async def test_gzip_members_and_zstd_frames_one_after_the_other_are_all_read(
    client: TestClient[web.Request, web.Application],
) -> None:
    first, second = PAYLOAD[:1000], PAYLOAD[1000:]
    assert await post(client, gzip.compress(first) + gzip.compress(second), "gzip") == (
        200,
        PAYLOAD,
    )
    assert await post(client, zstd(first) + zstd(second), "zstd") == (200, PAYLOAD)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
async def test_a_body_of_exactly_the_cap_is_taken(
    client: TestClient[web.Request, web.Application], encoding: str
) -> None:
    exact = (PAYLOAD * 2)[:LIMIT]
    assert await post(client, ENCODERS[encoding](exact), encoding) == (200, exact)


async def test_a_plain_body_over_the_cap_is_413(
    client: TestClient[web.Request, web.Application],
) -> None:
    assert await post(client, b"x" * (LIMIT + 1), None) == (413, as_sent_message(LIMIT))


async def chunked(client: TestClient[web.Request, web.Application], size: int) -> tuple[int, bytes]:
    """``size`` bytes sent in chunks, without a Content-Length: only the count read can stop it."""

    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            chunk = PAYLOAD[: min(1000, size - sent)]
            sent += len(chunk)
            yield chunk

    async with client.post("/", data=chunks()) as answer:
        assert "Content-Length" not in answer.request_info.headers
        return answer.status, await answer.read()


async def test_a_chunked_body_over_the_cap_is_413(
    client: TestClient[web.Request, web.Application],
) -> None:
    assert await chunked(client, LIMIT + 1) == (413, as_sent_message(LIMIT))


async def test_a_chunked_body_of_exactly_the_cap_is_taken(
    client: TestClient[web.Request, web.Application],
) -> None:
    status, body = await chunked(client, LIMIT)
    assert (status, len(body)) == (200, LIMIT)


async def test_a_declared_content_length_over_the_cap_is_413_before_reading() -> None:
    # No body follows the header: only the declared length can refuse the request.
    request = make_mocked_request("POST", "/", headers={"Content-Length": str(LIMIT + 1)})
    with pytest.raises(BodyError) as refused:
        await read_body(request, LIMIT, 5.0)
    assert (refused.value.status, str(refused.value)) == (413, as_sent_message(LIMIT).decode())
    request = make_mocked_request("POST", "/", headers={"Content-Length": str(LIMIT)})
    assert await read_body(request, LIMIT, 5.0) == b""


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
async def test_a_small_body_that_expands_over_the_cap_is_413_without_expanding_it(
    client: TestClient[web.Request, web.Application], encoding: str
) -> None:
    expanded = LIMIT * 900
    bomb = ENCODERS[encoding](bytes(expanded))
    assert len(bomb) < LIMIT  # accepted as sent: only the decoder's cap can stop it
    tracemalloc.start()
    try:
        answer = await post(client, bomb, encoding)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer == (413, expanded_message(LIMIT))
    # The decoders stop one byte past the cap: the expanded body is never held in memory.
    assert peak < expanded // 4


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
async def test_one_byte_over_the_cap_after_decompression_is_413(
    client: TestClient[web.Request, web.Application], encoding: str
) -> None:
    over = (PAYLOAD * 2)[: LIMIT + 1]
    assert await post(client, ENCODERS[encoding](over), encoding) == (413, expanded_message(LIMIT))


@pytest.mark.parametrize(
    ("encoding", "unknown"), [("br", "br"), ("compress", "compress"), ("gzip, br", "br")]
)
async def test_an_unknown_content_encoding_is_415(
    client: TestClient[web.Request, web.Application], encoding: str, unknown: str
) -> None:
    supported = ", ".join(SUPPORTED_ENCODINGS)
    expected = f"unsupported Content-Encoding {unknown!r}: use one of {supported}"
    assert await post(client, PAYLOAD, encoding) == (415, expected.encode())


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
async def test_a_body_that_is_not_in_its_encoding_is_400(
    client: TestClient[web.Request, web.Application], encoding: str
) -> None:
    status, message = await post(client, b"plain text, not compressed", encoding)
    assert status == 400
    assert message.startswith(f"invalid {encoding} body: ".encode())


async def test_a_corrupt_gzip_body_is_400(
    client: TestClient[web.Request, web.Application],
) -> None:
    sent = bytearray(gzip.compress(PAYLOAD))
    sent[-8] ^= 0xFF  # the trailer's CRC32 no longer matches the content
    status, message = await post(client, bytes(sent), "gzip")
    assert status == 400
    assert message.startswith(b"invalid gzip body: ")


async def test_a_truncated_gzip_body_is_400(
    client: TestClient[web.Request, web.Application],
) -> None:
    sent = gzip.compress(PAYLOAD)[:-8]  # without the CRC32 and size trailer
    assert await post(client, sent, "gzip") == (400, b"truncated gzip body")


async def test_a_truncated_zstd_body_is_400(
    client: TestClient[web.Request, web.Application],
) -> None:
    sent = zstd(PAYLOAD)
    assert await post(client, sent[: len(sent) // 2], "zstd") == (400, b"truncated zstd body")
    two_frames = zstd(PAYLOAD) + zstd(PAYLOAD)
    assert await post(client, two_frames[:-3], "zstd") == (400, b"truncated zstd body")
