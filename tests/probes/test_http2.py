"""The http kind over HTTP/2 (`enable_http2`), against a real HTTP/2 server (Hypercorn)
offering h2 and http/1.1 by ALPN, as an ALB does."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.support.polling import wait_until_async
from tests.support.probing import RunProbe, make_target, samples_by_name
from tests.support.processes import free_port


async def version_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the HTTP version the request came in."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["http_version"].encode()})


@dataclass(frozen=True)
class Server:
    url: str
    ca_file: str


@pytest.fixture
async def h2_server(tmp_path: Path) -> AsyncIterator[Server]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = str(cert), str(key)
    config.accesslog = config.errorlog = None
    stopped = asyncio.Event()
    task = asyncio.create_task(serve(version_app, config, shutdown_trigger=stopped.wait))  # type: ignore[arg-type]

    async def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    await wait_until_async(listening, 10, what="Hypercorn to listen")
    yield Server(f"https://127.0.0.1:{port}/", str(ca_file))
    stopped.set()
    await task


def target(server: Server, **keys: Any) -> Any:
    raw = {"name": "h2", "kind": "http", "url": server.url, "timeout": "3s"}
    return make_target({**raw, "tls": {"ca_file": server.ca_file}, **keys})


async def test_enable_http2_speaks_http2_when_the_server_offers_it(
    run_probe: RunProbe, h2_server: Server
) -> None:
    result = await run_probe(target(h2_server, enable_http2=True, valid_http_versions=["HTTP/2.0"]))

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found["probe_http_version"] == {(): 2.0}
    assert found["probe_http_ssl"] == {(): 1.0}
    assert found["probe_http_duration_seconds"][("tls",)] > 0
    assert {("status", "HTTP/2 200 OK"), ("body", "2")} <= set(result.evidence)


async def test_without_it_the_same_server_is_asked_over_http11(
    run_probe: RunProbe, h2_server: Server
) -> None:
    result = await run_probe(target(h2_server))

    assert result.success, result.detail
    assert samples_by_name(result)["probe_http_version"] == {(): 1.1}


async def test_valid_http_versions_fails_an_http2_answer_it_does_not_list(
    run_probe: RunProbe, h2_server: Server
) -> None:
    result = await run_probe(target(h2_server, enable_http2=True, valid_http_versions=["HTTP/1.1"]))

    assert (result.success, result.reason) == (False, "http_version")
    assert samples_by_name(result)["probe_http_version"] == {(): 2.0}
