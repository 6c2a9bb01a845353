"""The http kind's connections on asyncio's own streams: httpcore's network backend interface
(`AsyncNetworkBackend`, public), implemented for one connection at a time.

httpcore's own backend under asyncio goes through anyio, whose connect runs a task group for
happy eyeballs and whose every read and write sets up a cancel scope for its timeout: about a
fifth of the CPU of a probe (bench/profile_http.py). Neither is needed here. The address is
already chosen (`Addressing`, probes/_ip.py) and tried one at a time, and the run's deadline
(`asyncio.timeout_at` around the whole request, probes/http.py) bounds every step, so the
per-operation timeouts httpcore passes are not applied a second time.

Each connection also watches what the server sends (`Received`), because the parser cannot
say what went wrong: httpcore reports a server that hung up before any byte, one that
answered in another protocol and one that closed mid-body alike, as RemoteProtocolError.
Those are re-raised as `NotHttp` or `ClosedEarly`, subclasses of httpcore's
RemoteProtocolError (so the transport maps them to httpx's, with them as the cause,
probes/_http_clients.py).
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

from stackprobe.probes._ip import Addressing

# Every HTTP/1.x response starts with these bytes (RFC 9112 status-line; h11 allows nothing
# before it, not even an empty line).
_STATUS_LINE_START = b"HTTP/"
# How much of a reply that is not HTTP is kept to show what it was (an SSH banner, -ERR).
_SHOWN = 32


class NotHttp(httpcore.RemoteProtocolError):
    """The server answered, but not in HTTP/1.x: another protocol on the port, or an HTTP
    head or body framing that does not parse (a chunk size that is not hex, a head over
    httpcore's 100 KiB limit)."""


class ClosedEarly(httpcore.RemoteProtocolError):
    """The server closed the connection before the response was complete: before any byte,
    in the middle of the head, or before the end of the body its framing announced."""


class Received:
    """What the server sent on one connection: how much, how it began, whether it ended."""

    __slots__ = ("count", "eof", "h2", "head")

    def __init__(self) -> None:
        self.count = 0
        self.head = b""
        self.eof = False
        self.h2 = False  # ALPN chose HTTP/2: binary frames, which h2 itself judges

    def saw(self, data: bytes) -> None:
        if not data:
            self.eof = True
            return
        self.count += len(data)
        if self.h2 or len(self.head) >= _SHOWN:
            return
        self.head += data[: _SHOWN - len(self.head)]
        start = self.head[: len(_STATUS_LINE_START)]
        if start != _STATUS_LINE_START[: len(start)]:
            # What h11 would conclude once the head were complete, known now: a server that
            # speaks first (SSH) or waits for more (SMTP) is not waited for until the deadline.
            raise NotHttp(f"the reply is not HTTP: it begins {self.head!r}")

    def explain(self, exc: httpcore.RemoteProtocolError, *, in_body: bool) -> Exception | None:
        """`exc` as NotHttp or ClosedEarly, or None when it already is one.

        The parser fails for want of bytes only after the server closed (`eof`); before that,
        it failed on bytes it had (h11 parses what it holds before it asks for more).
        """
        if isinstance(exc, NotHttp | ClosedEarly) or self.h2:
            return None
        if not self.eof:
            where = "body framing" if in_body else "head"
            return NotHttp(f"the response {where} does not parse as HTTP/1.1: {exc}")
        if in_body:
            return ClosedEarly(
                f"the server closed the connection before the body was complete: {exc}"
            )
        if self.count == 0:
            return ClosedEarly(
                "the server closed the connection without sending a byte: an application "
                "that died on the request, or a server of another protocol that hangs up on "
                "HTTP (PostgreSQL and Redis do)"
            )
        return ClosedEarly(
            f"the server closed the connection in the middle of the response head, after "
            f"{self.count} bytes"
        )


class _Stream(httpcore.AsyncNetworkStream):
    """One connection, plain or TLS, telling `Received` everything it reads. (The signatures,
    timeouts included, are httpcore's interface, hence the ASYNC109 exceptions; the timeouts
    are the run's deadline's business, see the module docstring.)"""

    __slots__ = ("_reader", "_received", "_writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: Received
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._received = received

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            data = await self._reader.read(max_bytes)
        except OSError as exc:  # reset by the peer; an ssl.SSLError is one too
            raise httpcore.ReadError(exc) from exc
        self._received.saw(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            await self._writer.drain()
        except OSError as exc:
            raise httpcore.WriteError(exc) from exc

    async def aclose(self) -> None:
        # At once, with no TLS close_notify exchange: asyncio would wait up to 30 s for the
        # peer's (ssl_shutdown_timeout), holding the socket, for a connection that is done.
        # Only what the server did not take yet is dropped: a request body it answered
        # before reading, which the probe no longer needs either.
        self._writer.transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException as exc:
            # A failed or cancelled handshake leaves the TCP connection to its owner, and
            # httpcore closes it only on an exception, not on cancellation (the deadline).
            self._writer.transport.abort()
            if isinstance(exc, ConnectionResetError) and exc.errno is None:
                # asyncio's (and uvloop's) word for a server that closed in the middle of
                # the handshake, which the ssl module calls an EOF: a TLS failure (a port
                # that is not TLS, a server refusing the client), not a reset
                eof = ssl.SSLEOFError(
                    ssl.SSL_ERROR_EOF,
                    "the server closed the connection during the TLS handshake",
                )
                raise httpcore.ConnectError(eof) from eof
            if isinstance(exc, OSError):  # ssl.SSLError included: the cause says which
                raise httpcore.ConnectError(exc) from exc
            raise
        ssl_object = self._writer.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._received.h2 = True
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "is_readable":  # for a pool's idle check: data or EOF waiting
            sock = self._writer.get_extra_info("socket")
            return sock is None or sock.fileno() < 0 or bool(select.select([sock], [], [], 0)[0])
        if info in ("ssl_object", "socket"):
            return self._writer.get_extra_info(info)
        return None


class Backend(httpcore.AsyncNetworkBackend):
    """The connections of one request, on asyncio's streams.

    It resolves the host itself (`Addressing`: timed as the resolve phase, in the order the
    target prefers) and connects to one address at a time, going on to the next only when
    one fails at once (refused, no route), as blackbox_exporter probes one address."""

    __slots__ = ("_addressing", "_received")

    def __init__(self, received: Received, addressing: Addressing) -> None:
        self._received = received
        self._addressing = addressing

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._addressing.candidates(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(exc) from exc
        failed: list[Exception] = []
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, port, local_addr=(local_address, 0) if local_address else None
                )
            except OSError as exc:
                failed.append(httpcore.ConnectError(exc))
                failed[-1].__cause__ = exc
                continue
            sock = writer.get_extra_info("socket")
            for option in socket_options or ():  # asyncio sets TCP_NODELAY itself
                sock.setsockopt(*option)
            self._addressing.address = address
            return _Stream(reader, writer, self._received)
        if len(failed) == 1:
            raise failed[0]
        raise httpcore.ConnectError(f"every address of {host} failed") from ExceptionGroup(
            "one error per address", failed
        )

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
