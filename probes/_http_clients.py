"""The `http_client:` resource: shared clients (one per TLS profile and HTTP/2 setting)
under one connection limit, without a pool.

Every probe opens a fresh connection, so connect and TLS are measured each time, as
blackbox_exporter does. httpcore's connection pool would only get in the way: its bookkeeping
walks every queued request against every connection on each change, which at a few thousand
targets took the whole CPU (measured: 5,000 targets never got their first results). So a
`Client` sends httpx requests through a transport of its own, `FreshTransport`, built on
httpx's and httpcore's public interfaces only: one new httpcore connection per request
(`FreshConnections`), closed with the response, under a semaphore that is the connection
limit, with httpcore's exceptions raised as httpx's, as httpx's own transport does.

The connections run on asyncio's streams (probes/_http_network.py), which also tell what
the server sent apart from what httpcore's parser says of it (`NotHttp`, `ClosedEarly`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field

from stackprobe._version import __version__
from stackprobe.probes._http_network import Backend, Received
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


class _ClosingStream:
    """A response body that closes its connection, and frees its slot, when it is closed."""

    def __init__(
        self, stream: Any, release: Callable[[], Awaitable[None]], received: Received
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


# A TLS context, or what makes one when a connection first needs it (FreshConnections)
TLSContext = ssl.SSLContext | Callable[[], ssl.SSLContext]
_Direct = httpcore.AsyncHTTP11Connection | httpcore.AsyncHTTP2Connection
_Connection = _Direct | httpcore.AsyncHTTPProxy


class FreshConnections:
    """httpcore's pool interface, with a new connection per request.

    A direct connection is made here, as httpcore's AsyncHTTPConnection makes one (connect,
    TLS with ALPN, HTTP/1.1 or HTTP/2 as the server chose), with the same trace events, and
    without its lock and retry loop, which a connection used once never needs."""

    def __init__(
        self,
        ssl_context: TLSContext,
        slots: asyncio.Semaphore,
        http2: bool = False,
    ) -> None:
        self._make_context = ssl_context
        self._ssl_context: ssl.SSLContext | None = None
        self._slots = slots
        self._http2 = http2
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        scheme = request.url.scheme
        if scheme not in (b"http", b"https"):  # as httpcore's pool, which this replaces, does
            shown = scheme.decode("ascii", "replace")[:20]
            raise httpcore.UnsupportedProtocol(f"{shown}:// is not http:// or https://")
        received = Received()
        addressing = request.extensions.get(ADDRESSING) or Addressing()
        proxy: Proxy | None = request.extensions.get(PROXY)
        wait = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise httpcore.PoolTimeout("every connection slot stayed busy") from None
        try:
            if proxy is None:
                connection: _Connection = await self._connect(request, received, addressing)
            else:
                # httpcore's proxy pool, for this one request and closed with it: a CONNECT
                # tunnel for https://, a forwarded request for http://. The proxy's own name
                # is looked up in the connect phase; the target's, if at all, by the probe.
                tls = scheme == b"https" or proxy.url.startswith("https://")
                connection = httpcore.AsyncHTTPProxy(
                    proxy_url=proxy.url,
                    proxy_auth=proxy.auth,
                    proxy_headers=list(proxy.headers),
                    ssl_context=self.ssl_context() if tls else None,
                    max_connections=1,
                    max_keepalive_connections=0,
                    http2=self._http2,
                    network_backend=Backend(
                        received, Addressing(addressing.preferred, addressing.fallback)
                    ),
                )
        except BaseException:
            self._slots.release()
            raise
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

    async def _connect(
        self, request: httpcore.Request, received: Received, addressing: Addressing
    ) -> _Direct:
        origin = request.url.origin
        host = origin.host.decode("ascii")
        trace = request.extensions.get("trace")
        backend = Backend(received, addressing)
        stream = await _traced(
            trace,
            "connection.connect_tcp",
            {"host": host, "port": origin.port},
            lambda: backend.connect_tcp(host, origin.port),
        )
        try:
            if origin.scheme == b"https":
                name = request.extensions.get("sni_hostname") or host
                tcp, context = stream, self.ssl_context()
                stream = await _traced(
                    trace,
                    "connection.start_tls",
                    {"ssl_context": context, "server_hostname": name},
                    lambda: tcp.start_tls(context, name),
                )
        except BaseException:
            await stream.aclose()  # a failed handshake closed it; a cancelled trace did not
            raise
        ssl_object = stream.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            return httpcore.AsyncHTTP2Connection(origin=origin, stream=stream)
        return httpcore.AsyncHTTP11Connection(origin=origin, stream=stream)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context, made by the first connection that needs one: the system's CA
        bundle costs 2.5 MiB of memory (bench/memory_by_import.py's way of measuring), which
        a config of plain http:// targets never needs to hold."""
        if self._ssl_context is None:
            made = self._make_context
            context = made if isinstance(made, ssl.SSLContext) else made()
            # what httpcore sets on the context before each handshake; one value per context
            context.set_alpn_protocols(["http/1.1", "h2"] if self._http2 else ["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

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


async def _traced(
    trace: Callable[[str, dict[str, Any]], Awaitable[None]] | None,
    name: str,
    info: dict[str, Any],
    step: Callable[[], Awaitable[httpcore.AsyncNetworkStream]],
) -> httpcore.AsyncNetworkStream:
    """`step()`, between the events httpcore's own connection sends the `trace` extension
    (`<name>.started`, then `.complete` or `.failed`), which time the run's phases."""
    if trace is None:
        return await step()
    await trace(f"{name}.started", info)
    try:
        stream = await step()
    except Exception as exc:
        await trace(f"{name}.failed", {"exception": exc})
        raise
    await trace(f"{name}.complete", {"return_value": stream})
    return stream


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
        self,
        ssl_context: TLSContext,
        slots: asyncio.Semaphore,
        http2: bool = False,
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


# What every request says unless the target's headers say otherwise, in httpx's order: what
# httpx's client sent by default, and `Connection: close` as blackbox_exporter's does, so the
# server closes first and the TIME_WAIT sockets of thousands of probes pile up there, not here.
_HEADERS = (
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("User-Agent", USER_AGENT),
    ("Connection", "close"),
)


def with_defaults(own: Mapping[str, str]) -> httpx.Headers:
    """What every request says, with a target's `own` headers over it (made once per set of
    them by `HttpClients.headers`; a run's request copies it)."""
    merged = httpx.Headers(_HEADERS)
    merged.update(own)
    return merged


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Client:
    """What the http kind asks of an HTTP client: a request with the client's headers, sent
    as it is, and the request a redirect leads to, over one `FreshTransport`.

    httpx's AsyncClient did the same with machinery the kind never uses (a cookie jar read
    on every response, auth flows, event hooks, its own redirect loop): a twelfth of the CPU
    of a probe (bench/profile_http.py). Cookies are never kept or sent: a jar shared by
    every target would carry an ALB's stickiness cookie (AWSALB) from one probe to the next
    and pin them all to one task. No environment variable (HTTP_PROXY, ~/.netrc) changes
    what a probe sends; proxies are the target's own (probes/http.py)."""

    def __init__(self, transport: FreshTransport) -> None:
        self.transport = transport

    def request(
        self,
        method: str,
        url: httpx.URL | str,
        content: bytes | None,
        headers: httpx.Headers,
        extensions: dict[str, Any],
    ) -> httpx.Request:
        """A request with `headers` (from `with_defaults`: what every request says, and
        the target's own), which it copies."""
        return httpx.Request(method, url, headers=headers, content=content, extensions=extensions)

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response, its body still to be read (and closed)."""
        response = await self.transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()


def redirect(request: httpx.Request, response: httpx.Response) -> httpx.Request | None:
    """The request a redirect response leads to, or None when it is none; raises
    httpx.InvalidURL when its Location is not a URL.

    httpx's client's rules: 303, and 302 but for HEAD, become a GET, as does a POST answered
    with 301; a relative or host-less Location is resolved against the request's URL;
    Authorization goes only to the same origin (or its https:// upgrade). Credentials a
    target configured beyond it are the caller's to strip."""
    if response.status_code not in _REDIRECTS or "location" not in response.headers:
        return None
    url = httpx.URL(response.headers["location"])
    if url.scheme and not url.host:
        url = url.copy_with(host=request.url.host)
    if url.is_relative_url:
        url = request.url.join(url)
    if request.url.fragment and not url.fragment:
        url = url.copy_with(fragment=request.url.fragment)
    method, status = request.method, response.status_code
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
    headers = httpx.Headers(request.headers)
    if not same_origin(request.url, url):
        headers.pop("Authorization", None)
    if (url.scheme, url.host, url.port) != (request.url.scheme, request.url.host, request.url.port):
        headers["Host"] = url.netloc.decode("ascii")
    changed = method != request.method
    if changed:
        headers.pop("Content-Length", None)
        headers.pop("Transfer-Encoding", None)
    headers.pop("Cookie", None)
    return httpx.Request(
        method,
        url,
        headers=headers,
        stream=None if changed else request.stream,
        extensions=request.extensions,
    )


def same_origin(first: httpx.URL, other: httpx.URL) -> bool:
    """Same scheme, host and port, or http://host upgraded to https://host on the default
    ports, which is the one redirect httpx itself lets credentials follow."""
    if first.host != other.host:
        return False
    if (first.scheme, first.port) == (other.scheme, other.port):
        return True
    upgrade = (first.scheme, other.scheme) == ("http", "https")
    return upgrade and first.port in (None, 80) and other.port in (None, 443)


class HttpClients:
    """The clients of one config load, one per TLS profile and HTTP/2 setting.

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
        self._clients: dict[tuple[TLSConfig, bool], Client] = {}
        self._headers: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}

    def headers(self, own: tuple[tuple[str, str], ...]) -> httpx.Headers:
        """`with_defaults(own)`, made once per set of headers for all the targets that send
        it (a thousand targets with none of their own share one), as a request copies it."""
        made = self._headers.get(own)
        if made is None:
            made = self._headers[own] = with_defaults(dict(own))
        return made

    def client(self, tls: TLSConfig, http2: bool = False) -> Client:
        """The client for a TLS profile, offering HTTP/2 by ALPN or not; raises
        ssl.SSLError, OSError or ValueError when the profile's files cannot be used (they
        are checked at load, but may change since).

        An HTTP/2 client has a TLS context of its own, as the ALPN protocols offered are set
        on the context (`FreshConnections`). Its `Connection: close` holds when the server
        picks HTTP/1.1; over HTTP/2 the h2 library leaves it out, as HTTP/2 has no such
        header (the connection is closed after the response either way)."""
        key = (tls, http2)
        client = self._clients.get(key)
        if client is None:
            built = None if http2 else self._contexts.get(tls)
            # a profile's own files are read now, so that an error says so; the system's
            # CA bundle only when a connection needs it
            files = tls.ca_file or tls.cert_file
            context: TLSContext = built or (tls.ssl_context() if files else tls.ssl_context)
            client = self._clients[key] = Client(FreshTransport(context, self.slots, http2))
        return client

    def pools(self) -> list[FreshConnections]:
        return [client.transport.connections for client in self._clients.values()]

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
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
