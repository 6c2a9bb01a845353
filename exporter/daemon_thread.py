"""Blocking work that may never end, run where it cannot hold stackprobe up.

A read of a FIFO nobody writes, or of a mount that stopped answering, blocks its thread for
good. On the loop's executor such a thread is joined when the loop's runner ends, so a SIGTERM
would wait for it; a daemon thread of its own is left behind instead, and whoever awaits the
future can give up on it (a timeout, a shutdown) while it runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_in_daemon_thread(work: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`work()` on a new daemon thread; its result or exception on a future of the running
    loop. Cancelling the future, or setting it, abandons the work: its outcome is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # abandoned
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # set when error is None

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except Exception as exc:  # handed to the loop, whose caller says what it was
            error = exc
        # RuntimeError: the loop has closed, stackprobe stopped while this ran.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
