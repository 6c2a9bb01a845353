"""The one connection a target keeps between runs, for the kinds that keep one (postgres,
redis): its counters, its reconnect pause, and the run around it. Each kind brings only how to
open, use, close and judge its own connection."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from stackprobe.contract import ProbeContext, ProbeResult
from stackprobe.target import TargetConfig

# Longest pause, whatever the interval.
MAX_PAUSE_SECONDS = 60.0
# Times kept per error reason, for verdicts that count errors over a window (a rule's
# increase(...[5m]) >= N): enough to see N, bounded whatever the error rate.
RECENT_ERRORS_KEPT = 8

# How the run came by its connection, for the console's evidence: built once, not per run.
REUSED = ("connection", "reused: kept from an earlier run")
PAUSED = ("connection", "none: waiting out the reconnect pause after the last failure")
CONNECT_FAILED = ("connection", "new: the attempt failed")

C = TypeVar("C")  # the client library's connection
R = TypeVar("R", bound=StrEnum)  # the kind's failure reasons
W = TypeVar("W")  # what one run's work returns


@dataclass
class ReconnectPause:
    """After consecutive failures, the next connection attempt waits 1 s, 2, 4, ... up to the
    target's interval (so a recovery shows at the next run) and 60 s: a server out of slots
    is not hammered by short intervals. A run inside the pause reports the last failure."""

    failures: int = 0
    until: float = 0.0
    last: tuple[StrEnum, str] | None = None

    def pending(self, now: float) -> tuple[StrEnum, str] | None:
        """The last failure, with how long the pause still runs, while it runs."""
        if self.last is None or now >= self.until:
            return None
        reason, detail = self.last
        return reason, f"{detail} (next connection attempt in {self.until - now:.0f}s)"

    def failed(self, now: float, interval: float, reason: StrEnum, detail: str) -> None:
        self.failures += 1
        self.until = now + min(MAX_PAUSE_SECONDS, interval, 2.0 ** (self.failures - 1))
        self.last = (reason, detail)

    def succeeded(self) -> None:
        self.failures, self.last = 0, None


def _never(exc: BaseException) -> bool:
    return False


def one_line(exc: BaseException) -> str:
    """A failure's detail for logs and the landing page: its class and the start of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


class KeptConnection(ABC, Generic[C, R]):
    """A target's one connection, kept between runs, with its error counts by reason.

    The counters live as long as the target's config: a reload that changes the target
    starts them again, as it starts a new connection.
    """

    def __init__(self) -> None:
        self.connection: C | None = None
        self.errors: Counter[R] = Counter()
        self.connects = 0
        self.pause = ReconnectPause()
        self.last_used = 0.0  # event-loop time of the last run that succeeded
        self.recent: dict[R, deque[float]] = {}  # event-loop times of the latest errors
        self.via: tuple[str, str] = CONNECT_FAILED  # how this run came by its connection

    def count(self, reason: R) -> None:
        """One error of `reason`: counted for its metric, and timed for windowed verdicts."""
        self.errors[reason] += 1
        times = self.recent.get(reason)
        if times is None:
            times = self.recent[reason] = deque(maxlen=RECENT_ERRORS_KEPT)
        times.append(asyncio.get_running_loop().time())

    def errors_within(self, reasons: tuple[R, ...], seconds: float) -> int:
        """Errors of these reasons in the last `seconds`, up to RECENT_ERRORS_KEPT each."""
        since = asyncio.get_running_loop().time() - seconds
        return sum(t >= since for r in reasons for t in self.recent.get(r, ()))

    @abstractmethod
    async def close(self, connection: C, graceful: bool) -> None:
        """Close a connection the state has let go of, raising nothing. `graceful` when the
        target is going away (a goodbye is worth a short wait), not after a failure."""

    async def aclose(self) -> None:
        await self.drop(graceful=True)

    async def drop(self, graceful: bool = False) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await self.close(connection, graceful)

    def adopt(self, connection: C) -> None:
        """Keep a connection just opened, before the kind sets it up: a setup that fails
        still has it counted, and dropped with the failure."""
        self.connection = connection
        self.connects += 1

    async def use(
        self,
        connect: Callable[[], Awaitable[C]],
        work: Callable[[C], Awaitable[W]],
        *,
        closed: Callable[[BaseException], bool],
        counted: Callable[[BaseException], R | None],
    ) -> W:
        """Run `work` on the connection `connect` gives (the kept one, or a new one). If it
        fails because the server closed the kept connection since the last run (a restart, a
        proxy, an idle timeout), count that under `counted` (None: not an error), open a new
        one and try once more within the same deadline; a new connection is not retried.
        `via` says which it was, for the evidence."""
        kept = self.connection
        self.via = CONNECT_FAILED
        started = time.perf_counter()
        connection = await connect()
        if connection is kept:
            self.via = REUSED
        else:
            self.via = _opened(started, replaced=kept is not None)
        try:
            return await work(connection)
        except Exception as exc:
            if kept is None or not closed(exc):
                raise
            reason = counted(exc)
            if reason is not None:
                self.count(reason)
            await self.drop()
            self.via = CONNECT_FAILED
            started = time.perf_counter()
            # Inside the handler: a failure of the retry keeps the first as its context,
            # which a kind's classify may read.
            connection = await connect()
            self.via = _opened(started, replaced=True)
            return await work(connection)

    async def run(
        self,
        target: TargetConfig,
        ctx: ProbeContext,
        work: Callable[[], Awaitable[W]],
        *,
        ok: Callable[[W], ProbeResult],
        failed: Callable[[StrEnum, str], ProbeResult],
        classify: Callable[[BaseException], R],
        detail: Callable[[R, BaseException], str],
        keep: Callable[[BaseException], bool] = _never,
    ) -> ProbeResult:
        """One run of the target: `work` within the run's deadline, and `ok` of what it returns.
        A failure is classified, counted and returned, never raised; the connection is dropped
        and the reconnect pause grows, unless `keep` says the connection is still sound. While
        the pause runs and no connection is kept, the run reports the last failure."""
        loop = asyncio.get_running_loop()
        pending = self.pause.pending(loop.time()) if self.connection is None else None
        if pending is not None:
            self.via = PAUSED
            return failed(*pending)
        try:
            async with asyncio.timeout_at(ctx.deadline):
                value = await work()
        except Exception as exc:
            reason = classify(exc)
            self.count(reason)
            text = detail(reason, exc)
            if keep(exc):
                return failed(reason, text)
            await self.drop()
            self.pause.failed(loop.time(), target.interval, reason, text)
            return failed(reason, text)
        self.pause.succeeded()
        self.last_used = loop.time()
        return ok(value)


def _opened(started: float, *, replaced: bool) -> tuple[str, str]:
    """The evidence of a connection opened in this run: it costs a connect, so one format."""
    took = (time.perf_counter() - started) * 1000
    if replaced:
        return ("connection", f"new, replacing the kept one the server closed: {took:.1f} ms")
    return ("connection", f"new: connected in {took:.1f} ms")
