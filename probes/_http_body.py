"""Reading a response body without letting it cost more memory than the cap.

httpx's own decoders inflate a whole network chunk at once, so 64 KiB of gzip bomb becomes
tens of MiB before any cap can look at it. Reading raw bytes and inflating them with zlib's
`max_length` (brotli's `output_buffer_limit`) keeps the peak at the cap plus one network
chunk, whatever the server sends.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable

import httpx

# Asked for explicitly so the server never picks an encoding we cannot bound. Not deflate:
# servers disagree on whether it carries a zlib header; gzip is unambiguous.
ACCEPT_ENCODING = "gzip"


class BodyTooLarge(Exception):
    """The decoded body passed the cap; `read` is how many bytes were decoded before stopping."""

    def __init__(self, read: int) -> None:
        super().__init__(read)
        self.read = read


class UndecodableBody(Exception):
    """The body's content encoding is broken or not one we asked for. `raw` is how many
    bytes of a body left undecoded (a coding not asked for) were read, as blackbox_exporter
    reports such a body's length."""

    def __init__(self, detail: str, asked: bool = True, raw: int = 0) -> None:
        super().__init__(detail)
        self.asked = asked  # a coding we asked for that breaks, not one we did not ask for
        self.raw = raw


# Inflate at most this much per call: the copy zlib hands back is transient memory on top of
# the body, so it is kept small rather than as large as the room left under the cap.
_STEP = 64 * 1024


class _Deflate:
    """`deflate` as servers send it: zlib-wrapped as the RFC says, or raw as many do. Which
    one is decided from the first two bytes, however the body is split into chunks."""

    def __init__(self) -> None:
        self._inner: zlib._Decompress | None = None
        self._head = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            first, second = self._head[0], self._head[1]
            zlib_header = first & 0x0F == 8 and (first << 8 | second) % 31 == 0
            self._inner = zlib.decompressobj(wbits=zlib.MAX_WBITS if zlib_header else -15)
            data, self._head = self._head, b""
        return self._inner.decompress(data, max_length)

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail if self._inner is not None else b""

    def flush(self) -> bytes:
        return self._inner.flush() if self._inner is not None else b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof

    holds_output = False


class _Gzip:
    """gzip that carries on into the next member, as `gzip -c a b` writes and curl reads."""

    def __init__(self) -> None:
        self._inner = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._next_member = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner.eof and not data.strip(b"\0"):
            return b""  # NUL padding after the last member, which gzip(1) also ignores
        out = self._inner.decompress(data, max_length)
        rest = self._inner.unused_data
        if self._inner.eof and rest.strip(b"\0"):
            self._next_member = rest
            self._inner = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        else:
            self._next_member = b""
        return out

    @property
    def unconsumed_tail(self) -> bytes:
        return self._next_member or self._inner.unconsumed_tail

    def flush(self) -> bytes:
        return self._inner.flush()

    @property
    def eof(self) -> bool:
        return self._inner.eof

    holds_output = False


class _Brotli:
    """`br`, read only when a target asks for it (`compression: br`). brotli takes input
    only while `can_accept_more_data()`, and may hold decoded output past the limit of one
    call: it is asked again with no input (`holds_output`) until a call yields nothing, and
    new input waits (`unconsumed_tail`) until it takes input again. Its limit is not strict
    (one call can yield about 32 KiB over it), so the bound is the cap plus that."""

    def __init__(self) -> None:
        import brotli  # only a target with `compression: br` pays for the module

        self._inner = brotli.Decompressor()
        self._error = brotli.error
        self._pending = b""
        self._more = False

    def decompress(self, data: bytes, max_length: int) -> bytes:
        try:
            if data and not self._inner.can_accept_more_data():
                out: bytes = self._inner.process(b"", output_buffer_limit=max_length)
                if not out:  # neither takes input nor gives output: never loop on it
                    raise zlib.error("brotli: the decoder made no progress")
                self._pending = data
            else:
                out = self._inner.process(data, output_buffer_limit=max_length)
                self._pending = b""
        except self._error as exc:
            raise zlib.error(f"brotli: {exc}") from None
        self._more = bool(out) and not self._inner.is_finished()
        return out

    @property
    def unconsumed_tail(self) -> bytes:
        return self._pending

    def flush(self) -> bytes:
        return b""

    @property
    def eof(self) -> bool:
        return bool(self._inner.is_finished())

    @property
    def holds_output(self) -> bool:
        return self._more


_Decoder = _Gzip | _Deflate | _Brotli
# The codings a target can ask for with `compression:`, and their decoders.
CODINGS: dict[str, Callable[[], _Decoder]] = {"gzip": _Gzip, "deflate": _Deflate, "br": _Brotli}


def _codings(content_encoding: str) -> list[str]:
    found = [c.strip().lower() for c in content_encoding.split(",")]
    return ["gzip" if c == "x-gzip" else c for c in found if c and c != "identity"]


def _decoder(content_encoding: str, compression: str | None) -> _Decoder | None:
    """The decoder for the response's coding. With `compression` set, the response must
    come in that coding (or, for `identity`, in none); without it, gzip (asked for) and
    deflate (common enough) are read, and any other coding is left undecoded."""
    codings = _codings(content_encoding)
    if compression is not None:
        wanted = [] if compression == "identity" else [compression]
        if codings != wanted:
            came = content_encoding.strip() or "no content-encoding"
            raise UndecodableBody(f"the body came in {came!r}, compression is {compression!r}")
        return CODINGS[compression]() if wanted else None
    if not codings:
        return None
    if codings == ["gzip"]:
        return _Gzip()
    if codings == ["deflate"]:  # not asked for, but common enough to read (zlib or raw)
        return _Deflate()
    raise UndecodableBody(
        f"content-encoding {content_encoding!r} was not asked for ({ACCEPT_ENCODING})",
        asked=False,
    )


async def read_capped(response: httpx.Response, cap: int, compression: str | None = None) -> bytes:
    """The decoded body, or BodyTooLarge as soon as more than `cap` bytes would be held.

    A body that cannot be decoded (a coding not asked for, compression that breaks) is still
    read on, raw and discarded, to its end or to `cap` raw bytes, before UndecodableBody: a
    transport failure behind it (the server closing mid-body, framing that does not parse)
    is raised as what it is, not hidden behind the decoding error it causes.
    """
    # the raw stream itself: aiter_raw would re-chunk and count what it passes on, for nothing
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)  # a response of the http kind's client
    chunks = aiter(stream)
    try:
        decoder = _decoder(response.headers.get("content-encoding", ""), compression)
    except UndecodableBody as exc:
        exc.raw = await _drain(chunks, cap)
        raise
    body = bytearray()
    raw = 0
    try:
        async for chunk in chunks:
            raw += len(chunk)
            if decoder is None:
                body += chunk[: cap + 1 - len(body)]
            else:
                pending = chunk
                while len(body) <= cap:
                    body += decoder.decompress(pending, min(cap + 1 - len(body), _STEP))
                    pending = decoder.unconsumed_tail
                    if not pending and not decoder.holds_output:
                        break
            if len(body) > cap:
                raise BodyTooLarge(len(body))
        if decoder is not None:
            body += decoder.flush()[: cap + 1 - len(body)]
            if len(body) > cap:
                raise BodyTooLarge(len(body))
            if raw and not decoder.eof:
                raise UndecodableBody("compressed body ends before its end-of-stream marker")
    except zlib.error as exc:
        await _drain(chunks, cap - raw)
        raise UndecodableBody(f"compressed body does not decode: {exc}") from None
    return bytes(body)


async def _drain(chunks: AsyncIterator[bytes], budget: int) -> int:
    """Reads on and discards, until the body ends or more than `budget` bytes went by; how
    many bytes went by."""
    read = 0
    while read <= budget:
        chunk = await anext(chunks, None)
        if chunk is None:
            break
        read += len(chunk)
    return read
