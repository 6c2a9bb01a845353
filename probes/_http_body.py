"""Reading a response body without letting it cost more memory than the cap.

httpx's own decoders inflate a whole network chunk at once, so 64 KiB of gzip bomb becomes
tens of MiB before any cap can look at it. Reading raw bytes and inflating them with zlib's
`max_length` keeps the peak at the cap plus one network chunk, whatever the server sends.
"""

from __future__ import annotations

import zlib

import httpx

# Asked for explicitly so the server never picks an encoding we cannot bound.
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """The decoded body passed the cap; `read` is how many bytes were decoded before stopping."""

    def __init__(self, read: int) -> None:
        super().__init__(read)
        self.read = read


class UndecodableBody(Exception):
    """The body's content encoding is broken or not one we asked for."""


def _decoder(content_encoding: str) -> zlib._Decompress | None:
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if codings == ["gzip"] or codings == ["x-gzip"]:
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if codings == ["deflate"]:
        return zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # zlib or gzip header
    raise UndecodableBody(
        f"content-encoding {content_encoding!r} was not asked for ({ACCEPT_ENCODING})"
    )


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    """The decoded body, or BodyTooLarge as soon as more than `cap` bytes would be held."""
    decoder = _decoder(response.headers.get("content-encoding", ""))
    body = bytearray()
    raw_seen = False
    try:
        async for chunk in response.aiter_raw():
            raw_seen = raw_seen or bool(chunk)
            room = cap + 1 - len(body)
            if decoder is None:
                body += chunk[:room]
            else:
                body += decoder.decompress(chunk, room)
            if len(body) > cap:
                raise BodyTooLarge(len(body))
        if decoder is not None:
            body += decoder.flush()[: cap + 1 - len(body)]
            if len(body) > cap:
                raise BodyTooLarge(len(body))
            if raw_seen and not decoder.eof:
                raise UndecodableBody("compressed body ends before its end-of-stream marker")
    except zlib.error as exc:
        raise UndecodableBody(f"compressed body does not decode: {exc}") from None
    return bytes(body)
