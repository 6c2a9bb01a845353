"""One asyncio task per target: spread start times, a deadline per run, results swapped in whole.

Runs are placed at `phase + k * interval`, the phase taken from a hash of the target's name
(as Prometheus spreads its scrapes), so load is even and stays put across reloads. The first
run of a target comes sooner, within a few seconds of start, so a restarted stackprobe has
answers before a long interval has passed. Nothing here knows any probe kind.

Applying a config starts and cancels tasks a hundred at a time, letting the event loop turn in
between: 20,000 new targets started at once held the loop for ~0.8 s, and a scrape with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from stackprobe.contract import CoreReason, ProbeContext, ProbeKind, ProbeResult
from stackprobe.exposition import Exposition
from stackprobe.resource import Shared
from stackprobe.results import TargetResult
from stackprobe.selfmetrics import SelfMetrics
from stackprobe.target import TargetConfig

# How long past its deadline a probe may run before the scheduler cancels it. Probes enforce
# the deadline themselves (and so can say in which phase they stopped); this is the backstop.
GRACE_SECONDS = 0.5
# How long closing a target's state (its persistent connection) may take.
STATE_CLOSE_SECONDS = 2.0
# First runs after start (or after targets are added) are spread over this long at least, and
# longer when there are many, so that at most STARTUP_RATE runs start per second; never over
# more than the target's interval, which is where its runs would be anyway.
STARTUP_SPREAD_SECONDS = 5.0
STARTUP_RATE = 200.0
# An apply starts or cancels at most this many tasks per turn of the event loop (each costs a
# step of its own in the next turn, ~30 us) and works at most this long before it lets the
# turn end, so a scrape waits a few milliseconds, not the seconds 20,000 targets at once take.
TURN_TASKS = 100
TURN_SECONDS = 0.004


@dataclass(frozen=True)
class Applied:
    """What an apply changed, and in how many seconds every new target will have finished
    its first run."""

    added: int = 0
    removed: int = 0
    changed: int = 0
    settled: float = 0.0


class _Turns:
    """Work done in slices: `await turn(n)` after each item, `n` the tasks it started or
    cancelled; it lets the loop's turn end once the slice has used its tasks or its time."""

    def __init__(self) -> None:
        self._tasks = 0
        self._since = time.perf_counter()

    async def __call__(self, tasks: int) -> None:
        self._tasks += tasks
        if self._tasks >= TURN_TASKS or time.perf_counter() - self._since >= TURN_SECONDS:
            await asyncio.sleep(0)
            self._tasks = 0
            self._since = time.perf_counter()


def phase_fraction(name: str) -> float:
    """Where in its interval a target runs, in [0, 1): stable across restarts and reloads."""
    return zlib.crc32(name.encode()) / 2**32


class Scheduler:
    """Runs the targets and hands each finished run to the exposition; knows no kind."""

    def __init__(
        self,
        *,
        kinds: Mapping[str, ProbeKind[Any]],
        exposition: Exposition,
        metrics: SelfMetrics,
        resources: Mapping[Shared[Any, Any], Any],
    ) -> None:
        self._kinds = kinds
        self._exposition = exposition
        self._metrics = metrics
        self._resources: Mapping[Shared[Any, Any], Any] = {}
        self._by_kind: dict[str, Mapping[Shared[Any, Any], Any]] = {}
        self.use(resources)
        self._tasks: dict[str, tuple[TargetConfig, asyncio.Task[None]]] = {}
        self._wanted: dict[str, TargetConfig] = {}
        self._spread_floor = STARTUP_SPREAD_SECONDS
        self._applying = asyncio.Lock()
        self._stopped = False
        # Cancelled tasks of each target still closing their state, which the target's next
        # task waits for: a target never holds two connections, however fast reloads come.
        self._closing: dict[str, set[asyncio.Task[None]]] = {}
        self._restarts: dict[str, int] = {}
        # Every target's slots are counted from this one instant, so a target keeps its
        # place when its task is replaced (a reload, a restart after a crash).
        self._epoch = asyncio.get_running_loop().time()
        self._log = structlog.get_logger("stackprobe.scheduler")

    def use(self, resources: Mapping[Shared[Any, Any], Any]) -> None:
        """The open resources for runs from now on (a reload renews them); each kind's runs
        see only those it declared."""
        self._resources = resources
        self._by_kind = {}

    def _resources_of(self, name: str) -> Mapping[Shared[Any, Any], Any]:
        found = self._by_kind.get(name)
        if found is None:
            declared = self._kinds[name].resources
            found = self._by_kind[name] = {shared: self._resources[shared] for shared in declared}
        return found

    @property
    def targets(self) -> list[TargetConfig]:
        """The targets the last `apply` asked for, whether or not their tasks have started."""
        return list(self._wanted.values())

    def apply(
        self, targets: Sequence[TargetConfig], spread_floor: float = STARTUP_SPREAD_SECONDS
    ) -> asyncio.Task[Applied]:
        """Run exactly these targets: unchanged ones keep their task and their last result.
        New ones start within `spread_floor` (longer when there are many: STARTUP_RATE); 0
        for targets taken over from a replica that died, whose series are missing meanwhile.

        `targets` says so at once; the returned task does it, in slices that leave the event
        loop to scrapes and runs in between, and says what it changed. A changed target gets
        a new task but keeps showing its last result until the new task has one, so a reload
        never makes its series go absent; a removed target's go before the task ends.
        """
        self._wanted = {target.name: target for target in targets}
        self._spread_floor = spread_floor
        return asyncio.create_task(self._converge(), name="apply targets")

    async def _converge(self) -> Applied:
        """Bring the running tasks to what was last asked for. One at a time: a later apply
        waits, then finds what this one left and does only the rest."""
        async with self._applying:
            wanted = self._wanted
            turn = _Turns()
            removed = changed = 0
            for name in list(self._tasks):
                entry = self._tasks.get(name)  # a died task may have been restarted meanwhile
                if entry is None or wanted.get(name) == entry[0]:
                    await turn(0)
                    continue
                if self._stopped:
                    return Applied()
                task = entry[1]
                task.cancel()
                del self._tasks[name]
                closing = self._closing.setdefault(name, set())
                closing.add(task)
                task.add_done_callback(closing.discard)
                if name in wanted:
                    changed += 1
                else:
                    removed += 1
                    self._exposition.remove(name)
                    self._restarts.pop(name, None)
                await turn(1)
            new = [target for name, target in wanted.items() if name not in self._tasks]
            spread = max(self._spread_floor, len(new) / STARTUP_RATE)
            for target in new:
                if self._stopped:
                    return Applied()
                self._start(target, spread)
                await turn(1)
            counts = Counter(target.kind for target in wanted.values())
            self._metrics.set_kinds(dict(counts), self._kinds)
            settled = max(
                (min(t.interval, spread) + t.timeout + GRACE_SECONDS for t in new), default=0.0
            )
            return Applied(len(new) - changed, removed, changed, settled)

    def _start(self, target: TargetConfig, spread: float, pause: float = 0.0) -> None:
        task = asyncio.create_task(self._loop(target, spread, pause), name=f"probe {target.name}")
        task.add_done_callback(self._ended)
        self._tasks[target.name] = (target, task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A target's task only ends when cancelled; if it died, say so and start it again."""
        if task.cancelled():
            # The task keeps its CancelledError, whose traceback holds the task's frames,
            # which hold the task: a cycle only a full collection frees, and none does once
            # it is frozen (app.py). Taking the error out leaves the task and all its target
            # kept to reference counting, which frees them now.
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
            return
        if task.exception() is None:
            return
        for target, running in list(self._tasks.values()):
            if running is task:
                # Back off, up to the interval, so a crash on every run stays one log line a
                # run rather than becoming a hot loop.
                count = self._restarts[target.name] = self._restarts.get(target.name, 0) + 1
                pause = min(target.interval, 2.0 ** (count - 1))
                self._log.error(
                    "a target's task died; restarting it (a stackprobe bug)",
                    kind=target.kind,
                    target=target.name,
                    restart_in_seconds=pause,
                    exc_info=task.exception(),
                )
                self._metrics.task_restarts.labels(target.kind).inc()
                self._start(target, STARTUP_SPREAD_SECONDS, pause=pause)

    async def stop(self) -> None:
        self._stopped = True  # an apply under way starts nothing more
        running = [task for _, task in self._tasks.values()]
        closing = [task for tasks in self._closing.values() for task in tasks]
        self._tasks.clear()
        for task in running:
            task.cancel()
        # Tasks already closing are waited for, not cancelled again mid-close.
        await asyncio.gather(*running, *closing, return_exceptions=True)

    async def _loop(self, target: TargetConfig, startup_spread: float, pause: float) -> None:
        closing = self._closing.get(target.name)
        if closing:
            # The tasks this one replaces close their connections first: a target never
            # holds two, even for the moment of a reload.
            await asyncio.wait(list(closing))
        if pause:
            await asyncio.sleep(pause)
        loop = asyncio.get_running_loop()
        log = self._log.bind(kind=target.kind, target=target.name)
        interval = target.interval
        anchor = self._epoch
        offset = phase_fraction(target.name) * interval
        due = loop.time() + phase_fraction(target.name) * min(interval, startup_spread)
        previous: ProbeResult | None = None
        steady = False
        kind = self._kinds[target.kind]
        state = kind.state(target) if kind.state is not None else None
        try:
            while True:
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._metrics.schedule_lag.observe(max(0.0, loop.time() - due))
                record = await self.run_once(target, state, log)
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    return  # replaced or removed while running: its result is no longer wanted
                self._exposition.put(record)
                _log_transition(log, previous, record.result)
                previous = record.result
                slots_passed = math.floor((loop.time() - anchor - offset) / interval) + 1
                next_due = anchor + offset + slots_passed * interval
                if steady and next_due - due > interval * 1.5:
                    skipped = round((next_due - due) / interval) - 1
                    self._metrics.runs_skipped.labels(target.kind).inc(skipped)
                due, steady = next_due, True
        finally:
            if state is not None:
                await _close_state(state, log)

    async def run_once(
        self, target: TargetConfig, state: Any = None, log: Any = None
    ) -> TargetResult:
        """One run of one target, guarded and timed; never raises but on cancel. Rendered
        by the exposition, not yet published: a run its target no longer wants is dropped."""
        kind = self._kinds[target.kind]
        log = log or self._log.bind(kind=target.kind, target=target.name)
        loop = asyncio.get_running_loop()
        started_at = time.time()
        started = loop.time()
        deadline = started + target.timeout
        ctx = ProbeContext(deadline, state, self._resources_of(target.kind))
        try:
            async with asyncio.timeout_at(deadline + GRACE_SECONDS):
                result = await kind.probe(target, ctx)
        except TimeoutError:
            result = ProbeResult.failed(
                CoreReason.TIMEOUT,
                f"the probe ran past its {target.timeout:g}s deadline and was cancelled",
            )
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # stop() or apply() is ending this target: let it end
            log.error(
                "probe let a stray cancellation escape; this is a stackprobe bug", exc_info=True
            )
            result = ProbeResult.failed(
                CoreReason.INTERNAL_ERROR, f"probe raised {type(exc).__name__}; see the log"
            )
        except Exception as exc:
            log.error("probe raised; this is a stackprobe bug", exc_info=True)
            result = ProbeResult.failed(
                CoreReason.INTERNAL_ERROR, f"probe raised {type(exc).__name__}; see the log"
            )
        duration = loop.time() - started
        record = self._exposition.render(target, result, started_at, duration)
        outcome = "success" if record.result.success else "failure"
        self._metrics.ran(target.kind, outcome, duration)
        return record


async def _close_state(state: Any, log: Any) -> None:
    """Close a target's state within a bound, whatever it raises: a peer that hangs on
    goodbye must not hold up a reload or a shutdown."""
    try:
        async with asyncio.timeout(STATE_CLOSE_SECONDS):
            await state.aclose()
    except Exception:
        log.warning("closing the target's connection failed", exc_info=True)


def _log_transition(log: Any, previous: ProbeResult | None, result: ProbeResult) -> None:
    """Say it once when a target starts failing, changes reason or recovers; the rest at debug."""
    if not result.success:
        if previous is None or previous.success or previous.reason != result.reason:
            log.warning("probe failing", reason=result.reason, detail=result.detail)
        else:
            log.debug("probe still failing", reason=result.reason, detail=result.detail)
    elif previous is not None and not previous.success:
        log.info("probe recovered", was=previous.reason)
    else:
        log.debug("probe ok")
