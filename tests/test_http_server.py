"""The HTTP/1.1 server under the endpoints (exporter/http_server.py), spoken to byte by byte
over a real loopback socket: keep-alive and its idle limit, pipelining, HEAD, 100-continue,
the body and head limits, what h11 refuses, and a handler cancelled when its client leaves."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from stackprobe.http_server import (
    BODY_MAX_BYTES,
    HEAD_MAX_BYTES,
    Connections,
    Request,
    Response,
    serve,
)

IDLE = 0.6


class Recorder:
    """A handler that echoes what it was asked, and can be told to hang."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.hang = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        if request.path == "/hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.path == "/fail":
            raise RuntimeError("CANARY-handler-secret")
        query = ",".join(f"{k}={v}" for k, values in request.query.items() for v in values)
        text = f"{request.method} {request.path} {query} {len(request.body)}"
        return Response.text(text, headers={"X-Host": request.host})


@asynccontextmanager
async def server() -> AsyncIterator[tuple[int, Recorder, Connections]]:
    recorder, connections = Recorder(), Connections()
    sock = socket.create_server(("127.0.0.1", 0))
    listening = await serve(recorder, sock, None, connections, IDLE)
    try:
        yield sock.getsockname()[1], recorder, connections
    finally:
        listening.close()
        connections.close()
        await asyncio.sleep(0)


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[str, bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length), 5)
    return head, body


async def hung_up(reader: asyncio.StreamReader) -> bool:
    """The server closed: an end of stream, or a reset when it cut a sender off."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionError:
        return True


def status(head: str) -> int:
    return int(head.split(" ", 2)[1])


async def test_keep_alive_answers_requests_in_order_on_one_connection() -> None:
    async with server() as (port, recorder, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n in range(3):
            writer.write(f"GET /metrics?name%5B%5D=up&n={n} HTTP/1.1\r\nHost: h:1\r\n\r\n".encode())
            head, body = await read_answer(reader)
            assert status(head) == 200 and "date:" in head.lower()
            assert body == f"GET /metrics name[]=up,n={n} 0".encode()
            assert "x-host: h:1" in head.lower()
        writer.close()
    assert len(recorder.seen) == 3


async def test_the_absolute_form_a_proxy_sends_is_the_same_path() -> None:
    async with server() as (port, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET http://h:1/metrics?a=1 HTTP/1.1\r\nHost: h:1\r\n\r\n")
        assert (await read_answer(reader))[1] == b"GET /metrics a=1 0"
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with server() as (port, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(f"GET /p{n} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for n in range(5)))
        bodies = [(await read_answer(reader))[1] for _ in range(5)]
        assert bodies == [f"GET /p{n}  0".encode() for n in range(5)]
        writer.close()


async def test_head_gets_the_length_but_no_body_and_post_bodies_arrive_whole() -> None:
    async with server() as (port, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
        head, _ = await read_answer(reader, head_only=True)
        assert "content-length: 10" in head.lower()  # of "HEAD /x  0", not sent
        writer.write(b"POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
        await asyncio.sleep(0.05)
        writer.write(b"cde")
        _, body = await read_answer(reader)  # the HEAD answer had no body to skip
        assert body == b"POST /r  5"
        writer.close()


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with server() as (port, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(b"abc")
        _, body = await read_answer(reader)
        assert body == b"POST /r  3"
        writer.close()


async def test_what_h11_refuses_or_is_too_large_gets_an_answer_and_a_hang_up() -> None:
    async with server() as (port, recorder, _):
        too_long = BODY_MAX_BYTES + 1
        cases = [
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
            (b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * HEAD_MAX_BYTES, 431),
            (f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {too_long}\r\n\r\n".encode(), 413),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (f"{BODY_MAX_BYTES:x}\r\n".encode() + b"a" * BODY_MAX_BYTES + b"\r\n") * 2,
                413,
            ),
        ]
        for request, expected in cases:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head, _ = await read_answer(reader)
            assert status(head) == expected, (request[:40], head)
            assert "connection: close" in head.lower()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # hung up
            writer.close()
    assert recorder.seen == []


async def test_a_request_must_arrive_whole_within_the_idle_limit_however_it_trickles() -> None:
    async with server() as (port, recorder, connections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        with_bytes = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + b"a" * 100
        try:
            for byte in with_bytes:  # a byte every 50 ms: 5 s of bytes, each resetting nothing
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        assert await hung_up(reader)
        assert time.monotonic() - started < IDLE + 1
        assert recorder.seen == [] and connections.open == set()
        writer.close()
        # and an idle keep-alive connection is closed after its last answer
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await read_answer(reader)
        answered = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert IDLE - 0.1 < time.monotonic() - answered < IDLE + 1
        writer.close()


async def test_a_client_that_hangs_up_cancels_its_handler_and_a_failing_one_gets_500() -> None:
    async with server() as (port, recorder, connections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hang HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.wait_for(recorder.cancelled.wait(), 5)

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n")
        head, body = await read_answer(reader)
        assert status(head) == 500 and b"CANARY" not in body
        writer.write(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")  # the connection goes on
        assert (await read_answer(reader))[1] == b"GET /after  0"
        writer.close()
        await asyncio.sleep(0.1)
        assert connections.open == set()


async def test_http_1_0_gets_its_answer_then_the_end() -> None:
    async with server() as (port, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /old HTTP/1.0\r\n\r\n")
        head, body = await read_answer(reader)
        assert head.startswith("HTTP/1.1 200") and body == b"GET /old  0"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def test_a_pipelined_flood_is_read_no_faster_than_it_is_answered() -> None:
    """A client that sends requests back to back, reading the answers, must not make the
    server buffer what it has not parsed yet (it reached 500 MiB in 6 s before the fix)."""
    async with server() as (port, recorder, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        burst = b"GET /f HTTP/1.1\r\nHost: h\r\n\r\n" * 20_000
        before, peak, answered = rss_mib(), 0.0, 0

        async def read_answers() -> None:
            nonlocal answered
            while True:
                await read_answer(reader)
                answered += 1

        reading = asyncio.create_task(read_answers())
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            writer.write(burst)
            await writer.drain()
            peak = max(peak, rss_mib())
        reading.cancel()
        writer.close()
        assert answered > 1000  # it was served all along
        assert peak - before < 64, f"RSS grew {peak - before:.0f} MiB"
    assert len(recorder.seen) >= answered


async def test_a_last_answer_the_client_never_reads_is_cut_off_after_the_idle_limit() -> None:
    async def big(request: Request) -> Response:
        return Response(200, b"x" * (32 * 1024 * 1024))

    connections = Connections()
    sock = socket.create_server(("127.0.0.1", 0))
    listening = await serve(big, sock, None, connections, IDLE)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        writer.write(b"GET /big HTTP/1.0\r\n\r\n")  # HTTP/1.0: the answer is the last
        await asyncio.sleep(0.3)
        assert len(connections.open) == 1  # still sending
        await asyncio.sleep(IDLE + 1)
        assert connections.open == set()
        writer.close()
    finally:
        listening.close()
        connections.close()


async def test_headers_beyond_latin1_and_odd_targets_still_get_an_answer() -> None:
    async def utf8(request: Request) -> Response:
        return Response.text("ok", headers={"Content-Security-Policy": "default-src über.example"})

    connections = Connections()
    sock = socket.create_server(("127.0.0.1", 0))
    listening = await serve(utf8, sock, None, connections, IDLE)
    port = sock.getsockname()[1]
    try:
        for request, expected in (
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 200),
            (b"GET http://[::1/metrics HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                400,
            ),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head, _ = await read_answer(reader)
            assert status(head) == expected, (request, head)
            if expected == 200:
                assert "über.example" in head.encode("latin-1").decode()
            writer.close()
    finally:
        listening.close()
        connections.close()
