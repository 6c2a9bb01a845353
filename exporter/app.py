"""The running exporter: config, scheduler, results and exposition wired together, and reload.

A reload that fails keeps the previous config running, logs every problem and sets
`stackprobe_config_last_reload_successful 0`; one that succeeds restarts only the targets whose
config changed, so the others keep their results and their place in the schedule.

One reload runs at a time. Asking for one while one runs (SIGHUP, POST /-/reload) queues one
more, and only one: however many come, it reads the file once the running one has ended, so
the file as last written is what runs. A reload never stalls the event loop for long: the file
is read and checked on a thread of its own (a daemon, so a load that never ends, such as a
FIFO nobody writes, neither holds up a shutdown nor outlives `LOAD_LIMIT_SECONDS`), and the
targets are started and stopped in slices (see `Scheduler.apply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from stackprobe.cluster import (
    TARGET_OWNED,
    TARGET_REPLICAS,
    Cluster,
    MembershipFactory,
    membership,
    with_overrides,
)
from stackprobe.config import Config, ConfigError, load_config
from stackprobe.contract import MetricSpec, ProbeKind
from stackprobe.daemon_thread import run_in_daemon_thread
from stackprobe.exposition import CORE_METRICS, Exposition
from stackprobe.resource import ResourceEnv, Shared, declared
from stackprobe.results import ResultStore
from stackprobe.scheduler import (
    GRACE_SECONDS,
    STARTUP_RATE,
    STARTUP_SPREAD_SECONDS,
    Applied,
    Scheduler,
)
from stackprobe.secrets import Redactor
from stackprobe.selfmetrics import SelfMetrics
from stackprobe.target import TargetConfig

FULL_COLLECTION_EVERY = 100  # second-generation collections per full one (default 10)
# While new targets take their first runs (after start or a reload), what they keep (their
# task, its state) is frozen this often, and while their tasks are being started, more often:
# 20,000 new tasks frozen in one step took 60 ms, in steps of a tenth of a second ~5 ms each.
FREEZE_STEP_SECONDS = 2.0
FREEZE_STEP_APPLYING_SECONDS = 0.1
# A config load that has not ended after this long is abandoned (its thread is left to end,
# or not, on its own) and the reload fails; a queued reload may then run. A 20,000-target
# config loads in about 10 s on a busy 2-core machine.
LOAD_LIMIT_SECONDS = 120.0
# While a config loads, the interpreter hands the GIL to a waiting thread after this long
# instead of the default 5 ms: the event loop waits for it on every return from a system
# call, so at 5 ms a scrape of 1,000 targets took ~40 ms instead of ~11 (bench/reload_stall.py).
LOAD_SWITCH_INTERVAL = 0.0005
# How much lower the loading thread's CPU priority is than the loop's (`nice`).
LOAD_NICENESS = 10


def _freeze_new() -> None:
    """Move what was made since the last freeze (a config's targets, their timers and states)
    out of the garbage collector's sight: a full collection walks every tracked object, which
    at 5,000 targets took ~200 ms and came every few seconds, stalling scrapes and probes alike
    (measured). What is frozen is still freed by reference counting when it goes (a removed
    target, a replaced config), so it is never thawed, which would cost a full collection of
    everything (~70 ms at 20,000 targets); cycles among frozen objects would stay for good,
    which is why the scheduler breaks the one a cancelled task makes (`Scheduler._ended`):
    after 20,000 targets went to 1,000 and back, a few hundred objects were left in cycles
    (measured). A step collects only what is not frozen yet: a few milliseconds."""
    gc.collect()
    gc.freeze()


def _freeze_loaded() -> None:
    """Freeze a config just loaded: loading leaves no cycles (measured), so the young
    generations are collected, not the 60,000 objects a 20,000-target config is."""
    gc.collect(1)
    gc.freeze()


class _Abandoned(Exception):
    """A config load that did not end within `LOAD_LIMIT_SECONDS`."""


class _Stopping(Exception):
    """A config load still under way when stackprobe stops."""


@dataclass(frozen=True)
class Outcome:
    """Whether a reload worked, or whether the exporter is ready, with why in words."""

    ok: bool
    message: str


def all_metric_specs(kinds: Mapping[str, ProbeKind[Any]]) -> list[MetricSpec]:
    """Every per-target family, core first, then each kind's in kind-table order; a spec
    several kinds share (probe_ip_protocol of http and dns) once."""
    specs = (spec for kind in kinds.values() for spec in kind.metrics)
    return list(dict.fromkeys((*CORE_METRICS, *specs)))


class App:
    def __init__(
        self,
        config: Config,
        *,
        kinds: Mapping[str, ProbeKind[Any]],
        redactor: Redactor,
        config_path: Path | None,
        cluster_overrides: tuple[int | None, int | None] = (None, None),
        memberships: Mapping[str, MembershipFactory] | None = None,
    ) -> None:
        """`cluster_overrides`: this replica's index and count from flags or the environment,
        over the file's `cluster:` (ValueError when they do not fit); `memberships`: the
        dynamic member lists the build has (`cluster.ecs`)."""
        self.config = config
        self.kinds = kinds
        self.redactor = redactor
        self.config_path = config_path
        self.store = ResultStore()
        self.metrics = SelfMetrics()
        settings = with_overrides(config.cluster, *cluster_overrides)
        self._cluster_file = config.cluster
        self.cluster = Cluster(
            settings,
            membership(settings, self.metrics.registry, memberships),
            self.metrics.registry,
        )
        # Targets this replica owned until the member list changed, probed on until their
        # new owners have had time to run them (`_handover_seconds`): name -> (target, until).
        self._handover: dict[str, tuple[TargetConfig, float]] = {}
        self._owned: set[str] = set()
        self._handover_timer: asyncio.TimerHandle | None = None
        # The kinds a config has used since start, in table order: their families stay
        # declared, so a run that ends after a reload removed its kind still renders.
        self._used: list[str] = []
        self.exposition = Exposition(self._specs(config), self.store, self.metrics.registry)
        self._shared: list[Shared[Any, Any]] = []
        self.resources = self._open_resources(config, {})
        self.scheduler = Scheduler(
            kinds=kinds, exposition=self.exposition, metrics=self.metrics, resources=self.resources
        )
        self.started = time.time()
        self.last_reload_error = ""
        # The running reload (loop time it started), whether one is queued, and what a queued
        # one runs (cli's reload, which reloads the web config first, once it has asked).
        self._reloading: float | None = None
        self._reload_idle = asyncio.Event()
        self._reload_idle.set()
        self._reload_wanted = False
        self._reloader: asyncio.Task[None] | None = None
        self._run_reload: Callable[[], Awaitable[object]] = self.reload
        self._stopping = False
        self._loading = False
        self._load_future: asyncio.Future[Any] | None = None
        self._applying = False
        self._freezer: asyncio.Task[None] | None = None
        self._freeze_until = 0.0
        self._secrets: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._log = structlog.get_logger("stackprobe.app")

    def start(self) -> None:
        self._secrets = self.config.secrets()
        self.redactor.update(self._secrets | self._ambient_secrets())
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
        if self.cluster.dynamic:
            self._later(self._join())
        else:
            self._later(self._started(self._schedule()))
        self.metrics.reload_successful.set(1)
        self.metrics.reload_success_time.set(time.time())

    async def _join(self) -> None:
        """A dynamic membership: the first member list before the first runs (so a replica
        does not probe everything for a moment), then the list again every `refresh`. A
        pass that fails (a stackprobe bug) is logged and the next one runs: the loop never
        stops while stackprobe runs."""
        refresh = self.cluster.settings.refresh
        _, error = await self.cluster.refresh(refresh)
        if error:
            self._log.warning(
                "the cluster's member list is unknown; probing every target until it is known",
                error=error,
            )
            self.cluster.adopt(self.cluster.view)  # itself alone: it never owns nothing
        await self._started(self._schedule())
        while not self._stopping:
            await asyncio.sleep(refresh)
            try:
                changed, error = await self.cluster.refresh(refresh)
                if error:
                    self._log.warning(
                        "the cluster's member list could not be refreshed; the last one stays",
                        error=error,
                    )
                elif changed:
                    members = len(self.cluster.view.members)
                    self._log.info("cluster members changed", members=members)
                    await self._applied(self._schedule(rebalanced=True))
            except Exception:
                self._log.error("a cluster refresh raised; this is a stackprobe bug", exc_info=True)

    def _schedule(self, rebalanced: bool = False) -> asyncio.Task[Applied]:
        """Apply what this replica owns of the config, and what it hands over; publish who
        owns what. After a change of members (`rebalanced`), a target it no longer owns is
        probed on for `_handover_seconds`, until its new owner's series are in Prometheus,
        so they never go absent. Before a dynamic member list is first known (a reload
        that comes first), it applies nothing: `_join` does the first apply."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self.cluster.known:
            return self.scheduler.apply([])
        rows = self.cluster.ownership(self.config.targets, self.kinds)
        owned = {row.target.name for row in rows if row.mine}
        if rebalanced:
            for row in rows:
                if row.target.name in self._owned and not row.mine:
                    until = now + self._handover_seconds(row.target)
                    self._handover[row.target.name] = (row.target, until)
        targets = {row.target.name: row.target for row in rows}
        self._handover = {
            name: (target, until)
            for name, (target, until) in self._handover.items()
            if until > now and name not in owned and targets.get(name) == target
        }
        self._owned = owned
        self.exposition.set_fixed(
            [
                (TARGET_OWNED, ((r.target.name, (r.target.kind,), r.mine) for r in rows)),
                (TARGET_REPLICAS, ((r.target.name, (r.target.kind,), r.wanted) for r in rows)),
            ]
        )
        if self._handover_timer is not None:
            self._handover_timer.cancel()
            self._handover_timer = None
        if self._handover and not self._stopping:
            ends = min(until for _, until in self._handover.values())
            self._handover_timer = loop.call_at(ends, self._handover_ended)
        # Targets taken over from a member that left start at once (at the startup rate
        # still, for many): their series are missing until the first run's result.
        return self.scheduler.apply(
            [row.target for row in rows if row.mine]
            + [target for target, _ in self._handover.values()],
            spread_floor=0.0 if rebalanced else STARTUP_SPREAD_SECONDS,
        )

    def _handover_ended(self) -> None:
        self._handover_timer = None
        if not self._stopping:
            self._later(self._rescheduled())

    async def _rescheduled(self) -> None:
        await self._applied(self._schedule())

    def _handover_seconds(self, target: TargetConfig) -> float:
        """Until the new owner's series are surely in Prometheus: it has seen the new members
        (a refresh, and the call's time: two), run the target once (within the startup
        spread of as many targets as moved) and been discovered and scraped
        (`cluster.handover`)."""
        spread = max(STARTUP_SPREAD_SECONDS, len(self.config.targets) / STARTUP_RATE)
        first_run = min(target.interval, spread) + target.timeout + GRACE_SECONDS
        settings = self.cluster.settings
        return 2 * settings.refresh + first_run + settings.handover

    async def _started(self, applying: asyncio.Task[Applied]) -> None:
        applied = await self._applied(applying)
        self._freeze_for(applied.settled)

    async def _applied(self, applying: asyncio.Task[Applied]) -> Applied:
        """Await an apply, freezing what it makes as it goes."""
        self._applying = True
        self._freeze_for(0.0)
        try:
            return await applying
        finally:
            self._applying = False

    def request_reload(self, run: Callable[[], Awaitable[object]] | None = None) -> None:
        """Ask for a reload and return at once (SIGHUP). If none is running one starts; if one
        is, one more is queued, at most one however many are asked for, and it reads the file
        when the running one has ended. `run` is what a reload does, `reload()` unless a
        caller that reloads more (the web config) passes its own; a queued one runs the last
        `run` given."""
        if run is not None:
            self._run_reload = run
        self._reload_wanted = True
        if self._reloader is None or self._reloader.done():
            self._reloader = self._later(self._reloads())

    async def _reloads(self) -> None:
        while self._reload_wanted:
            await self._reload_idle.wait()
            if self._stopping:
                return
            self._reload_wanted = False
            try:
                await self._run_reload()
            except Exception:
                self._log.error("a config reload raised; this is a stackprobe bug", exc_info=True)

    async def reload(self, failed_elsewhere: str = "") -> Outcome:
        """Load the config file again and apply it, and say how that went (POST /-/reload).
        While another reload runs this one does not wait for it, which may never end (a load
        stuck on a FIFO): it queues one, as `request_reload`, and says so at once.
        `failed_elsewhere` is a part of the same reload outside the config that failed (the
        web config file): the config still applies, and the reload counts once, as failed."""
        if self.config_path is None:
            return Outcome(False, "started without --config: there is nothing to reload")
        if self._stopping:
            return Outcome(False, "stackprobe is stopping: no reload starts now")
        loop = asyncio.get_running_loop()
        if self._reloading is not None:
            self.request_reload()
            return Outcome(
                False,
                f"a reload is already running ({loop.time() - self._reloading:.1f} s so far); "
                "another is queued and reads the file once it has ended",
            )
        self._reloading = loop.time()
        self._reload_idle.clear()
        try:
            return await self._reload(self.config_path, failed_elsewhere)
        finally:
            self._reloading = None
            self._reload_idle.set()

    async def _reload(self, path: Path, failed_elsewhere: str) -> Outcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._log.debug("config reload started", path=str(path))
        try:
            new, secrets = await self._load(path)
        except (_Stopping, asyncio.CancelledError) as exc:
            self._log.warning(
                "a config reload was still loading when stackprobe stopped; abandoned",
                path=str(path),
                seconds=round(loop.time() - started, 1),
            )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return Outcome(False, "stackprobe is stopping: the reload was abandoned")
        except Exception as exc:  # ConfigError, or anything the loader did not foresee
            if isinstance(exc, _Abandoned):
                message = (
                    f"{path}: the config did not load within {LOAD_LIMIT_SECONDS:g} s and was "
                    "abandoned (is it a FIFO, or on a mount that does not answer?)"
                )
            elif isinstance(exc, ConfigError):
                message = str(exc)
            else:
                self._log.error("config reload raised; this is a stackprobe bug", exc_info=True)
                message = str(exc)
            self._log.error(
                "config reload failed; the previous config keeps running",
                path=str(path),
                problems=message,
            )
            self._count_reload("\n".join(filter(None, [failed_elsewhere, message])))
            return Outcome(False, message)
        await self._apply(new, secrets)
        self._count_reload(failed_elsewhere)
        return Outcome(True, f"config reloaded: {len(new.targets)} targets")

    def _count_reload(self, problem: str) -> None:
        """One reload, one count: failed if any part of it failed."""
        self.last_reload_error = problem
        self.metrics.reload_successful.set(0 if problem else 1)
        self.metrics.reloads.labels("failure" if problem else "success").inc()
        if not problem:
            self.metrics.reload_success_time.set(time.time())

    async def _load(self, path: Path) -> tuple[Config, set[str]]:
        """The config and its secrets, from a daemon thread: a load that never ends (a FIFO
        with no writer) is abandoned at shutdown or after `LOAD_LIMIT_SECONDS`, where a thread
        of the loop's executor would hold the process's exit until it ended. While it loads,
        the GIL changes hands more often and no full collection walks the half-built config
        (see `_Loading`)."""

        def work() -> tuple[Config, set[str]]:
            # Linux nices each thread on its own: the loop's thread keeps its share of a
            # busy machine's CPU while this one loads.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICENESS)
            config = load_config(path, self.kinds)
            return config, config.secrets()

        with _Loading(self):
            self._load_future = future = run_in_daemon_thread(work, "config load")
            try:
                async with asyncio.timeout(LOAD_LIMIT_SECONDS):
                    loaded = await future
            except TimeoutError:
                raise _Abandoned from None
            finally:
                self._load_future = None
        _freeze_loaded()
        return loaded

    async def _apply(self, new: Config, secrets: set[str]) -> None:
        # Old secrets stay known: a run started before the reload may still log.
        self.redactor.update(self._secrets | secrets | self._ambient_secrets())
        retired = self.resources
        self.exposition.declare(self._specs(new))
        self.resources = self._open_resources(new, retired)
        self.scheduler.use(self.resources)
        retire_after = self._longest_timeout()
        for shared, resource in retired.items():
            if self.resources.get(shared) is not resource:
                self._later(self._close_after(resource, retire_after))
        if new.cluster != self._cluster_file:
            self._log.warning(
                "the cluster: section changed; it is read at start only, restart to apply it"
            )
        self.config = new
        self._secrets = secrets
        applied = await self._applied(self._schedule())
        if applied.added or applied.removed or applied.changed:  # a no-op reload costs nothing
            self._freeze_for(max(applied.settled, retire_after))
        self._log.info(
            "config reloaded",
            path=str(self.config_path),
            targets=len(new.targets),
            added=applied.added,
            removed=applied.removed,
            changed=applied.changed,
        )

    def _freeze_for(self, seconds: float) -> None:
        """Freeze what new targets keep, step by step, until each has run once, so each task's
        own state is frozen with it; a reload meanwhile extends the steps."""
        loop = asyncio.get_running_loop()
        self._freeze_until = max(self._freeze_until, loop.time() + seconds)
        if self._freezer is None or self._freezer.done():
            self._freezer = self._later(self._freeze_steps())

    async def _freeze_steps(self) -> None:
        loop = asyncio.get_running_loop()
        last = -math.inf
        while True:
            now = loop.time()
            step = FREEZE_STEP_APPLYING_SECONDS if self._applying else FREEZE_STEP_SECONDS
            done = now >= self._freeze_until and not self._applying
            # Not while a config loads: a collection would walk the half-built config.
            if (done or now - last >= step) and not self._loading:
                _freeze_new()
                last = now
            if done:
                return
            await asyncio.sleep(FREEZE_STEP_APPLYING_SECONDS)

    def ready(self) -> Outcome:
        """Ready once every target it owns has a first result, so a first scrape is never
        partial."""
        if not self.cluster.known:
            return Outcome(False, "waiting for the cluster's member list")
        targets = self.scheduler.targets
        pending = [t.name for t in targets if self.store.get(t.name) is None]
        if pending:
            return Outcome(False, f"{len(pending)} of {len(targets)} targets have no result yet")
        return Outcome(True, "ready")

    def abandon_reload(self) -> None:
        """At shutdown: stop waiting for a config load under way, so the reload answers at
        once that it was abandoned (its thread, a daemon, holds nothing up), and start none
        after it, queued or asked for."""
        self._stopping = True
        if self._load_future is not None and not self._load_future.done():
            self._load_future.set_exception(_Stopping())

    async def stop(self) -> None:
        self.abandon_reload()  # from here on, no handover timer is armed
        if self._handover_timer is not None:
            self._handover_timer.cancel()
        await self.scheduler.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for resource in self.resources.values():
            await _close(resource, self._log)
        await _close(self.cluster.source, self._log)

    def _specs(self, config: Config) -> list[MetricSpec]:
        """The families of every kind used so far, this config's included; looking a kind up
        imports it (probes/__init__.py), so only used kinds are."""
        self._used = self._in_table_order({*self._used, *(t.kind for t in config.targets)})
        return all_metric_specs({name: self.kinds[name] for name in self._used})

    def _in_table_order(self, names: set[str]) -> list[str]:
        return [name for name in self.kinds if name in names]

    def _open_resources(
        self, config: Config, previous: Mapping[Shared[Any, Any], Any]
    ) -> dict[Shared[Any, Any], Any]:
        """Every resource the config's kinds declare, from its sections; on reload each is
        given the one in use and keeps it, or replaces it, as its settings say."""
        in_use = self._in_table_order({target.kind for target in config.targets})
        self._shared = declared(self.kinds[name] for name in in_use)
        env = ResourceEnv(self.metrics.registry, config.built)
        return {
            shared: shared.open(config.section(shared), env, previous.get(shared))
            for shared in self._shared
        }

    def _ambient_secrets(self) -> set[str]:
        found: set[str] = set()
        for shared in self._shared:
            if shared.ambient_secrets is not None:
                found |= shared.ambient_secrets(os.environ)
        return found

    def _longest_timeout(self) -> float:
        return max((t.timeout for t in self.config.targets), default=0.0) + GRACE_SECONDS

    def _later(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._said)
        return task

    def _said(self, task: asyncio.Task[None]) -> None:
        """A background task that raised says so now, in full, not when it is collected."""
        if not task.cancelled() and task.exception() is not None:
            self._log.error(
                "a background task raised; this is a stackprobe bug",
                task=task.get_name(),
                exc_info=task.exception(),
            )

    async def _close_after(self, resource: Any, delay: float) -> None:
        """Close a retired resource once every run that may still hold it has ended."""
        try:
            await asyncio.sleep(delay)
        finally:
            await _close(resource, self._log)


async def _close(resource: Any, log: Any) -> None:
    try:
        await resource.aclose()
    except Exception:
        log.warning("closing a shared resource failed", exc_info=True)


class _Loading:
    """While a config loads on its thread: the GIL changes hands every `LOAD_SWITCH_INTERVAL`
    (the interval is the process's, so it is put back as soon as the load ends or is
    abandoned; one load runs at a time), no full collection starts (one would walk every
    object of the half-built config while holding the GIL: ~200 ms at 20,000 targets), and
    the freeze steps wait."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._interval = 0.0
        self._threshold = (0, 0, 0)

    def __enter__(self) -> None:
        self._app._loading = True
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._interval, LOAD_SWITCH_INTERVAL))
        self._threshold = gc.get_threshold()
        young, middle, _ = self._threshold
        gc.set_threshold(young, middle, 2**30)

    def __exit__(self, *exc: object) -> None:
        gc.set_threshold(*self._threshold)
        sys.setswitchinterval(self._interval)
        self._app._loading = False
