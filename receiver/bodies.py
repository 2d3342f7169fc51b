"""Reading a request body: a deadline, a size cap before and after decompression, gzip / deflate /
zstd.

aiohttp's own transparent decompression is turned off (see ``service.app``) so that a small
compressed body cannot expand past ``RELAY_MAX_BODY_BYTES`` in memory: every decoder here stops one
byte past the cap.
"""

from __future__ import annotations

import asyncio
import io
import zlib

import zstandard
from aiohttp import web

SUPPORTED_ENCODINGS = ("gzip", "deflate", "zstd", "identity")


class BodyError(Exception):
    """The body cannot be taken; ``status`` is the HTTP answer (400, 408, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def too_large(limit: int, stage: str) -> BodyError:
    return BodyError(413, f"request body exceeds {limit} bytes {stage} (RELAY_MAX_BODY_BYTES)")


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The body, decompressed; it must arrive within ``timeout`` seconds (a slow sender would
    otherwise hold its connection for ever) and fit ``limit`` bytes at every stage."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit, "as sent")
    try:
        if request.content.is_eof():
            # All of it has arrived (a small body comes with its head): no deadline to keep,
            # and no timer to set and cancel (about 10 µs, a few percent of a one-span request).
            body = await _read_capped(request, limit)
        else:
            async with asyncio.timeout(timeout):
                body = await _read_capped(request, limit)
    except TimeoutError:
        raise BodyError(
            408, f"request body not received within {timeout:g} s (RELAY_BODY_TIMEOUT)"
        ) from None
    encodings = [
        e.strip().lower()
        for e in request.headers.get("Content-Encoding", "").split(",")
        if e.strip()
    ]
    # Encodings are listed in the order they were applied: undo them last to first.
    for encoding in reversed(encodings):
        body = decompress(body, encoding, limit)
    return body


async def _read_capped(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise too_large(limit, "as sent")
        chunks.append(chunk)
    return b"".join(chunks)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding == "identity":
        return body
    if encoding == "gzip" or encoding == "x-gzip":
        return _zlib(body, 31, limit, "gzip")
    if encoding == "deflate":
        # RFC 9110 "deflate" is zlib-wrapped, but some clients send raw deflate.
        try:
            return _zlib(body, 15, limit, "deflate")
        except BodyError as error:
            if error.status == 413:
                raise
            return _zlib(body, -15, limit, "deflate")
    if encoding == "zstd":
        return _zstd(body, limit)
    raise BodyError(
        415,
        f"unsupported Content-Encoding {encoding!r}: use one of {', '.join(SUPPORTED_ENCODINGS)}",
    )


def _zlib(body: bytes, wbits: int, limit: int, name: str) -> bytes:
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            decoder = zlib.decompressobj(wbits)
            while data:
                chunk = decoder.decompress(data, limit + 1 - size)
                size += len(chunk)
                out.append(chunk)
                if size > limit:
                    raise too_large(limit, "after decompression")
                data = decoder.unconsumed_tail
                if decoder.eof:
                    break
            if not decoder.eof:
                raise BodyError(400, f"truncated {name} body")
            # gzip allows several members one after the other.
            data = decoder.unused_data if wbits == 31 else b""
    except zlib.error as error:
        raise BodyError(400, f"invalid {name} body: {error}") from None
    return b"".join(out)


def _zstd(body: bytes, limit: int) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(body), read_across_frames=True
        )
        data = reader.read(limit + 1)
    except zstandard.ZstdError as error:
        raise BodyError(400, f"invalid zstd body: {error}") from None
    if len(data) > limit:
        raise too_large(limit, "after decompression")
    if not _whole_zstd_frames(body):
        raise BodyError(400, "truncated zstd body")
    return data


def _whole_zstd_frames(body: bytes) -> bool:
    """Whether every frame of ``body`` ends: the stream reader above returns what it could decode
    of a cut frame without a word. Run only once the reader has shown that the whole body fits the
    cap, so decoding it again here is bounded by the cap too."""
    remaining = body
    while remaining:
        decoder = zstandard.ZstdDecompressor().decompressobj()
        try:
            decoder.decompress(remaining)
        except zstandard.ZstdError:
            return False
        if not decoder.eof:
            return False
        remaining = decoder.unused_data
    return True
