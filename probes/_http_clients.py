"""The `http_client:` resource: shared httpx clients (one per TLS profile and HTTP/2
setting) under one connection limit, without a pool.

Every probe opens a fresh connection, so connect and TLS are measured each time, as
blackbox_exporter does. httpcore's connection pool would only get in the way: its bookkeeping
walks every queued request against every connection on each change, which at a few thousand
targets took the whole CPU (measured: 5,000 targets never got their first results). So the
clients keep httpx's request handling (URLs, redirects, auth) over a transport of their own,
`FreshTransport`, built on httpx's and httpcore's public interfaces only: one new httpcore
connection per request (`FreshConnections`), closed with the response, under a semaphore
that is the connection limit, with httpcore's exceptions raised as httpx's, as httpx's own
transport does.

Each connection also watches what the server sends (`_Received`), because the parser cannot
say what went wrong: httpcore reports a server that hung up before any byte, one that
answered in another protocol and one that closed mid-body alike, as RemoteProtocolError.
Those are re-raised as `NotHttp` or `ClosedEarly`, subclasses of httpcore's
RemoteProtocolError (so httpx still maps them to its own, with them as the cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field

from stackprobe._version import __version__
from stackprobe.probes._ip import Addressing
from stackprobe.probes._tls import BUILT_CONTEXTS, TLSConfig
from stackprobe.resource import ResourceEnv, Shared

USER_AGENT = f"stackprobe/{__version__}"
# The request extension that carries a run's `Addressing` (probes/_ip.py) to its connections.
ADDRESSING = "stackprobe.addressing"
# The request extension that sends one request through a proxy (`Proxy`).
PROXY = "stackprobe.proxy"


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy for one request: its URL without credentials, which travel as `auth` (in
    Proxy-Authorization), and the headers its CONNECT (or forwarded request) carries."""

    url: str
    auth: tuple[bytes, bytes] | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


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


class _Received:
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
        if self.h2:
            self.count += len(data)
            return
        if len(self.head) < _SHOWN:
            self.head += data[: _SHOWN - len(self.head)]
        self.count += len(data)
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


class _WatchedStream(httpcore.AsyncNetworkStream):
    """A network stream that tells `_Received` everything it reads. (The signatures, timeouts
    included, are httpcore's interface, hence the ASYNC109 exceptions.)"""

    def __init__(self, inner: httpcore.AsyncNetworkStream, received: _Received) -> None:
        self._inner = inner
        self._received = received

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        data = await self._inner.read(max_bytes, timeout)
        self._received.saw(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            # httpcore closes the TCP stream when the handshake fails, but not when it is
            # cancelled (the probe's deadline), and nothing else holds it: left alone, its
            # socket stays open until a garbage collection finds it.
            await self._inner.aclose()
            raise
        ssl_object = inner.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._received.h2 = True
        return _WatchedStream(inner, self._received)  # the handshake is not read through here

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _WatchedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asyncio backend, handing out watched streams. One per connection.

    It resolves the host itself (`Addressing`: timed as the resolve phase, in the order the
    target prefers) and connects to one address at a time, going on to the next only when
    one fails at once (refused, no route), as blackbox_exporter probes one address."""

    def __init__(
        self, inner: httpcore.AsyncNetworkBackend, received: _Received, addressing: Addressing
    ) -> None:
        self._inner = inner
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
            async with asyncio.timeout(timeout):
                addresses = await self._addressing.candidates(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout}s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        failed: list[Exception] = []
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failed.append(exc)
                continue
            self._addressing.address = address
            return _WatchedStream(stream, self._received)
        if len(failed) == 1:
            raise failed[0]
        raise httpcore.ConnectError(f"every address of {host} failed") from ExceptionGroup(
            "one error per address", failed
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ClosingStream:
    """A response body that closes its connection, and frees its slot, when it is closed."""

    def __init__(
        self, stream: Any, release: Callable[[], Awaitable[None]], received: _Received
    ) -> None:
        self._stream = stream
        self._release = release
        self._received = received

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except httpcore.RemoteProtocolError as exc:
            explained = self._received.explain(exc, in_body=True)
            if explained is None:
                raise
            try:
                raise explained from exc
            finally:  # the frame would hold the exception that holds the frame: a cycle
                explained = None

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            await self._release()


class FreshConnections:
    """httpcore's pool interface, with a new connection per request."""

    def __init__(
        self, ssl_context: ssl.SSLContext, slots: asyncio.Semaphore, http2: bool = False
    ) -> None:
        self._ssl_context = ssl_context
        self._slots = slots
        self._http2 = http2
        self._open: set[httpcore.AsyncHTTPConnection | httpcore.AsyncHTTPProxy] = set()
        self._backend = httpcore.AnyIOBackend()  # what httpcore picks itself under asyncio

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        scheme = request.url.scheme
        if scheme not in (b"http", b"https"):  # as httpcore's pool, which this replaces, does
            shown = scheme.decode("ascii", "replace")[:20]
            raise httpcore.UnsupportedProtocol(f"{shown}:// is not http:// or https://")
        received = _Received()
        addressing = request.extensions.get(ADDRESSING) or Addressing()
        proxy: Proxy | None = request.extensions.get(PROXY)
        connection: httpcore.AsyncHTTPConnection | httpcore.AsyncHTTPProxy
        if proxy is None:
            connection = httpcore.AsyncHTTPConnection(
                origin=request.url.origin,
                ssl_context=self._ssl_context,
                http2=self._http2,
                network_backend=_WatchedBackend(self._backend, received, addressing),
            )
        else:
            # httpcore's proxy pool, for this one request and closed with it: a CONNECT
            # tunnel for https://, a forwarded request for http://. The proxy's own name is
            # looked up in the connect phase; the target's, if at all, by the probe.
            connection = httpcore.AsyncHTTPProxy(
                proxy_url=proxy.url,
                proxy_auth=proxy.auth,
                proxy_headers=list(proxy.headers),
                ssl_context=self._ssl_context,
                max_connections=1,
                max_keepalive_connections=0,
                http2=self._http2,
                network_backend=_WatchedBackend(
                    self._backend, received, Addressing(addressing.preferred, addressing.fallback)
                ),
            )
        # A slot is taken once the connection exists: nothing before this can leak one.
        wait = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise httpcore.PoolTimeout("every connection slot stayed busy") from None
        self._open.add(connection)

        async def release() -> None:
            if connection in self._open:
                self._open.discard(connection)
                try:
                    await connection.aclose()
                finally:
                    self._slots.release()

        try:
            response = await connection.handle_async_request(request)
        except httpcore.RemoteProtocolError as exc:
            await release()
            explained = received.explain(exc, in_body=False)
            if explained is None:
                raise
            try:
                raise explained from exc
            finally:  # as in _ClosingStream: no frame-exception cycle
                explained = None
        except BaseException:
            await release()
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_ClosingStream(response.stream, release, received),
            extensions=response.extensions,
        )

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._open.discard(connection)
            try:
                await connection.aclose()
            finally:
                self._slots.release()

    async def __aenter__(self) -> FreshConnections:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# httpcore's exceptions and the httpx ones of the same name that httpx's own transport raises
# for them (an exception is mapped by the first of its classes listed here, most derived
# first along its MRO). tests/probes/test_http_clients.py checks that it covers httpcore's.
_AS_HTTPX: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextlib.contextmanager
def _as_httpx() -> Iterator[None]:
    """httpcore's exception as httpx's, with httpcore's as its cause: the probe reads the
    cause for what happened (`NotHttp`, `ClosedEarly`, an OSError)."""
    try:
        yield
    except Exception as exc:
        mapped = next((_AS_HTTPX[c] for c in type(exc).__mro__ if c in _AS_HTTPX), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _HttpxBody(httpx.AsyncByteStream):
    """A response body for httpx, raising httpx's exceptions while it is read."""

    def __init__(self, stream: _ClosingStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        await self._stream.aclose()


class FreshTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over `FreshConnections`: what httpx's own transport does
    around its pool (the request as httpcore's, the response as httpx's, the exceptions
    mapped), and nothing it does to configure that pool, which is not used."""

    def __init__(
        self, ssl_context: ssl.SSLContext, slots: asyncio.Semaphore, http2: bool = False
    ) -> None:
        self.connections = FreshConnections(ssl_context, slots, http2)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            request.method,
            httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx():
            response = await self.connections.handle_async_request(core)
        body = response.stream
        assert isinstance(body, _ClosingStream)  # what FreshConnections returns
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_HttpxBody(body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.connections.aclose()


class HttpClientSettings(BaseModel):
    """The `http_client:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Connections open at once across all http targets sharing a TLS profile; a probe waiting
    # past its deadline for one fails with reason pool_timeout.
    max_connections: int = Field(512, ge=1, le=65536)


_HEADERS = {"User-Agent": USER_AGENT, "Connection": "close"}


class HttpClients:
    """`trust_env` is off so that a stray HTTP_PROXY or ~/.netrc never changes what a probe
    measures or sends, and cookies are refused: a jar shared by every target would carry an
    ALB's stickiness cookie (AWSALB) from one probe to the next and pin them all to one task.
    Each request says `Connection: close`, as blackbox_exporter's does, so the server closes
    first and the TIME_WAIT sockets of thousands of probes pile up there, not here.

    TLS contexts come from the config load that validated them (`contexts`), so the files
    are read once per load; a reload builds a new `HttpClients` and so reads them again.
    `slots` is the connection limit, shared with the previous generation of clients while
    its last runs finish, so a reload never raises the limit.
    """

    def __init__(
        self,
        max_connections: int,
        contexts: Mapping[TLSConfig, ssl.SSLContext] | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.slots = slots or asyncio.Semaphore(max_connections)
        self._contexts = dict(contexts or {})
        self._clients: dict[tuple[TLSConfig, bool], httpx.AsyncClient] = {}
        self._transports: dict[tuple[TLSConfig, bool], FreshTransport] = {}

    def client(self, tls: TLSConfig, http2: bool = False) -> httpx.AsyncClient:
        """The client for a TLS profile, offering HTTP/2 by ALPN or not; raises
        ssl.SSLError, OSError or ValueError when the profile's files cannot be used (they
        are checked at load, but may change since).

        An HTTP/2 client has a TLS context of its own, as httpcore sets the ALPN protocols
        on the context of each connection. Its `Connection: close` holds when the server
        picks HTTP/1.1; over HTTP/2 the h2 library leaves it out, as HTTP/2 has no such
        header (the connection is closed after the response either way)."""
        key = (tls, http2)
        client = self._clients.get(key)
        if client is None:
            context = tls.ssl_context() if http2 else self._contexts.get(tls) or tls.ssl_context()
            transport = FreshTransport(context, self.slots, http2)
            client = httpx.AsyncClient(
                transport=transport, trust_env=False, follow_redirects=False, headers=_HEADERS
            )
            # A policy that allows no domain: nothing is ever stored, so nothing is ever sent.
            client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            self._clients[key] = client
            self._transports[key] = transport
        return client

    def pools(self) -> list[FreshConnections]:
        return [transport.connections for transport in self._transports.values()]

    async def aclose(self) -> None:
        clients, self._clients, self._transports = list(self._clients.values()), {}, {}
        for client in clients:
            await client.aclose()


def _open(
    settings: HttpClientSettings, env: ResourceEnv, previous: HttpClients | None
) -> HttpClients:
    """Fresh clients on every load, so rotated CA, certificate and key files are read again;
    runs already holding the old ones finish with them, under the same limit."""
    same_limit = previous is not None and previous.max_connections == settings.max_connections
    return HttpClients(
        settings.max_connections,
        env.built.get(BUILT_CONTEXTS),
        previous.slots if previous is not None and same_limit else None,
    )


HTTP_CLIENTS = Shared("http_client", HttpClientSettings, _open)
