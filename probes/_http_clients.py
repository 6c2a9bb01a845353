"""The `http_client:` resource: shared httpx clients (one per TLS profile) under one
connection limit, without a pool.

Every probe opens a fresh connection, so connect and TLS are measured each time, as
blackbox_exporter does. httpcore's connection pool would only get in the way: its bookkeeping
walks every queued request against every connection on each change, which at a few thousand
targets took the whole CPU (measured: 5,000 targets never got their first results). So the
clients keep httpx's request handling (URLs, redirects, auth, exception mapping) and swap the
pool inside its transport for `FreshConnections`: one new httpcore connection per request,
closed with the response, under a semaphore that is the connection limit.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field

from stackprobe._version import __version__
from stackprobe.probes._tls import BUILT_CONTEXTS, TLSConfig
from stackprobe.resource import ResourceEnv, Shared

USER_AGENT = f"stackprobe/{__version__}"


class _ClosingStream:
    """A response body that closes its connection, and frees its slot, when it is closed."""

    def __init__(self, stream: Any, release: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            await self._release()


class FreshConnections:
    """Stands in for httpcore's pool in httpx's transport: a new connection per request."""

    def __init__(self, ssl_context: ssl.SSLContext, slots: asyncio.Semaphore) -> None:
        self._ssl_context = ssl_context
        self._slots = slots
        self._open: set[httpcore.AsyncHTTPConnection] = set()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        wait = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise httpcore.PoolTimeout("every connection slot stayed busy") from None
        connection = httpcore.AsyncHTTPConnection(
            origin=request.url.origin, ssl_context=self._ssl_context
        )
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
        except BaseException:
            await release()
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_ClosingStream(response.stream, release),
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


class HttpClientSettings(BaseModel):
    """The `http_client:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Connections open at once across all http targets sharing a TLS profile; a probe waiting
    # past its deadline for one fails with reason pool_timeout.
    max_connections: int = Field(512, ge=1, le=65536)


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
        self._clients: dict[TLSConfig, httpx.AsyncClient] = {}

    def client(self, tls: TLSConfig) -> httpx.AsyncClient:
        """The client for a TLS profile; raises ssl.SSLError, OSError or ValueError when the
        profile's files cannot be used (they are checked at load, but may change since)."""
        client = self._clients.get(tls)
        if client is None:
            context = self._contexts.get(tls) or tls.ssl_context()
            transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False)
            # The seam: httpx's transport delegates every request to `_pool`.
            transport._pool = FreshConnections(context, self.slots)  # type: ignore[assignment]
            client = httpx.AsyncClient(
                transport=transport,
                trust_env=False,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT, "Connection": "close"},
            )
            # A policy that allows no domain: nothing is ever stored, so nothing is ever sent.
            client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            self._clients[tls] = client
        return client

    def pools(self) -> list[FreshConnections]:
        return [c._transport._pool for c in self._clients.values()]  # type: ignore[attr-defined]

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
