"""The servers of blackbox_exporter's prober tests, written anew for stackprobe's suite: an
HTTP/1.1 server that answers exactly what a case says (Go's httptest server's defaults: a
Content-Length on every reply, nothing else unasked), and a DNS server over UDP or TCP
answering from a handler. tests/probes/test_blackbox_prober.py plays the cases on them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Self, cast

import dns.message
import pytest

from tests.support.processes import IN_CI

# A name that resolves to both loopback addresses (scripts/setup.sh writes it to
# /etc/hosts), as blackbox's TestDNSProtocol needs of "localhost".
DUAL_STACK_NAME = "stackprobe-dual-stack.localhost"


def dual_stack_name() -> str:
    """DUAL_STACK_NAME, when it resolves to both loopback addresses; else a clear failure on
    CI and a skip elsewhere (blackbox skips TestDNSProtocol where localhost lacks ::1)."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(DUAL_STACK_NAME, 53)}
    except socket.gaierror:
        found = set()
    if found != {"127.0.0.1", "::1"}:
        why = f"{DUAL_STACK_NAME} resolves to {sorted(found)}; scripts/setup.sh writes it"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    return DUAL_STACK_NAME


@dataclass(frozen=True)
class Seen:
    """A request as the server received it (header names lower-cased, the last value kept)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


Handler = Callable[[Seen], Reply]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


@dataclass
class HttpPeer:
    """One HTTP(S) server on 127.0.0.1, one request per connection, as an async context."""

    handler: Handler
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                name, colon, value = line.partition(":")
                if colon:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = Seen(method, target, headers, body)
            self.seen.append(seen)
            reply = self.handler(seen)
            out = [f"HTTP/1.1 {reply.status} {_phrase(reply.status)}"]
            out += [f"{name}: {value}" for name, value in reply.headers]
            if not any(name.lower() == "content-length" for name, _ in reply.headers):
                out.append(f"Content-Length: {len(reply.body)}")
            out.append("Connection: close")
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + reply.body)
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ssl.SSLError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


Answer = Callable[[dns.message.Message], dns.message.Message]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.answer(dns.message.from_wire(data)).to_wire(), addr)


@dataclass
class DnsPeer:
    """A DNS server over `transport`, on 127.0.0.1 or, `dual`, on both loopback addresses
    (one IPv6 socket that takes IPv4 too), as an async context."""

    answer: Answer
    transport: str = "udp"
    dual: bool = False
    port: int = 0
    _closers: list[Callable[[], object]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if self.dual else socket.AF_INET
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        sock = socket.socket(family, kind)
        if self.dual:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::" if self.dual else "127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        if self.transport == "udp":
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.answer), sock=sock)
            self._closers.append(transport.close)
        else:
            server = await asyncio.start_server(self._serve_tcp, sock=sock)
            self._closers.append(server.close)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for close in self._closers:
            close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                query = dns.message.from_wire(await reader.readexactly(length))
                wire = self.answer(query).to_wire()
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
