"""The bounded body reader, fed the ways real servers split and encode bodies."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from stackprobe.probes._http_body import BodyTooLarge, UndecodableBody, read_capped

BODY = b'{"status": "ok", "redis": false}' * 8


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def gzip(data: bytes) -> bytes:
    return zlib.compress(data, wbits=16 + zlib.MAX_WBITS)


def response(encoding: str, chunks: list[bytes]) -> httpx.Response:
    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return httpx.Response(200, headers={"Content-Encoding": encoding}, content=stream())


def one_byte_then_rest(data: bytes) -> list[bytes]:
    return [data[:1], data[1:]]


@pytest.mark.parametrize(
    ("encoding", "chunks"),
    [
        ("identity", [BODY[:5], BODY[5:]]),
        ("gzip", one_byte_then_rest(gzip(BODY))),
        ("gzip", [gzip(BODY[:10]), gzip(BODY[10:])]),  # two members
        ("gzip", [gzip(BODY) + b"\0" * 16]),  # NUL padding after the last member
        ("deflate", one_byte_then_rest(zlib.compress(BODY))),
        ("deflate", one_byte_then_rest(raw_deflate(BODY))),
        ("deflate", [bytes([b]) for b in raw_deflate(BODY)]),  # a trickle, byte by byte
    ],
)
async def test_bodies_decode_however_they_are_split(encoding: str, chunks: list[bytes]) -> None:
    assert await read_capped(response(encoding, chunks), cap=len(BODY)) == BODY


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate"])
async def test_one_byte_over_the_cap_is_too_large(encoding: str) -> None:
    encoded = {"identity": BODY, "gzip": gzip(BODY), "deflate": zlib.compress(BODY)}[encoding]

    with pytest.raises(BodyTooLarge) as caught:
        await read_capped(response(encoding, [encoded]), cap=len(BODY) - 1)

    assert caught.value.read == len(BODY)


@pytest.mark.parametrize(
    ("encoding", "chunks", "message"),
    [
        ("gzip", [gzip(BODY)[:-12]], "ends before its end-of-stream marker"),
        ("gzip", [b"not gzip at all"], "does not decode"),
        ("gzip", [gzip(BODY) + b"trailing junk"], "does not decode"),
        ("br", [b"\x0b\x02\x80"], "was not asked for"),
    ],
)
async def test_broken_encodings_are_undecodable(
    encoding: str, chunks: list[bytes], message: str
) -> None:
    with pytest.raises(UndecodableBody, match=message):
        await read_capped(response(encoding, chunks), cap=1 << 20)


@pytest.mark.parametrize(
    ("encoding", "first"), [("br", b"\x0b\x02\x80"), ("gzip", b"not gzip at all")]
)
async def test_an_undecodable_body_is_read_on_so_a_broken_transport_shows(
    encoding: str, first: bytes
) -> None:
    """Behind a coding that cannot be decoded, the body is still read to its end: the
    transport's error, not the decoding error it causes, is what the caller hears."""

    async def cut() -> AsyncIterator[bytes]:
        yield first
        raise httpx.RemoteProtocolError("peer closed connection")

    cut_short = httpx.Response(200, headers={"Content-Encoding": encoding}, content=cut())
    with pytest.raises(httpx.RemoteProtocolError):
        await read_capped(cut_short, cap=1 << 20)


async def test_an_undecodable_body_is_read_on_no_further_than_the_cap() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1024
            yield bytes(1024)

    endless_br = httpx.Response(200, headers={"Content-Encoding": "br"}, content=endless())
    with pytest.raises(UndecodableBody, match="was not asked for"):
        await read_capped(endless_br, cap=64 * 1024)

    assert pulled <= 64 * 1024 + 1024
