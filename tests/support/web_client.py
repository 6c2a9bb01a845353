"""stackprobe's web surface on a loopback port of the test's own process, and a client for
it: the real listener and HTTP server (exporter/http_server.py), not a stand-in."""

from __future__ import annotations

from typing import Any

import aiohttp

from stackprobe.http_server import Handler
from stackprobe.server import Listener


class WebClient:
    """Serves `handler` once started; get() and post() take paths and return the answer
    with its body already read."""

    def __init__(self, handler: Handler) -> None:
        self._listener = Listener(handler, "127.0.0.1", 0)
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.port}"

    async def start_server(self) -> None:
        await self._listener.start(None)
        self._session = aiohttp.ClientSession(base_url=self.url)

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("POST", path, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        assert self._session is not None, "start_server() first"
        response = await self._session.request(method, path, **kwargs)
        await response.read()
        return response

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._listener.stop()
