"""The HTTP/1.1 server under stackprobe's endpoints: h11 parses, asyncio's transports (TLS
included) carry, and this module holds the connection's life between them.

Why not a web framework: the endpoints are seven fixed paths answered from memory, and
aiohttp.web cost 11 MiB of a 60 MiB process (hypercorn 3.5, uvicorn 3.8 with click) where h11
is already loaded for the http kind. What a framework did for us is here, and tested in
tests/test_http_server.py: keep-alive with an idle limit that a slow sender cannot extend,
pipelining, HEAD, `Expect: 100-continue`, a bounded body, 400/413 for what h11 refuses, a
handler cancelled when its client hangs up, and no reads while an answer waits to be sent.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import structlog

# The request line and headers together (h11's own default); a body is for POST /-/reload,
# which reads none.
HEAD_MAX_BYTES = 16 * 1024
BODY_MAX_BYTES = 64 * 1024
_TOO_LARGE = f"the body is larger than {BODY_MAX_BYTES} bytes"
# How long a refused client may go on sending before it is cut off.
LINGER_SECONDS = 2.0

log = structlog.get_logger("stackprobe.http")


class Headers:
    """A request's headers, looked up case-insensitively, repeated ones kept in order."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        # h11 gives names lower-cased; values are latin-1 on the wire (RFC 9110 5.5).
        self._items = [(name.decode("ascii"), value.decode("latin-1")) for name, value in items]

    def get(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((value for key, value in self._items if key == name), default)

    def getall(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key == name.lower() for key, _ in self._items)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, list[str]]
    headers: Headers
    body: bytes
    transport: asyncio.BaseTransport

    @property
    def host(self) -> str:
        return self.headers.get("host")


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes | list[bytes] = b""  # parts are written as they are, never joined
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # the connection's last answer

    @classmethod
    def text(
        cls,
        text: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> Response:
        return cls(status, text.encode(), {"Content-Type": content_type, **(headers or {})})


Handler = Callable[[Request], Awaitable[Response]]


class _Clock:
    """The Date header, formatted once a second rather than once an answer."""

    second = -1
    value = b""

    @classmethod
    def date(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True).encode()
        return cls.value


class Connections:
    """The open connections of one listener, so stopping it closes them."""

    def __init__(self) -> None:
        self.open: set[HttpProtocol] = set()

    def close(self) -> None:
        """At shutdown: every connection cut at once, its running handler cancelled."""
        for connection in list(self.open):
            connection.abort()


class HttpProtocol(asyncio.Protocol):
    """One client connection: requests in order, one handler at a time."""

    def __init__(self, handler: Handler, connections: Connections, idle_seconds: float) -> None:
        self._handler = handler
        self._connections = connections
        self._idle_seconds = idle_seconds
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_MAX_BYTES)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._idle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._writable = True
        # Bytes received since h11's buffer last held no whole event: what a client sends
        # ahead (pipelining) is read no further than one request more than it is answered.
        self._held = 0
        self._discarding = False  # refused: what arrives is dropped until the client closes

    # asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, though it is one.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.open.add(self)
        self._wait_for_request()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._h11.receive_data(data)
        self._held += len(data)
        if not self._busy():
            self._next()
        # Still busy: stop reading past one request's worth (a hang-up is still seen while
        # the client sends less).
        held_too_much = self._held > HEAD_MAX_BYTES + BODY_MAX_BYTES
        if self._busy() and held_too_much and self._transport is not None:
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        # Taken as a hang-up, half-close or not (as Go's net/http and aiohttp do): the
        # transport closes and a running handler is cancelled.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.open.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            self._task.cancel()  # a client that hung up stops waiting for bcrypt
        self._transport = None

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._go_on()

    def close(self) -> None:
        """Close once what was written is sent, or cut it off when the client does not read
        it within the idle limit (a socket is never held for a client that stopped)."""
        if self._transport is not None:
            transport = self._transport
            transport.close()
            self._loop.call_later(self._idle_seconds, transport.abort)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # the request cycle

    def _busy(self) -> bool:
        return self._task is not None or not self._writable

    def _go_on(self) -> None:
        """After an answer is out: the next request already buffered, or more reading."""
        if self._busy() or self._transport is None:
            return
        self._next()
        if not self._busy() and self._transport is not None:
            self._transport.resume_reading()

    def _wait_for_request(self) -> None:
        """Start the clock for the next request: it must arrive whole within the limit,
        however slowly its bytes trickle in, and the last answer be read by then."""
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self._idle_seconds, self._too_slow)

    def _too_slow(self) -> None:
        if self._transport is not None and self._task is None:
            self._transport.abort()

    def _next(self) -> None:
        """Read events until a request is whole (then answer it), more data is needed, or
        the client is done."""
        while self._task is None and self._transport is not None and not self._discarding:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA:
                self._held = 0  # what h11 holds now is less than one event (its own limit)
                return
            if event is h11.PAUSED:
                self._transport.pause_reading()
                return
            if isinstance(event, h11.Request):
                if not self._start(event):
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > BODY_MAX_BYTES:
                    self._refuse(413, _TOO_LARGE)
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._answer()
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    def _start(self, request: h11.Request) -> bool:
        names = {name for name, _ in request.headers}
        if {b"content-length", b"transfer-encoding"} <= names:
            # Framed two ways: a proxy in front may read it the other way (RFC 9112 6.1).
            self._refuse(400, "both Content-Length and Transfer-Encoding")
            return False
        length = next((v for k, v in request.headers if k == b"content-length"), b"0")
        if length.isdigit() and int(length) > BODY_MAX_BYTES:
            self._refuse(413, _TOO_LARGE)
            return False
        self._request, self._body = request, bytearray()
        if self._h11.they_are_waiting_for_100_continue and self._transport is not None:
            go_on = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            self._transport.write(self._h11.send(go_on) or b"")
        return True

    def _answer(self) -> None:
        assert self._request is not None and self._transport is not None
        if self._idle is not None:
            self._idle.cancel()
        event, self._request = self._request, None
        target = event.target.decode("ascii", "replace")
        if not target.startswith("/"):  # the absolute form (RFC 9112 3.2.2) a proxy sends
            try:
                split = urlsplit(target)
            except ValueError as exc:
                self._refuse(400, f"the request target is not a URL ({exc})")
                return
            target = f"{split.path or '/'}?{split.query}"
        path, _, query = target.partition("?")
        request = Request(
            method=event.method.decode("ascii", "replace"),
            path=unquote(path),
            query=parse_qs(query, keep_blank_values=True),
            headers=Headers(event.headers),
            body=bytes(self._body),
            transport=self._transport,
        )
        self._body = bytearray()
        self._task = self._loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            response = await self._handler(request)
        except Exception:
            log.exception("an endpoint failed", method=request.method, path=request.path)
            response = Response.text("internal error; see stackprobe's log\n", 500)
        self._task = None
        if self._transport is None:
            return
        try:
            self._send(response, head_only=request.method == "HEAD")
        except Exception:  # h11 refused a header; the client gets a reset, not a wait
            log.exception("an answer could not be sent", method=request.method, path=request.path)
            self._transport.abort()
            return
        if self._h11.our_state is h11.MUST_CLOSE:
            self.close()
            return
        self._h11.start_next_cycle()
        self._wait_for_request()
        self._go_on()  # a pipelined request, or (when the answer is still being sent) later

    def _send(self, response: Response, head_only: bool = False) -> None:
        assert self._transport is not None
        # Values as UTF-8, as aiohttp and Go's net/http write a configured header's value.
        headers = [(k.encode("ascii"), v.encode()) for k, v in response.headers.items()]
        headers.append((b"Date", _Clock.date()))
        parts = [response.body] if isinstance(response.body, bytes) else response.body
        headers.append((b"Content-Length", str(sum(map(len, parts))).encode()))
        if response.close:
            headers.append((b"Connection", b"close"))
        reason = HTTPStatus(response.status).phrase.encode()
        head = h11.Response(status_code=response.status, headers=headers, reason=reason)
        chunks: list[Any] = self._h11.send_with_data_passthrough(head) or []
        if not head_only:
            # Passed through as they are: a /metrics answer is not copied on its way out.
            for part in parts:
                if part:
                    chunks += self._h11.send_with_data_passthrough(h11.Data(data=part)) or []
        chunks += self._h11.send_with_data_passthrough(h11.EndOfMessage()) or []
        self._transport.writelines(chunks)

    def _refuse(self, status: int, why: str) -> None:
        """Answer what h11 or a limit refused, and hang up: the stream cannot be trusted past
        it. What the client still sends is read and dropped for a moment (a lingering close),
        or closing on unread bytes would reset the connection before it reads the answer."""
        assert self._transport is not None
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            response = Response.text(f"bad request: {why}\n", status)
            response.close = True
            self._send(response)
        if not self._transport.can_write_eof():  # TLS
            self.close()
            return
        self._transport.write_eof()
        self._discarding = True
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(LINGER_SECONDS, self._transport.abort)


async def serve(
    handler: Handler,
    sock: socket.socket,
    context: ssl.SSLContext | None,
    connections: Connections,
    idle_seconds: float,
) -> asyncio.Server:
    """Accept connections on an already bound socket, over TLS when `context` is given."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: HttpProtocol(handler, connections, idle_seconds),
        sock=sock,
        ssl=context,
        # A client that never finishes its TLS handshake is held no longer than one that
        # never finishes its request.
        ssl_handshake_timeout=idle_seconds if context is not None else None,
    )
