"""Shared httpx clients, one per TLS profile, each under the configured connection limit."""

from __future__ import annotations

import httpx

from stackprobe._version import __version__
from stackprobe.tls import TLSConfig

USER_AGENT = f"stackprobe/{__version__}"


class HttpClients:
    """Keep-alive is off on purpose: a fresh connection per probe measures connect and TLS
    every time, as blackbox_exporter does, and httpcore's pool costs more CPU than it saves
    under many concurrent targets (DESIGN.md, measured). `trust_env` is off so that a stray
    HTTP_PROXY or ~/.netrc never changes what a probe measures or sends.
    """

    def __init__(self, max_connections: int) -> None:
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=0)
        self._clients: dict[TLSConfig, httpx.AsyncClient] = {}

    def client(self, tls: TLSConfig) -> httpx.AsyncClient:
        client = self._clients.get(tls)
        if client is None:
            client = httpx.AsyncClient(
                verify=tls.ssl_context(),
                limits=self._limits,
                trust_env=False,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
            self._clients[tls] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
