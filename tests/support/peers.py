"""Real misbehaving peers on loopback: health endpoints that hang, trickle, flood, lie or reset.

They run on their own event loop in a background thread, so the same servers serve in-process
probe tests and a stackprobe subprocess alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import trustme
from aiohttp import web

from tests.support.processes import free_port

HEALTHY = {"status": "ok", "db": True, "redis": True}
REDIS_DOWN = {"status": "fail", "db": True, "redis": False}
NESTED = {"status": "fail", "checks": {"redis": {"status": "fail"}, "db": {"status": "ok"}}}
BIG_BODY_BYTES = 50 * 1024 * 1024
BOMB_INFLATED_BYTES = 2 * 1024**3
AUTH_TOKEN = "Bearer CANARY-token-5f2c9e1d"


def gzip_bomb(inflated: int = BOMB_INFLATED_BYTES) -> bytes:
    """A valid gzip stream of `inflated` zero bytes, about 2 MiB for 2 GiB.

    After a full flush deflate forgets its history, so every further 64 MiB of zeros
    compresses to the same bytes and the stream is built by repetition, not by compressing
    gigabytes; the trailer carries the true CRC and size.
    """
    block = bytes(64 * 1024 * 1024)
    assert inflated % len(block) == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = compressor.flush(zlib.Z_FINISH)[:-8]  # the empty last block, without its trailer
    crc = 0
    for _ in range(inflated // len(block)):
        crc = zlib.crc32(block, crc)
    trailer = struct.pack("<II", crc, inflated & 0xFFFFFFFF)
    return head + repeat * (inflated // len(block) - 1) + final + trailer


@functools.cache
def brotli_bomb(inflated: int = BOMB_INFLATED_BYTES) -> bytes:
    """A valid brotli stream of `inflated` zero bytes, about 400 KB for 2 GiB."""
    compressor = brotli.Compressor(quality=1)
    block = bytes(1024 * 1024)
    parts = [compressor.process(block) for _ in range(inflated // len(block))]
    return b"".join(parts) + compressor.finish()


async def _bomb(request: web.Request, body: bytes, coding: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Content-Encoding": coding}
    )
    response.content_length = len(body)
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        for start in range(0, len(body), 65536):
            await response.write(body[start : start + 65536])
    return response


@dataclass
class Peers:
    """Base URLs and ports of every misbehaving peer, plus the CA that signs the good cert."""

    http: str = ""
    https_trusted: str = ""
    https_self_signed: str = ""
    https_expired: str = ""
    reset_port: int = 0
    garbage_port: int = 0
    close_port: int = 0
    closed_port: int = 0  # nothing listens here
    blackhole_port: int = 0  # accepts nothing: its backlog is full, so SYNs are dropped
    short_body_port: int = 0  # promises 100 bytes, sends 7, hangs up
    silent_port: int = 0  # accepts and reads, never answers (not even a TLS ClientHello)
    silent_open: list[int] = field(default_factory=lambda: [0])  # its connections open now
    hostile: dict[str, int] = field(default_factory=dict)  # HOSTILE's peers: name -> port
    ca_file: Path = Path()
    hits: dict[str, int] = field(default_factory=dict)
    recorded_headers: list[set[str]] = field(default_factory=list)


async def _json(request: web.Request, body: object, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _routes(peers: Peers, bomb: bytes) -> web.Application:
    app = web.Application()

    def count(path: str) -> None:
        peers.hits[path] = peers.hits.get(path, 0) + 1

    async def ok(request: web.Request) -> web.Response:
        count("ok")
        return await _json(request, HEALTHY)

    async def redis_down(request: web.Request) -> web.Response:
        return await _json(request, REDIS_DOWN, 503)

    async def nested(request: web.Request) -> web.Response:
        return await _json(request, NESTED, 503)

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def reflect_auth(request: web.Request) -> web.Response:
        """A hostile health page: the request's Authorization comes back as a component."""
        return await _json(request, {request.headers.get("Authorization", ""): True, "db": True})

    async def hang(request: web.Request) -> web.StreamResponse:
        count("hang")
        await asyncio.sleep(3600)
        return web.Response(text="too late")

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the prober hangs up; that is the point
            for _ in range(3600):
                await response.write(b" ")
                await asyncio.sleep(1)
        return response

    async def stream_body(response: web.StreamResponse, request: web.Request) -> None:
        await response.prepare(request)
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):  # the prober stops at its cap and hangs up
            for _ in range(BIG_BODY_BYTES // len(chunk)):
                await response.write(chunk)

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.content_length = BIG_BODY_BYTES
        await stream_body(response, request)
        return response

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await stream_body(response, request)
        return response

    async def gzip_bomb_handler(request: web.Request) -> web.StreamResponse:
        return await _bomb(request, bomb, "gzip")

    async def brotli_bomb_handler(request: web.Request) -> web.StreamResponse:
        return await _bomb(request, brotli_bomb(), "br")

    async def gzip_ok(request: web.Request) -> web.Response:
        body = zlib.compress(json.dumps(REDIS_DOWN).encode(), wbits=16 + zlib.MAX_WBITS)
        return web.Response(
            body=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    async def truncated_gzip(request: web.Request) -> web.Response:
        body = zlib.compress(json.dumps(HEALTHY).encode(), wbits=16 + zlib.MAX_WBITS)[:-12]
        return web.Response(
            body=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(
            body=bytes(range(256)) * 8, headers={"Content-Type": "application/octet-stream"}
        )

    async def invalid_json(request: web.Request) -> web.Response:
        return web.Response(text='{"status": "ok", "db": tru', content_type="application/json")

    async def redirect_loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/redirect-loop")

    async def redirect_once(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status\n")

    async def auth(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") == AUTH_TOKEN:
            return await _json(request, HEALTHY)
        return await _json(request, {"status": "unauthorized"}, 401)

    async def redirect_to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def set_cookie(request: web.Request) -> web.Response:
        response = await _json(request, HEALTHY)
        response.set_cookie("AWSALB", "sticky-to-task-1", path="/")
        return response

    async def record_headers(request: web.Request) -> web.Response:
        """Remembers which credential-like headers arrived (names only, never values)."""
        interesting = {"authorization", "x-api-token", "x-plain", "cookie"}
        peers.recorded_headers.append({h.lower() for h in request.headers} & interesting)
        return await _json(request, HEALTHY)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("seconds", "0.3")))
        return await _json(request, HEALTHY)

    async def echo(request: web.Request) -> web.Response:
        """The request's method and body, for a POST check's `body`."""
        return await _json(request, {"method": request.method, "body": await request.text()})

    for path, handler in {
        "/ok": ok,
        "/health/ready": ok,
        "/redis-down": redis_down,
        "/nested": nested,
        "/plain": plain,
        "/reflect-auth": reflect_auth,
        "/hang": hang,
        "/trickle": trickle,
        "/big": big,
        "/big-chunked": big_chunked,
        "/gzip-bomb": gzip_bomb_handler,
        "/brotli-bomb": brotli_bomb_handler,
        "/gzip-ok": gzip_ok,
        "/truncated-gzip": truncated_gzip,
        "/garbage": garbage,
        "/invalid-json": invalid_json,
        "/redirect-loop": redirect_loop,
        "/redirect-once": redirect_once,
        "/status/{code}": status,
        "/auth": auth,
        "/slow": slow,
        "/redirect-to": redirect_to,
        "/record-headers": record_headers,
        "/set-cookie": set_cookie,
        "/echo": echo,
    }.items():
        app.router.add_route("*", path, handler)
    return app


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n\r\n")
    await writer.drain()
    writer.close()


async def _short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    await writer.drain()
    writer.close()


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    writer.close()


def _silent(peers: Peers) -> Handler:
    """Never answers; counts the connections it holds, so a test sees when the prober has
    really closed its end (not only given up on it)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.silent_open[0] += 1
        try:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
        finally:
            peers.silent_open[0] -= 1
            writer.close()

    return handle


def _postgres_error(message: str) -> bytes:
    """An ErrorResponse packet as a PostgreSQL backend writes it before closing."""
    fields = b"".join(
        code + value.encode() + b"\0"
        for code, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "08P01"), (b"M", message))
    )
    return b"E" + struct.pack("!I", 4 + len(fields) + 1) + fields + b"\0"


def _response(head: str, body: bytes = b"") -> bytes:
    """`head` written with \\n (its blank last line included), sent with CRLF."""
    return head.replace("\n", "\r\n").encode() + body


@dataclass(frozen=True)
class Hostile:
    """A peer that reads the request, answers `reply` and hangs up; `greeting` it sends first,
    on connect, as servers that speak first (SSH, SMTP) do."""

    reply: bytes
    greeting: bytes = b""


# Replies a prober meets on a port it takes for HTTP, byte for byte; served one per port.
HOSTILE = {
    # Another protocol on the port.
    "ssh": Hostile(b"Invalid SSH identification string.\r\n", b"SSH-2.0-OpenSSH_9.2\r\n"),
    "http09": Hostile(b"<html><body>ready</body></html>\n"),  # HTTP/0.9: no status line
    "redis": Hostile(b"-ERR unknown command 'GET', with args beginning with: '/' 'HTTP/1.1' \r\n"),
    "postgres": Hostile(_postgres_error("invalid length of startup packet")),
    # HTTP that breaks its own framing or is cut short.
    "bad-chunk": Hostile(
        _response("HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\n\n")
        + b"zz\r\nhello\r\n0\r\n\r\n"
    ),
    "huge-length-cut": Hostile(
        _response("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 2147483648\n\n")
        + b"0123456789"
    ),
    "head-cut": Hostile(b"HTTP/1.1 200 OK\r\nContent-Type: text/pla"),
    "huge-headers": Hostile(
        b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * (1024 * 1024) + b"\r\n\r\nok"
    ),
    # A redirect no client can follow.
    "bad-location": Hostile(
        _response("HTTP/1.1 302 Found\nLocation: http://[::1/health\nContent-Length: 0\n\n")
    ),
    # Content codings that were not asked for (the request asks for gzip only).
    "br-503": Hostile(
        _response(
            "HTTP/1.1 503 Service Unavailable\nContent-Type: application/json\n"
            "Content-Encoding: br\nContent-Length: 6\n\n",
            b"\x0b\x02\x80{}\x03",
        )
    ),
    "br-200": Hostile(
        _response(
            "HTTP/1.1 200 OK\nContent-Type: text/html\nContent-Encoding: br\nContent-Length: 6\n\n",
            b"\x0b\x02\x80{}\x03",
        )
    ),
    "br-200-json": Hostile(
        _response(
            "HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Encoding: br\n"
            "Content-Length: 6\n\n",
            b"\x0b\x02\x80{}\x03",
        )
    ),
    "br-cut": Hostile(  # promises 100 bytes in a coding not asked for, sends 6, hangs up
        _response(
            "HTTP/1.1 200 OK\nContent-Type: text/html\nContent-Encoding: br\n"
            "Content-Length: 100\n\n",
            b"\x0b\x02\x80{}\x03",
        )
    ),
    "zstd-200": Hostile(
        _response(
            "HTTP/1.1 200 OK\nContent-Type: image/png\nContent-Encoding: zstd\n"
            "Content-Length: 9\n\n",
            b"\x28\xb5\x2f\xfd\x00\x58\x01\x00\x00",
        )
    ),
}


def _hostile(peer: Hostile) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):  # the prober may hang up first
            writer.write(peer.greeting)
            await reader.read(65536)
            writer.write(peer.reply)
            await writer.drain()
        writer.close()

    return handle


class PeerServers:
    """Starts every peer on a private loop in a daemon thread; `stop()` ends them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.peers = Peers()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []

    def start(self) -> Peers:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)
        return self.peers

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _site(self, app: web.Application, ssl_context: ssl.SSLContext | None) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def _raw(self, handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _start(self) -> None:
        bomb = await asyncio.to_thread(gzip_bomb)
        app = _routes(self.peers, bomb)
        self.peers.http = await self._site(app, None)
        trusted_ca, stranger_ca = trustme.CA(), trustme.CA()
        self.peers.ca_file = self.workdir / "ca.pem"
        trusted_ca.cert_pem.write_to_path(str(self.peers.ca_file))
        past = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        leaves = {
            "https_trusted": trusted_ca.issue_cert("127.0.0.1", "localhost"),
            "https_self_signed": stranger_ca.issue_cert("127.0.0.1", "localhost"),
            "https_expired": trusted_ca.issue_cert(
                "127.0.0.1", "localhost", not_before=past - dt.timedelta(days=90), not_after=past
            ),
        }
        for name, leaf in leaves.items():
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            leaf.configure_cert(context)
            setattr(self.peers, name, await self._site(_routes(self.peers, bomb), context))
        self.peers.reset_port = await self._raw(_reset)
        self.peers.garbage_port = await self._raw(_garbage)
        self.peers.close_port = await self._raw(_close)
        self.peers.short_body_port = await self._raw(_short_body)
        self.peers.silent_port = await self._raw(_silent(self.peers))
        for name, peer in HOSTILE.items():
            self.peers.hostile[name] = await self._raw(_hostile(peer))
        self.peers.closed_port = free_port()
        self.peers.blackhole_port = self._blackhole()

    def _blackhole(self) -> int:
        """A listener whose accept queue is full: a connect hangs as behind a dropping firewall."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        filler = socket.create_connection(("127.0.0.1", port), timeout=2)
        self._sockets = [listener, filler]
        return port

    async def _stop(self) -> None:
        for sock in getattr(self, "_sockets", []):
            sock.close()
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()
        # Handlers still hanging or trickling on purpose end here, not at interpreter exit.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


def main() -> None:
    """`python -m tests.support.peers DIR`: serve every peer until stdin closes; print where first.

    For tests that measure the prober's own memory, which peers in the same process would
    muddy (tracemalloc sees every thread).
    """
    import dataclasses
    import sys

    servers = PeerServers(Path(sys.argv[1]))
    peers = servers.start()
    print(json.dumps(dataclasses.asdict(peers), default=str), flush=True)
    sys.stdin.read()
    servers.stop()


if __name__ == "__main__":
    main()
