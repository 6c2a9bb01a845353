"""Waiting for what happens outside the test (a server starting, an alert firing): one loop,
whose failure says what was awaited and how the logs of the processes involved end."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
# What was awaited, or a function that says it when the wait fails (what is still missing).
What = str | Callable[[], str]


def tails(logs: Iterable[Path], size: int = 3000) -> str:
    """The last `size` characters of each log that exists, each under its name."""
    return "".join(
        f"\n--- {path.name}\n{path.read_text(errors='replace')[-size:]}"
        for path in logs
        if path.exists()
    )


def _timed_out(timeout: float, what: What, logs: Iterable[Path]) -> AssertionError:
    said = what() if callable(what) else what
    return AssertionError(f"waited {timeout:g}s for {said}{tails(logs)}")


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    *,
    what: What,
    logs: Iterable[Path] = (),
    interval: float = 0.2,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """The first truthy value of `condition`, asked every `interval` seconds for `timeout`
    seconds; an exception in `ignore` counts as not yet (a server still starting up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except ignore:
            pass
        else:
            if found:
                return found
        time.sleep(interval)
    raise _timed_out(timeout, what, logs)


async def wait_until_async(
    condition: Callable[[], Awaitable[T]],
    timeout: float,  # noqa: ASYNC109 (as wait_until's: a timeout would not say what was awaited)
    *,
    what: What,
    logs: Iterable[Path] = (),
    interval: float = 0.1,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """`wait_until` for a test whose own event loop serves what it waits for (a webhook, an
    in-process app): `condition` is async, and the sleeps leave that loop running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = await condition()
        except ignore:
            pass
        else:
            if found:
                return found
        await asyncio.sleep(interval)
    raise _timed_out(timeout, what, logs)


def wait_port(port: int, up: bool = True, timeout: float = 20) -> None:
    """Until the loopback port accepts connections (`up`) or refuses them."""

    def as_wanted() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return (sock.connect_ex(("127.0.0.1", port)) == 0) == up

    wait_until(
        as_wanted, timeout, what=f"port {port} to go {'up' if up else 'down'}", interval=0.05
    )


def wait_http(
    url: str,
    timeout: float,
    *,
    process: subprocess.Popen[Any] | None = None,
    logs: Iterable[Path] = (),
    interval: float = 0.2,
) -> None:
    """Until `url` answers 200; if `process`, the server, exits first, fail at once."""
    logs = list(logs)

    def answers() -> bool:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{url}: its server exited with {process.returncode}{tails(logs)}")
        return httpx.get(url, timeout=2).status_code == 200

    wait_until(
        answers,
        timeout,
        what=f"{url} to answer 200",
        logs=logs,
        interval=interval,
        ignore=(httpx.TransportError,),
    )
