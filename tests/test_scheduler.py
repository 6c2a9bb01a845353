"""The scheduler with small test kinds: guards, deadlines, spread, and reload diffs."""

from __future__ import annotations

import asyncio
import gc
import statistics
import weakref
from enum import StrEnum
from typing import Any, Literal

import pytest
from prometheus_client import CollectorRegistry

from stackprobe.contract import Area, CoreReason, MetricSpec, ProbeContext, ProbeKind, ProbeResult
from stackprobe.exposition import CORE_METRICS, Exposition
from stackprobe.results import ResultStore
from stackprobe.scheduler import GRACE_SECONDS, TURN_TASKS, Scheduler, phase_fraction
from stackprobe.selfmetrics import SelfMetrics
from stackprobe.target import TargetConfig

CALLS = MetricSpec("test_calls", "Runs so far.")


class Reason(StrEnum):
    NOPE = "nope"


class FakeTarget(TargetConfig):
    kind: Literal["fake"] = "fake"
    behaviour: Literal["ok", "raise", "ignore_deadline", "stray_metric", "stray_cancel"] = "ok"


RUNS: dict[str, int] = {}


async def fake_probe(target: FakeTarget, ctx: ProbeContext) -> ProbeResult:
    RUNS[target.name] = RUNS.get(target.name, 0) + 1
    if target.behaviour == "raise":
        raise RuntimeError("boom")
    if target.behaviour == "ignore_deadline":
        await asyncio.sleep(3600)
    if target.behaviour == "stray_cancel":  # a library letting a cancellation escape
        raise asyncio.CancelledError
    if target.behaviour == "stray_metric":
        return ProbeResult.ok((MetricSpec("stray", "undeclared")(1),))
    return ProbeResult.ok((CALLS(RUNS[target.name]),))


class Connection:
    """A stand-in for a kept connection that takes a while to close, as a real one may."""

    open_now = 0
    most_open = 0
    opened = 0

    def __init__(self, target: Any) -> None:
        Connection.open_now += 1
        Connection.opened += 1
        Connection.most_open = max(Connection.most_open, Connection.open_now)

    async def aclose(self) -> None:
        await asyncio.sleep(0.3)
        Connection.open_now -= 1


class StatefulTarget(TargetConfig):
    kind: Literal["stateful"] = "stateful"
    version: int = 1


async def stateful_probe(target: StatefulTarget, ctx: ProbeContext) -> ProbeResult:
    assert isinstance(ctx.state, Connection)
    return ProbeResult.ok()


KINDS: dict[str, ProbeKind[Any]] = {
    "fake": ProbeKind(
        "fake", FakeTarget, fake_probe, (CALLS,), Reason, "test kind", area=Area.SITE
    ),
    "stateful": ProbeKind(
        "stateful",
        StatefulTarget,
        stateful_probe,
        (),
        Reason,
        "kind with a state",
        state=Connection,
        area=Area.SITE,
    ),
}


def fake(name: str, **extra: Any) -> FakeTarget:
    return FakeTarget(
        name=name,
        interval=extra.pop("interval", "1s"),
        timeout=extra.pop("timeout", "200ms"),
        **extra,
    )


@pytest.fixture
async def scheduler() -> Any:
    RUNS.clear()
    store = ResultStore()
    exposition = Exposition([*CORE_METRICS, CALLS], store, CollectorRegistry())
    scheduler = Scheduler(kinds=KINDS, exposition=exposition, metrics=SelfMetrics(), resources={})
    yield scheduler, store
    await scheduler.stop()


async def test_a_raising_probe_becomes_internal_error(scheduler: Any) -> None:
    sched, _ = scheduler
    record = await sched.run_once(fake("a", behaviour="raise"))

    assert (record.result.success, record.result.reason) == (False, CoreReason.INTERNAL_ERROR)
    assert record.result.detail == "probe raised RuntimeError; see the log"
    assert b'reason="internal_error"' in record.chunks["stackprobe_probe_failure_reason"]


async def test_a_probe_ignoring_its_deadline_is_cancelled_after_the_grace(scheduler: Any) -> None:
    sched, _ = scheduler
    record = await sched.run_once(fake("a", behaviour="ignore_deadline", timeout="200ms"))

    assert record.result.reason == CoreReason.TIMEOUT
    # uvloop's clock ticks in milliseconds, and the difference of two of its readings can
    # land a rounding error below the sum it was timed to (0.6999999999970896 once in CI)
    tick = 1e-3
    assert 0.2 + GRACE_SECONDS - tick <= record.duration < 0.2 + GRACE_SECONDS + 0.5


async def test_a_stray_cancellation_is_internal_error_not_a_dead_target(scheduler: Any) -> None:
    sched, _ = scheduler
    record = await sched.run_once(fake("a", behaviour="stray_cancel"))

    assert record.result.reason == CoreReason.INTERNAL_ERROR


async def test_a_task_that_dies_is_restarted(scheduler: Any) -> None:
    sched, store = scheduler
    real_put, failures = store.put, []

    def put_failing_once(record: Any) -> None:
        if not failures:
            failures.append(record)
            raise RuntimeError("store broke once")
        real_put(record)

    store.put = put_failing_once
    await sched.apply([fake("a", interval="1s")])
    await asyncio.sleep(4)

    assert failures and store.get("a") is not None


async def test_an_undeclared_metric_is_internal_error(scheduler: Any) -> None:
    sched, _ = scheduler
    record = await sched.run_once(fake("a", behaviour="stray_metric"))

    assert record.result.reason == CoreReason.INTERNAL_ERROR
    assert b"stray" not in b"".join(record.chunks.values())


async def test_apply_keeps_unchanged_targets_and_restarts_changed_ones(scheduler: Any) -> None:
    sched, store = scheduler
    await sched.apply([fake("keep"), fake("change"), fake("drop")])
    await asyncio.sleep(1.2)  # first runs come within min(interval, 5 s)
    kept_before = store.get("keep")
    assert {r.target for r in store} == {"keep", "change", "drop"}

    changed_before = store.get("change")

    await sched.apply([fake("keep"), fake("change", timeout="300ms"), fake("new")])

    assert store.get("keep") is kept_before
    assert store.get("change") is changed_before  # until the new task has a result
    assert store.get("drop") is None
    assert sorted(t.name for t in sched.targets) == ["change", "keep", "new"]
    await asyncio.sleep(1.2)
    changed_after = store.get("change")
    assert changed_after is not None and changed_after is not changed_before


async def test_runs_repeat_on_the_interval(scheduler: Any) -> None:
    sched, store = scheduler
    await sched.apply([fake("a", interval="500ms", timeout="100ms")])
    await asyncio.sleep(2.2)

    record = store.get("a")
    assert record is not None and 4 <= RUNS["a"] <= 6


async def test_targets_taken_over_start_at_once_others_within_the_spread(
    scheduler: Any,
) -> None:
    """A new target's first run comes within its phase of min(interval, 5 s): the startup
    spread. A target taken over from a replica that died (spread_floor 0) runs at once: its
    series are missing until then. Twenty targets, each with a 10 s interval."""
    sched, store = scheduler
    await sched.apply([fake(f"spread-{i}", interval="10s") for i in range(20)])
    await sched.apply(
        [
            *(fake(f"spread-{i}", interval="10s") for i in range(20)),
            *(fake(f"moved-{i}", interval="10s") for i in range(20)),
        ],
        spread_floor=0.0,
    )
    await asyncio.sleep(0.5)

    moved = sum(1 for i in range(20) if store.get(f"moved-{i}") is not None)
    spread = sum(1 for i in range(20) if store.get(f"spread-{i}") is not None)
    assert moved == 20
    # phases are uniform over 5 s: about 2 of 20 within half a second, 8 at most
    assert spread <= 8


def test_phases_spread_evenly() -> None:
    fractions = [phase_fraction(f"target-{i:04d}") for i in range(5000)]

    assert all(0 <= f < 1 for f in fractions)
    assert abs(statistics.mean(fractions) - 0.5) < 0.02
    deciles = [sum(1 for f in fractions if d / 10 <= f < (d + 1) / 10) for d in range(10)]
    assert min(deciles) > 400 and max(deciles) < 600


def stateful(version: int) -> StatefulTarget:
    return StatefulTarget(name="db", interval="1s", timeout="200ms", version=version)


async def test_a_target_never_holds_two_states_however_fast_reloads_come(
    scheduler: Any,
) -> None:
    sched, store = scheduler
    Connection.open_now = Connection.most_open = Connection.opened = 0
    await sched.apply([stateful(1)])
    await asyncio.sleep(1.2)
    assert (Connection.open_now, Connection.opened) == (1, 1)

    await sched.apply([stateful(2)])  # the first is closing (0.3 s) ...
    await sched.apply([stateful(3)])  # ... when the second is replaced before it even started
    await asyncio.sleep(1.5)

    assert Connection.most_open == 1
    assert (Connection.open_now, Connection.opened) == (1, 2)  # version 2 never opened one
    await sched.apply([])  # removed: closed
    await asyncio.sleep(0.5)
    assert Connection.open_now == 0 and store.get("db") is None


async def test_stop_closes_every_state(scheduler: Any) -> None:
    sched, _ = scheduler
    Connection.open_now = Connection.most_open = Connection.opened = 0
    await sched.apply([stateful(1)])
    await asyncio.sleep(1.2)
    await sched.apply([stateful(2)])

    await sched.stop()

    assert Connection.open_now == 0


async def test_apply_starts_and_stops_targets_in_slices_that_leave_the_loop_turning(
    scheduler: Any,
) -> None:
    """20,000 targets started in one turn of the loop held it ~0.8 s, and every scrape with
    it (bench/reload_stall.py): an apply lets the loop turn between slices of TURN_TASKS."""
    sched, _ = scheduler
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    try:
        many = [fake(f"t{i:04d}", interval="1h") for i in range(2000)]
        applying = sched.apply(many)
        assert len(sched.targets) == 2000  # said at once, done by the task
        applied = await applying
        started_in = turns
        turns = 0
        removed = await sched.apply(many[:1])
    finally:
        counter.cancel()

    assert (applied.added, applied.removed, applied.changed) == (2000, 0, 0)
    assert (removed.added, removed.removed, removed.changed) == (0, 1999, 0)
    assert started_in >= 2000 // TURN_TASKS
    assert turns >= 1999 // TURN_TASKS


def probe_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("probe ")]


async def test_a_target_holds_a_task_only_while_it_runs(scheduler: Any) -> None:
    """Between runs a target is a timer and a small record, not a task asleep (1.9 KB
    against 0.5 KB with uvloop); its run gets a task for as long as it lasts."""
    sched, store = scheduler
    # first runs at phase * 1 s (0.13 to 0.84 s for these names), the next ones an hour on
    await sched.apply([fake(f"t{i}", interval="1h") for i in range(20)], spread_floor=1.0)
    await asyncio.sleep(0.05)
    assert probe_tasks() == []  # none has run yet: timers only
    await asyncio.sleep(1.0)  # each has run once and waits for its next slot

    assert all(RUNS.get(f"t{i}") == 1 for i in range(20))
    assert all(store.get(f"t{i}") is not None for i in range(20))
    assert probe_tasks() == []

    await sched.apply([fake("slow", behaviour="ignore_deadline", interval="2s", timeout="1s")])
    await asyncio.sleep(0.6)  # slow's run starts at 0.41 s (its phase of 2 s) and lasts 1.5 s
    assert [t.get_name() for t in probe_tasks()] == ["probe slow"]  # under way


async def test_a_removed_targets_timer_is_cancelled(scheduler: Any) -> None:
    sched, _ = scheduler
    # first runs at 0.91 s (a) and 0.44 s (b), the next ones an hour on
    await sched.apply([fake("a", interval="1h"), fake("b", interval="1h")], spread_floor=1.0)
    await asyncio.sleep(1.0)
    assert RUNS == {"a": 1, "b": 1}
    timers = {name: sched._targets[name].timer for name in ("a", "b")}
    assert not any(timer.cancelled() for timer in timers.values())

    await sched.apply([fake("b", interval="1h")])

    assert timers["a"].cancelled() and not timers["b"].cancelled()
    assert list(sched._targets) == ["b"] and probe_tasks() == []


async def test_a_removed_targets_run_and_state_are_freed_without_the_garbage_collector(
    scheduler: Any,
) -> None:
    """The app freezes what targets keep and never thaws it (app.py), so nothing a removed
    target leaves may sit in a reference cycle: a cancelled task keeps its CancelledError,
    whose traceback holds the task's frames, which hold the task."""
    sched, _ = scheduler
    Connection.open_now = Connection.most_open = Connection.opened = 0
    await sched.apply(
        [stateful(1), fake("slow", behaviour="ignore_deadline", interval="2s", timeout="1s")]
    )
    await asyncio.sleep(0.6)  # slow's run starts at 0.41 s (its phase of 2 s) and lasts 1.5 s
    (running,) = [t for t in probe_tasks() if t.get_name() == "probe slow"]  # under way
    refs = [weakref.ref(running), weakref.ref(sched._targets["db"].state)]
    del running
    gc.disable()
    try:
        await sched.apply([])
        await asyncio.sleep(0.5)  # the state's close takes 0.3 s
        assert Connection.open_now == 0
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()


async def test_a_state_is_closed_when_its_run_is_cancelled_before_it_began(
    scheduler: Any,
) -> None:
    """A run's task that is cancelled before its first step never enters its coroutine, so
    whoever retires the target closes the state, not the run."""
    sched, _ = scheduler
    Connection.open_now = Connection.most_open = Connection.opened = 0
    await sched.apply([stateful(1)])
    await asyncio.sleep(0.01)
    entry = sched._targets["db"]
    assert entry.timer is not None and Connection.open_now == 1
    entry.timer.cancel()
    entry()  # as the timer would: the run's task made, its first step not yet taken

    await sched.stop()

    assert Connection.open_now == 0 and probe_tasks() == []


async def test_a_target_waiting_for_the_state_it_replaces_to_close_can_be_stopped(
    scheduler: Any,
) -> None:
    sched, _ = scheduler
    Connection.open_now = Connection.most_open = Connection.opened = 0
    await sched.apply([stateful(1)])
    await asyncio.sleep(0.01)
    await sched.apply([stateful(2)])  # waits 0.3 s for version 1's state to close
    assert [t.get_name() for t in probe_tasks()] == ["probe db"]

    await sched.stop()

    assert Connection.open_now == 0 and Connection.opened == 1 and probe_tasks() == []


async def test_stop_during_an_apply_leaves_no_task_running(scheduler: Any) -> None:
    sched, _ = scheduler
    applying = sched.apply([fake(f"t{i:04d}", interval="1h") for i in range(1000)])
    for _ in range(3):
        await asyncio.sleep(0)  # a few slices in

    await sched.stop()
    await applying

    assert probe_tasks() == []
