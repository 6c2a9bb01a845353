"""A timer per target between runs and a task only while it runs: spread start times, a
deadline per run, results swapped in whole.

Runs are placed at `phase + k * interval`, the phase taken from a hash of the target's name
(as Prometheus spreads its scrapes), so load is even and stays put across reloads. The first
run of a target comes sooner, within a few seconds of start, so a restarted stackprobe has
answers before a long interval has passed. Nothing here knows any probe kind.

Between runs a target is a small record and one `loop.call_at` timer (0.5 KB with uvloop),
not a task asleep in `asyncio.sleep` (1.9 KB: the task, its coroutine frame, the sleep's
future and timer, asyncio's weak set of tasks); its logger is bound only when it has
something to say. A task exists only while a run is under way, while a target waits for the
states it replaces to close, or while it waits out its back-off after a crash.

Applying a config starts and stops targets a hundred at a time, letting the event loop turn
in between: 20,000 new targets started at once held the loop for ~0.8 s, and a scrape with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
# An apply starts or stops at most this many targets per turn of the event loop (a timer, a
# state, perhaps a task each) and works at most this long before it lets the turn end, so a
# scrape waits a few milliseconds, not the seconds 20,000 targets at once take.
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
    """Work done in slices: `await turn(n)` after each item, `n` the targets it started or
    stopped; it lets the loop's turn end once the slice has used its count or its time."""

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


class _Target:
    """What a started target keeps between its runs: a few fields, not a task and its frames.
    Itself the timer's callback (`loop.call_at(due, record)`), so the timer holds no bound
    method or argument tuple of its own."""

    __slots__ = ("config", "due", "offset", "previous", "scheduler", "state", "task", "timer")

    def __init__(self, scheduler: Scheduler, config: TargetConfig) -> None:
        self.scheduler = scheduler
        self.config = config
        # Where in each interval its runs fall, counted from the scheduler's epoch.
        self.offset = phase_fraction(config.name) * config.interval
        self.state: Any = None  # the kind's state, from the first run's arming to retirement
        self.due = 0.0  # when the next (or the current) run is due, event-loop time
        self.previous: ProbeResult | None = None  # the last run's result, once it has one
        self.timer: asyncio.TimerHandle | None = None  # set between runs only
        self.task: asyncio.Task[None] | None = None  # set while a run or a wait is under way

    def __call__(self) -> None:
        """The timer fired: the run gets a task for as long as it lasts."""
        self.timer = None
        scheduler = self.scheduler
        self.task = scheduler._loop.create_task(
            scheduler._run(self), name=f"probe {self.config.name}"
        )


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
        self._targets: dict[str, _Target] = {}
        self._wanted: dict[str, TargetConfig] = {}
        self._spread_floor = STARTUP_SPREAD_SECONDS
        self._applying = asyncio.Lock()
        self._stopped = False
        # Tasks of each retired target still closing its state (a cancelled run, or the
        # closing of a state between runs), which the target's next start waits for: a
        # target never holds two connections, however fast reloads come.
        self._closing: dict[str, set[asyncio.Task[None]]] = {}
        self._restarts: dict[str, int] = {}
        self._loop = asyncio.get_running_loop()  # the one its timers and runs are on
        # Every target's slots are counted from this one instant, so a target keeps its
        # place when it is started again (a reload, a restart after a crash).
        self._epoch = self._loop.time()
        self._log = structlog.get_logger("stackprobe.scheduler")
        # The same logger resolved from the logging config, renewed by each apply (as a
        # target's bound logger was when its task started): what a run's debug line goes
        # to, a no-op when the level hides it, without assembling a logger for every run.
        self._run_log: Any = self._log.bind()

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

    def _log_for(self, target: TargetConfig) -> Any:
        """A target's logger, bound when it has something to say rather than kept by every
        target for the few lines it ever writes."""
        return self._run_log.bind(kind=target.kind, target=target.name)

    @property
    def targets(self) -> list[TargetConfig]:
        """The targets the last `apply` asked for, whether or not they have started."""
        return list(self._wanted.values())

    def apply(
        self, targets: Sequence[TargetConfig], spread_floor: float = STARTUP_SPREAD_SECONDS
    ) -> asyncio.Task[Applied]:
        """Run exactly these targets: unchanged ones keep their schedule, their state and
        their last result. New ones start within `spread_floor` (longer when there are many:
        STARTUP_RATE); 0 for targets taken over from a replica that died, whose series are
        missing meanwhile.

        `targets` says so at once; the returned task does it, in slices that leave the event
        loop to scrapes and runs in between, and says what it changed. A changed target is
        started anew but keeps showing its last result until its first new run has one, so
        a reload never makes its series go absent; a removed target's go before its run (if
        one is under way) ends.
        """
        self._wanted = {target.name: target for target in targets}
        self._spread_floor = spread_floor
        return asyncio.create_task(self._converge(), name="apply targets")

    async def _converge(self) -> Applied:
        """Bring the started targets to what was last asked for. One at a time: a later apply
        waits, then finds what this one left and does only the rest."""
        async with self._applying:
            self._run_log = self._log.bind()
            wanted = self._wanted
            turn = _Turns()
            removed = changed = 0
            for name in list(self._targets):
                entry = self._targets.get(name)  # a crashed target may have been restarted
                if entry is None or wanted.get(name) == entry.config:
                    await turn(0)
                    continue
                if self._stopped:
                    return Applied()
                del self._targets[name]
                ending = self._retire(entry)
                if ending is not None:
                    closing = self._closing.setdefault(name, set())
                    closing.add(ending)
                    ending.add_done_callback(functools.partial(self._closed, name))
                if name in wanted:
                    changed += 1
                else:
                    removed += 1
                    self._exposition.remove(name)
                    self._restarts.pop(name, None)
                await turn(1)
            new = [target for name, target in wanted.items() if name not in self._targets]
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

    def _closed(self, name: str, task: asyncio.Task[None]) -> None:
        """A retired target's task has ended: its next start need not wait for it, and a
        name no longer closing anything keeps no empty set."""
        closing = self._closing.get(name)
        if closing is not None:
            closing.discard(task)
            if not closing:
                del self._closing[name]

    def _start(self, target: TargetConfig, spread: float, pause: float = 0.0) -> None:
        """Start a target: at once a timer for its first run, or a task that first waits for
        the states it replaces to close, or for its back-off after a crash."""
        entry = self._targets[target.name] = _Target(self, target)
        if pause or self._closing.get(target.name):
            entry.task = asyncio.create_task(
                self._begin(entry, spread, pause), name=f"probe {target.name}"
            )
            return
        try:
            self._arm(entry, spread)
        except Exception as exc:
            self._crashed(entry, exc)

    async def _begin(self, entry: _Target, spread: float, pause: float) -> None:
        """The one wait a target may have before its first run, in a task of its own until
        its timer is set."""
        try:
            closing = self._closing.get(entry.config.name)
            if closing:
                # The tasks this target replaces close their connections first: a target
                # never holds two, even for the moment of a reload.
                await asyncio.wait(list(closing))
            if pause:
                await asyncio.sleep(pause)
            entry.task = None
            self._arm(entry, spread)
        except Exception as exc:
            self._crashed(entry, exc)

    def _arm(self, entry: _Target, startup_spread: float) -> None:
        """Open the target's state and set the timer of its first run, within its phase of
        the startup spread."""
        target = entry.config
        kind = self._kinds[target.kind]
        loop = asyncio.get_running_loop()
        entry.due = loop.time() + phase_fraction(target.name) * min(target.interval, startup_spread)
        entry.state = kind.state(target) if kind.state is not None else None
        entry.timer = loop.call_at(entry.due, entry)

    async def _run(self, entry: _Target) -> None:
        """One scheduled run of a target, then the timer of its next slot. A run its target
        was retired during is dropped (`_retire` closes the state); a run that crashed (a
        bug) closes its state, and its target starts again after a back-off."""
        target = entry.config
        loop = self._loop
        try:
            self._metrics.schedule_lag.observe(max(0.0, loop.time() - entry.due))
            record = await self.run_once(target, entry.state)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                return  # retired while running: its result is no longer wanted
            self._exposition.put(record)
            self._log_transition(target, entry.previous, record.result)
            steady = entry.previous is not None  # past its first run
            entry.previous = record.result
            interval = target.interval
            base = self._epoch + entry.offset
            next_due = base + (math.floor((loop.time() - base) / interval) + 1) * interval
            if steady and next_due - entry.due > interval * 1.5:
                skipped = round((next_due - entry.due) / interval) - 1
                self._metrics.runs_skipped.labels(target.kind).inc(skipped)
            entry.due = next_due
            entry.task = None
            entry.timer = loop.call_at(next_due, entry)
        except asyncio.CancelledError:
            # Whoever retired the target closes its state once this task has ended; a
            # cancellation from elsewhere (the event loop closing) closes it here.
            if self._targets.get(target.name) is entry:
                await self._close(entry)
            raise
        except Exception as exc:
            await self._close(entry)
            self._crashed(entry, exc)

    def _crashed(self, entry: _Target, exc: Exception) -> None:
        """A target's run or start raised (a bug): say so and start it again, unless it was
        retired meanwhile."""
        target = entry.config
        entry.task = None
        if self._targets.get(target.name) is not entry:
            return
        # Back off, up to the interval, so a crash on every run stays one log line a run
        # rather than becoming a hot loop.
        count = self._restarts[target.name] = self._restarts.get(target.name, 0) + 1
        pause = min(target.interval, 2.0 ** (count - 1))
        self._log_for(target).error(
            "a target's task died; restarting it (a stackprobe bug)",
            restart_in_seconds=pause,
            exc_info=exc,
        )
        self._metrics.task_restarts.labels(target.kind).inc()
        self._start(target, STARTUP_SPREAD_SECONDS, pause=pause)

    def _retire(self, entry: _Target) -> asyncio.Task[None] | None:
        """Stop a target no longer wanted (already out of `_targets`); the task that ends
        it, if any: its run (or wait) cancelled, then its state closed. Its state is closed
        here, not by the cancelled run, which may not have taken its first step."""
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        task = entry.task
        if task is not None:
            task.cancel()
            task.add_done_callback(self._ended)
            if entry.state is None:
                return task
        elif entry.state is None:
            return None
        return asyncio.create_task(self._close(entry, task), name=f"close {entry.config.name}")

    async def _close(self, entry: _Target, after: asyncio.Task[None] | None = None) -> None:
        """Close a target's state (once the run `after` has ended) within a bound, whatever
        it raises: a peer that hangs on goodbye must not hold up a reload or a shutdown."""
        if after is not None:
            await asyncio.wait([after])
        state, entry.state = entry.state, None
        if state is None:
            return
        try:
            async with asyncio.timeout(STATE_CLOSE_SECONDS):
                await state.aclose()
        except Exception:
            self._log_for(entry.config).warning(
                "closing the target's connection failed", exc_info=True
            )

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        """A cancelled task keeps its CancelledError, whose traceback holds the task's
        frames, which hold the task: a cycle only a full collection frees, and none does once
        it is frozen (app.py). Taking the error out leaves the task and all its target to
        reference counting, which frees them now."""
        if task.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                task.result()

    async def stop(self) -> None:
        """Stop every target and wait until their states have closed, those closing already
        included: at shutdown, nothing is left holding a connection."""
        self._stopped = True  # an apply under way starts nothing more
        entries = list(self._targets.values())
        closing = [task for tasks in self._closing.values() for task in tasks]
        self._targets.clear()
        # Tasks already closing are waited for, not cancelled again mid-close.
        ending = [task for entry in entries if (task := self._retire(entry)) is not None]
        await asyncio.gather(*ending, *closing, return_exceptions=True)

    async def run_once(self, target: TargetConfig, state: Any = None) -> TargetResult:
        """One run of one target, guarded and timed; never raises but on cancel. Rendered
        by the exposition, not yet published: a run its target no longer wants is dropped."""
        kind = self._kinds[target.kind]
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
            self._log_for(target).error(
                "probe let a stray cancellation escape; this is a stackprobe bug", exc_info=True
            )
            result = ProbeResult.failed(
                CoreReason.INTERNAL_ERROR, f"probe raised {type(exc).__name__}; see the log"
            )
        except Exception as exc:
            self._log_for(target).error("probe raised; this is a stackprobe bug", exc_info=True)
            result = ProbeResult.failed(
                CoreReason.INTERNAL_ERROR, f"probe raised {type(exc).__name__}; see the log"
            )
        duration = loop.time() - started
        record = self._exposition.render(target, result, started_at, duration)
        outcome = "success" if record.result.success else "failure"
        self._metrics.ran(target.kind, outcome, duration)
        return record

    def _log_transition(
        self, target: TargetConfig, previous: ProbeResult | None, result: ProbeResult
    ) -> None:
        """Say it once when a target starts failing, changes reason or recovers; the rest at
        debug, its fields given with the line (a no-op when the level hides it)."""
        if not result.success:
            if previous is None or previous.success or previous.reason != result.reason:
                self._log_for(target).warning(
                    "probe failing", reason=result.reason, detail=result.detail
                )
            else:
                self._run_log.debug(
                    "probe still failing",
                    kind=target.kind,
                    target=target.name,
                    reason=result.reason,
                    detail=result.detail,
                )
        elif previous is not None and not previous.success:
            self._log_for(target).info("probe recovered", was=previous.reason)
        else:
            self._run_log.debug("probe ok", kind=target.kind, target=target.name)
