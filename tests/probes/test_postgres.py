"""The postgres probe against real PostgreSQL: the Debian cluster under a load the tests build,
and throwaway clusters that are filled up, stopped and restarted."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest

from stackprobe.app import all_metric_specs
from stackprobe.contract import Health, ProbeResult, Verdict
from stackprobe.exposition import Renderer
from stackprobe.probes import KINDS
from stackprobe.probes.postgres import (
    DEADLOCK_WINDOW_SECONDS,
    LEAK_STEP_SECONDS,
    STATES,
    WRAPAROUND_IMMINENT,
    AppPool,
    PostgresState,
    Reason,
    _database_samples,
    _Finding,
    _idle_in_transaction,
    _pool,
    _replication,
    predict_linear,
)
from tests.support.datastores import (
    PROBE_PASSWORD,
    PROBE_ROLE,
    ThrowawayCluster,
    ensure_probe_role,
    require_postgres,
)
from tests.support.polling import wait_until_async
from tests.support.probing import (
    ProbeRunner,
    checked_evidence,
    make_target,
    samples_by_name,
    value,
    verdict,
)
from tests.support.processes import free_port


def pg_target(dsn: str, password: str = PROBE_PASSWORD, **extra: Any) -> Any:
    raw = {
        "name": "db",
        "kind": "postgres",
        "dsn": dsn,
        "password": {"from_env": "PGPW"},
        "timeout": "2s",
        **extra,
    }
    return make_target(raw, {"PGPW": password})


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(require_postgres())
    await ensure_probe_role(connection)
    yield connection
    await connection.close()


def probe_dsn(database: str = "postgres", port: int = 5432, user: str = PROBE_ROLE) -> str:
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


async def ensure_database(admin: asyncpg.Connection, name: str) -> None:
    if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        await admin.execute(f'CREATE DATABASE "{name}"')


async def end_sessions(admin: asyncpg.Connection, *databases: str) -> None:
    """Server-side sessions outlive a client that just hangs up (pg_sleep never notices)."""
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()",
        list(databases),
    )


async def wait_sessions(admin: asyncpg.Connection, database: str, count: int) -> None:
    """Until the server has `count` sessions in `database`: a terminated client's backend
    leaves a moment after it hangs up."""

    async def settled() -> bool:
        found = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        return bool(found == count)

    await wait_until_async(settled, 10, what=f"{count} sessions in {database}")


@pytest.fixture
async def runner() -> AsyncIterator[Callable[[Any], ProbeRunner]]:
    """Runners that keep their state across runs, closed when the test ends."""
    async with AsyncExitStack() as stack:

        def make(target: Any) -> ProbeRunner:
            made = ProbeRunner(target)
            stack.push_async_callback(made.aclose)
            return made

        yield make


def by_db(result: ProbeResult, name: str) -> dict[tuple[str, ...], float]:
    return samples_by_name(result)[name]


async def test_a_built_load_is_counted_exactly(admin: asyncpg.Connection, runner: Any) -> None:
    for name in ("sp_load_a", "sp_load_b"):
        await ensure_database(admin, name)
    await end_sessions(admin, "sp_load_a", "sp_load_b")  # what an earlier run left behind
    dsn_a, dsn_b = (
        require_postgres().rsplit("/", 1)[0] + f"/{db}" for db in ("sp_load_a", "sp_load_b")
    )
    held: list[asyncpg.Connection] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        for dsn, count in ((dsn_a, 3), (dsn_b, 2)):  # idle
            held += [await asyncpg.connect(dsn) for _ in range(count)]
        for _ in range(2):  # idle in transaction
            connection = await asyncpg.connect(dsn_a)
            held.append(connection)
            await connection.execute("BEGIN; SELECT 1")
        locker, waiter, sleeper = [await asyncpg.connect(d) for d in (dsn_a, dsn_a, dsn_b)]
        held += [locker, waiter, sleeper]
        await locker.execute("CREATE TABLE IF NOT EXISTS locked (id int)")
        await locker.execute("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")  # idle in tx
        tasks.append(asyncio.create_task(waiter.fetch("SELECT * FROM locked")))  # lock wait
        tasks.append(asyncio.create_task(sleeper.execute("SELECT pg_sleep(60)")))  # long
        await asyncio.sleep(1.3)  # past the 1 s threshold

        result = await runner(pg_target(probe_dsn(), long_query_threshold="1s")).run()
    finally:
        for task in tasks:
            task.cancel()
        for connection in held:
            connection.terminate()
        await end_sessions(admin, "sp_load_a", "sp_load_b")

    assert result.success, result.detail
    counts = by_db(result, "pg_stat_activity_count")
    expected = {
        ("sp_load_a", "idle"): 3,
        ("sp_load_a", "idle in transaction"): 3,
        ("sp_load_a", "active"): 1,
        ("sp_load_b", "idle"): 2,
        ("sp_load_b", "active"): 1,
    }
    for db in ("sp_load_a", "sp_load_b"):
        for state in STATES:  # every state exported, zero included
            assert counts[(db, state)] == expected.get((db, state), 0), (db, state)
    assert by_db(result, "pg_stat_activity_waiting_on_locks")[("sp_load_a",)] == 1
    assert by_db(result, "pg_stat_activity_waiting_on_locks")[("sp_load_b",)] == 0
    long_running = by_db(result, "pg_stat_activity_long_running_queries")
    assert long_running[("sp_load_b",)] == 1  # pg_sleep(60)
    assert long_running[("sp_load_a",)] == 1  # the lock waiter has been active as long
    assert 1.0 < by_db(result, "pg_stat_activity_oldest_query_seconds")[("sp_load_b",)] < 10
    assert by_db(result, "pg_stat_activity_oldest_idle_in_transaction_seconds")[("sp_load_a",)] > 1
    max_tx = by_db(result, "pg_stat_activity_max_tx_duration")
    assert max_tx[("sp_load_a", "idle in transaction")] > 1
    assert max_tx[("sp_load_a", "idle")] == 0
    found = samples_by_name(result)
    assert found["pg_settings_max_connections"] == {(): 100}
    assert found["pg_settings_superuser_reserved_connections"] == {(): 3}
    assert found["pg_up"] == {(): 1}


async def test_one_statement_and_one_connection_per_target(
    admin: asyncpg.Connection, runner: Any
) -> None:
    """The floor: one SQL statement per run, and the same connection run after run."""
    await ensure_database(admin, "sp_stmts")
    stats = await asyncpg.connect(require_postgres().rsplit("/", 1)[0] + "/sp_stmts")
    try:
        await stats.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        role = await stats.fetchval("SELECT oid FROM pg_roles WHERE rolname = $1", PROBE_ROLE)
        probe_runner = runner(pg_target(probe_dsn("sp_stmts")))
        assert (await probe_runner.run()).success  # connects: what a connection costs, once
        await stats.execute("SELECT pg_stat_statements_reset($1::oid)", role)
        results = [await probe_runner.run() for _ in range(3)]
        rows = await stats.fetch(
            "SELECT query, calls FROM pg_stat_statements WHERE userid = $1", role
        )
        sessions = await stats.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 "
            "AND application_name = 'stackprobe'",
            PROBE_ROLE,
        )
    finally:
        await stats.close()

    assert all(r.success for r in results)
    # pg_stat_statements normalises the constants, so compare the statement's opening.
    assert [(r["query"].split("(")[0], r["calls"]) for r in rows] == [("WITH states", 3)]
    assert sessions == 1
    assert samples_by_name(results[-1])["stackprobe_pg_connects"] == {(): 1}


async def test_a_healthy_server_is_ok_with_its_evidence(
    admin: asyncpg.Connection, runner: Any
) -> None:
    probe_runner = runner(pg_target(probe_dsn()))
    first, second = await probe_runner.run(), await probe_runner.run()

    assert first.success and second.success, first.detail
    assert first.health() == second.health() == Verdict(Health.OK)
    shown, again = checked_evidence(first), checked_evidence(second)
    version = await admin.fetchval("SHOW server_version")
    assert shown["target"] == f"postgres postgresql://{PROBE_ROLE}@127.0.0.1:5432/postgres"
    assert shown["server"] == f"PostgreSQL {version.split()[0]}"
    assert shown["database"] == f"postgres on 127.0.0.1:5432 as {PROBE_ROLE}"
    assert re.fullmatch(r"new: connected in \d+\.\d ms", shown["connection"])
    assert again["connection"] == "reused: kept from an earlier run"
    assert re.fullmatch(r"1 statement in \d+\.\d ms", shown["query"])
    total = sum(samples_by_name(second)["pg_stat_activity_count"].values())
    assert again["sessions"].startswith(
        f"{int(total)} of 97 non-superusers may open, stackprobe's own not counted"
    )


async def test_a_dsn_given_as_a_secret_shows_only_the_servers_view(
    admin: asyncpg.Connection, runner: Any
) -> None:
    target = make_target(
        {"name": "db", "kind": "postgres", "dsn": {"from_env": "PGDSN"}, "timeout": "2s"},
        {"PGDSN": f"postgresql://{PROBE_ROLE}:{PROBE_PASSWORD}@127.0.0.1:5432/postgres"},
    )
    wrong = make_target(
        {"name": "db", "kind": "postgres", "dsn": {"from_env": "PGDSN"}, "timeout": "2s"},
        {"PGDSN": f"postgresql://{PROBE_ROLE}:CANARY-wrong-pw@127.0.0.1:5432/postgres"},
    )

    result, refused = await runner(target).run(), await runner(wrong).run()

    assert result.success, result.detail
    shown = checked_evidence(result)
    assert shown["target"] == "postgres <dsn from env PGDSN>"
    assert shown["database"] == f"postgres on 127.0.0.1:5432 as {PROBE_ROLE}"
    assert checked_evidence(refused)["target"] == "postgres <dsn from env PGDSN>"
    assert verdict(refused)[2] == "StackprobeCannotMeasure"


async def test_long_running_queries_degrade(admin: asyncpg.Connection, runner: Any) -> None:
    await ensure_database(admin, "sp_long")
    await end_sessions(admin, "sp_long")
    sleeper = await asyncpg.connect(require_postgres().rsplit("/", 1)[0] + "/sp_long")
    task = asyncio.create_task(sleeper.execute("SELECT pg_sleep(60)"))
    try:
        await asyncio.sleep(1.3)  # past the 1 s threshold
        result = await runner(pg_target(probe_dsn(), long_query_threshold="1s")).run()
    finally:
        task.cancel()
        sleeper.terminate()
        await end_sessions(admin, "sp_long")

    health, why, alert = verdict(result)
    assert result.success and health is Health.DEGRADED, result.health()
    assert alert == "PostgresLongRunningQueries"
    assert re.fullmatch(r"1 query in sp_long running over 1s, the oldest for \d\.\ds", why), why


async def test_sessions_idle_in_transaction_degrade(admin: asyncpg.Connection, runner: Any) -> None:
    await ensure_database(admin, "sp_idle")
    await end_sessions(admin, "sp_idle")
    dsn = require_postgres().rsplit("/", 1)[0] + "/sp_idle"
    held = [await asyncpg.connect(dsn) for _ in range(5)]
    try:
        for connection in held[:4]:
            await connection.execute("BEGIN; SELECT 1")
        probe_runner = runner(pg_target(probe_dsn()))
        four = await probe_runner.run()
        await held[4].execute("BEGIN; SELECT 1")
        five = await probe_runner.run()
    finally:
        for connection in held:
            connection.terminate()
        await end_sessions(admin, "sp_idle")

    assert verdict(four) == (Health.OK, "", "")
    assert verdict(five) == (
        Health.DEGRADED,
        "5 idle in transaction in sp_idle",
        "PostgresIdleInTransaction",
    )
    assert "5 idle in transaction" in checked_evidence(five)["sessions"]


def test_one_session_idle_in_transaction_past_five_minutes() -> None:
    """The rule's other arm, which a test cannot wait for: the oldest past 300 s."""
    found = _idle_in_transaction("app", 3, 432.0)

    assert found.verdict == Verdict(
        Health.DEGRADED,
        "3 idle in transaction in app, the oldest for 7m 12s",
        "PostgresIdleInTransaction",
    )


async def test_app_pools_checked_out(admin: asyncpg.Connection, runner: Any) -> None:
    """Active, idle in a transaction, or in an aborted one: checked out. Idle: in the pool."""
    await ensure_database(admin, "sp_pool")
    await end_sessions(admin, "sp_pool")
    dsn = require_postgres().rsplit("/", 1)[0] + "/sp_pool"
    in_tx, aborted, idle = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        await in_tx.execute("BEGIN; SELECT 1")
        await aborted.execute("BEGIN")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await aborted.execute("SELECT 1/0")
        alone = await runner(
            pg_target(probe_dsn(), app_pools={"sp_pool": {"size": 2, "max_overflow": 0}})
        ).run()
        on_ecs = await runner(
            pg_target(
                probe_dsn(),
                app_pools={"sp_pool": {"size": 1, "max_overflow": 1, "service": "backend"}},
            )
        ).run()
        # the last idle connection checked out too: no pool has one left to hand out
        idle.terminate()
        await wait_sessions(admin, "sp_pool", 2)
        full = await runner(
            pg_target(
                probe_dsn(),
                app_pools={"sp_pool": {"size": 2, "max_overflow": 0, "service": "backend"}},
            )
        ).run()
        may_overflow = await runner(
            pg_target(
                probe_dsn(),
                app_pools={"sp_pool": {"size": 2, "max_overflow": 3, "service": "backend"}},
            )
        ).run()
    finally:
        for connection in (in_tx, aborted, idle):
            connection.terminate()
        await end_sessions(admin, "sp_pool")

    assert verdict(alone) == (
        Health.FAILING,
        "sp_pool pool 100 % checked out (2 of 2)",
        "PostgresAppPoolExhausted",
    )
    assert (
        checked_evidence(alone)["pool"] == "sp_pool: 2 of 2 checked out (one process, no service)"
    )
    # Its capacity is per running task, which the ecs_service target measures: shown only.
    assert verdict(on_ecs) == (Health.OK, "", "")
    assert checked_evidence(on_ecs)["pool"] == (
        "sp_pool for backend: 2 checked out, 1 idle, 2 per running task"
    )
    # With none idle, a pool's worth out means every connection the pools hold is out.
    assert verdict(full) == (
        Health.FAILING,
        "sp_pool pools of backend hold no idle connection: 2 checked out, 2 per task with no "
        "overflow: the pools are full",
        "PostgresAppPoolExhausted",
    )
    assert verdict(may_overflow) == (
        Health.DEGRADED,
        "sp_pool pools of backend hold no idle connection: 2 checked out; each task may still "
        "open 3 more",
        "PostgresAppPoolExhausted",
    )


def test_a_pool_at_ninety_percent_is_degraded() -> None:
    finding, line = _pool("app", AppPool(size=5, max_overflow=5), 9, 1)
    below, _ = _pool("app", AppPool(size=5, max_overflow=5), 8, 2)

    assert finding is not None and below is None
    assert finding.verdict == Verdict(
        Health.DEGRADED, "app pool 90 % checked out (9 of 10)", "PostgresAppPoolExhausted"
    )
    assert line == "app: 9 of 10 checked out (one process, no service)"


async def test_slow_statements_degrade(admin: asyncpg.Connection, runner: Any) -> None:
    await ensure_database(admin, "sp_slow")
    slow = await asyncpg.connect(require_postgres().rsplit("/", 1)[0] + "/sp_slow")
    reset = (
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
        "WHERE datname = 'sp_slow'), 0)"
    )
    try:
        await slow.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await slow.execute(reset)
        await slow.execute("SELECT pg_sleep(1.05)")
        result = await runner(
            pg_target(probe_dsn("sp_slow"), pg_stat_statements={"enabled": True})
        ).run()
    finally:
        await slow.execute(reset)  # a slow statement left behind would show in other runs
        await slow.close()

    health, why, alert = verdict(result)
    assert (health, alert) == (Health.DEGRADED, "PostgresSlowStatements"), why
    assert re.fullmatch(r"statement -?\d+ in sp_slow averages 1\.\ds", why), why


async def test_a_steady_climb_in_connections_is_a_leak(
    admin: asyncpg.Connection, runner: Any
) -> None:
    """The last hour of runs, as the state keeps them, climbing 10 every 5 minutes: at that
    rate the limit (97) is passed within 4 hours."""
    probe_runner = runner(pg_target(probe_dsn()))
    now = asyncio.get_running_loop().time()
    probe_runner.state.trend.extend(
        (now - LEAK_STEP_SECONDS * (12 - step), 10 * step) for step in range(12)
    )

    result = await probe_runner.run()

    health, why, alert = verdict(result)
    assert (health, alert) == (Health.DEGRADED, "PostgresConnectionLeak"), why
    assert re.fullmatch(
        r"connections growing: \d+ now, \d+ in 4h at this rate, past the limit of 97", why
    ), why


def test_the_leak_trend_needs_an_hour() -> None:
    assert predict_linear([(0.0, 0), (3600.0, 10)], 3600.0 + 4 * 3600) == pytest.approx(50)
    assert predict_linear([(0.0, 0), (3000.0, 10)], 3000.0 + 4 * 3600) is None
    assert predict_linear([(0.0, 5)], 4 * 3600) is None


async def test_top_statements_when_enabled(admin: asyncpg.Connection, runner: Any) -> None:
    await ensure_database(admin, "sp_stmts")
    stats = await asyncpg.connect(require_postgres().rsplit("/", 1)[0] + "/sp_stmts")
    await stats.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await stats.close()

    await ensure_database(admin, "sp_no_stmts")  # never given the extension

    with_extension = await runner(
        pg_target(probe_dsn("sp_stmts"), pg_stat_statements={"enabled": True, "top": 3})
    ).run()
    without = await runner(
        pg_target(probe_dsn("sp_no_stmts"), pg_stat_statements={"enabled": True})
    ).run()

    found = samples_by_name(with_extension)
    # Rendered as the scheduler does: one series per statement and database, never twice,
    # though pg_stat_statements has a row per role.
    Renderer(all_metric_specs(KINDS)).render("db", with_extension.samples)
    assert found["stackprobe_pg_stat_statements_available"] == {(): 1}
    assert 1 <= len(found["pg_stat_statements_mean_exec_time_seconds"]) <= 3
    assert all(v >= 0 for v in found["pg_stat_statements_mean_exec_time_seconds"].values())
    assert samples_by_name(without)["stackprobe_pg_stat_statements_available"] == {(): 0}
    assert "pg_stat_statements_mean_exec_time_seconds" not in samples_by_name(without)


async def test_app_pools_are_exported_for_rules(admin: asyncpg.Connection, runner: Any) -> None:
    target = pg_target(
        probe_dsn(), app_pools={"aep": {"size": 5, "max_overflow": 10, "service": "backend"}}
    )
    result = await runner(target).run()

    found = samples_by_name(result)
    assert found["stackprobe_pg_app_pool_size"] == {("aep", "backend"): 5}
    assert found["stackprobe_pg_app_pool_max_overflow"] == {("aep", "backend"): 10}


@pytest.mark.parametrize(
    ("setup", "reason", "why", "alert"),
    [
        (
            "wrong_password",
            Reason.AUTH_FAILED,
            "stackprobe's own login is refused: password authentication failed for user "
            f'"{PROBE_ROLE}"',
            "StackprobeCannotMeasure",
        ),
        (
            "missing_database",
            Reason.DATABASE_MISSING,
            'database "sp_no_such_db" does not exist',
            "StackprobeCannotMeasure",
        ),
        (
            "refused",
            Reason.CONNECTION_REFUSED,
            "connection refused: PostgreSQL is down, starting or shutting down",
            "PostgresDown",
        ),
    ],
)
async def test_connection_failures(
    admin: asyncpg.Connection, runner: Any, setup: str, reason: Reason, why: str, alert: str
) -> None:
    target = {
        "wrong_password": pg_target(probe_dsn(), password="CANARY-wrong-pw"),
        "missing_database": pg_target(probe_dsn("sp_no_such_db")),
        "refused": pg_target(probe_dsn(port=free_port())),
    }[setup]

    result = await runner(target).run()

    assert (result.success, result.reason) == (False, reason), result.detail
    assert samples_by_name(result)["pg_up"] == {(): 0}
    assert verdict(result) == (Health.FAILING, why, alert)
    shown = checked_evidence(result)
    assert shown["target"] == target.describe()
    assert shown["connection"] == "new: the attempt failed"
    assert shown["error"] == result.detail


async def test_too_many_connections_for_role(admin: asyncpg.Connection, runner: Any) -> None:
    await admin.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sp_limited') THEN "
        f"CREATE ROLE sp_limited LOGIN PASSWORD '{PROBE_PASSWORD}' CONNECTION LIMIT 1; "
        "END IF; END $$"
    )
    holder = await asyncpg.connect(probe_dsn(user="sp_limited"), password=PROBE_PASSWORD)
    try:
        result = await runner(pg_target(probe_dsn(user="sp_limited"))).run()
    finally:
        await holder.close()

    assert result.reason == Reason.TOO_MANY_CLIENTS
    assert 'too many connections for role "sp_limited"' in result.detail
    assert verdict(result) == (
        Health.FAILING,
        'too many connections for role "sp_limited"',
        "PostgresDown",
    )


@pytest.fixture
def tiny_cluster() -> Iterator[ThrowawayCluster]:
    require_postgres()
    cluster = ThrowawayCluster(max_connections=6, reserved=2).create()
    yield cluster
    cluster.destroy()


async def test_a_full_server_is_too_many_clients_and_recovers(
    tiny_cluster: ThrowawayCluster, runner: Any
) -> None:
    """max_connections 6 with 2 reserved: four ordinary sessions leave only reserved slots;
    two more superuser sessions leave none. Both messages are too_many_clients."""
    admin = await asyncpg.connect(tiny_cluster.dsn(), password="admin")
    await admin.execute(f"CREATE ROLE app LOGIN PASSWORD '{PROBE_PASSWORD}'")
    await admin.close()
    ordinary = [
        await asyncpg.connect(tiny_cluster.dsn("app"), password=PROBE_PASSWORD) for _ in range(4)
    ]
    app_probe = runner(pg_target(tiny_cluster.dsn("app")))
    reserved_full = await app_probe.run()
    superusers = [await asyncpg.connect(tiny_cluster.dsn(), password="admin") for _ in range(2)]
    super_probe = runner(pg_target(tiny_cluster.dsn(), password="admin"))
    all_full = await super_probe.run()
    for connection in [*ordinary[:2], *superusers]:  # slots free again
        await connection.close()
    await asyncio.sleep(1.1)  # past the first reconnect pause
    recovered = await app_probe.run()
    for connection in ordinary[2:]:
        await connection.close()

    assert reserved_full.reason == Reason.TOO_MANY_CLIENTS
    assert "remaining connection slots are reserved" in reserved_full.detail
    assert verdict(reserved_full) == (
        Health.FAILING,
        "too many clients already: only reserved connection slots are left",
        "PostgresDown",
    )
    assert all_full.reason == Reason.TOO_MANY_CLIENTS
    assert "too many clients already" in all_full.detail
    assert verdict(all_full) == (
        Health.FAILING,
        "too many clients already: every connection slot is taken",
        "PostgresDown",
    )
    assert checked_evidence(all_full)["connection"] == "new: the attempt failed"
    assert recovered.success, recovered.detail
    assert verdict(recovered) == (Health.OK, "", "")
    assert samples_by_name(recovered)["stackprobe_pg_connection_errors"][("too_many_clients",)] == 1


async def test_a_server_stopped_mid_run_and_restarted(
    tiny_cluster: ThrowawayCluster, runner: Any
) -> None:
    probe_runner = runner(pg_target(tiny_cluster.dsn(), password="admin"))
    before = await probe_runner.run()
    tiny_cluster.stop()
    during = await probe_runner.run()
    tiny_cluster.start()
    await asyncio.sleep(1.1)  # past the first reconnect pause
    after = await probe_runner.run()

    assert before.success and after.success, after.detail
    assert during.reason == Reason.CONNECTION_REFUSED, during.detail
    assert verdict(during)[::2] == (Health.FAILING, "PostgresDown")
    errors = samples_by_name(after)["stackprobe_pg_connection_errors"]
    assert errors[("connection_closed",)] == 1  # the kept connection died with the server
    assert errors[("connection_refused",)] == 1
    assert samples_by_name(after)["stackprobe_pg_connects"] == {(): 2}


async def test_a_terminated_connection_is_replaced_within_the_run(
    admin: asyncpg.Connection, runner: Any
) -> None:
    probe_runner = runner(pg_target(probe_dsn()))
    assert (await probe_runner.run()).success
    pid = probe_runner.state.connection.get_server_pid()  # type: ignore[union-attr]
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.2)

    result = await probe_runner.run()

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found["stackprobe_pg_connection_errors"][("connection_closed",)] == 1
    assert found["stackprobe_pg_connects"] == {(): 2}
    assert re.fullmatch(
        r"new, replacing the kept one the server closed: \d+\.\d ms",
        checked_evidence(result)["connection"],
    )


async def test_a_slow_server_hits_statement_timeout_and_the_connection_is_kept(
    tiny_cluster: ThrowawayCluster, runner: Any
) -> None:
    """The probe's own query waits on a lock on pg_database; the server cancels it at the
    session's statement_timeout, and the probe keeps its connection (and so its slot)."""
    probe_runner = runner(
        pg_target(tiny_cluster.dsn(), password="admin", timeout="2s", statement_timeout="1s")
    )
    assert (await probe_runner.run()).success  # connected first: a new connection would wait
    blocker = await asyncpg.connect(tiny_cluster.dsn(), password="admin")
    await blocker.execute("BEGIN; LOCK TABLE pg_database IN ACCESS EXCLUSIVE MODE")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        slow = await probe_runner.run()
        took = loop.time() - started
    finally:
        await blocker.execute("ROLLBACK")
        await blocker.close()
    after = await probe_runner.run()

    assert slow.reason == Reason.STATEMENT_TIMEOUT, slow.detail
    assert verdict(slow) == (Health.FAILING, slow.detail, "PostgresDown")
    assert checked_evidence(slow)["connection"] == "reused: kept from an earlier run"
    assert 1.0 <= took < 2.0
    assert slow.detail.startswith("the probe's query ran past statement_timeout 1s")
    assert after.success, after.detail
    assert samples_by_name(after)["stackprobe_pg_connects"] == {(): 1}


async def test_a_server_that_fills_up_after_the_probe_connected_stays_visible(
    tiny_cluster: ThrowawayCluster, runner: Any
) -> None:
    """The point of a kept connection: when the slots run out, the probe still sees why."""
    admin = await asyncpg.connect(tiny_cluster.dsn(), password="admin")
    await admin.execute(f"CREATE ROLE app LOGIN PASSWORD '{PROBE_PASSWORD}'")
    await admin.close()
    probe_runner = runner(pg_target(tiny_cluster.dsn("app")))
    assert (await probe_runner.run()).success
    others = [
        await asyncpg.connect(tiny_cluster.dsn("app"), password=PROBE_PASSWORD) for _ in range(3)
    ]  # with the probe's, the four slots ordinary roles may use
    try:
        with pytest.raises(asyncpg.TooManyConnectionsError):
            await asyncpg.connect(tiny_cluster.dsn("app"), password=PROBE_PASSWORD)
        full = await probe_runner.run()
    finally:
        for connection in others:
            await connection.close()

    assert full.success, full.detail
    assert verdict(full) == (
        Health.FAILING,
        "connections 100 % of the 4 non-superusers may open (stackprobe's own included): "
        "new ones get too many clients",
        "PostgresConnectionsNearLimit",
    )
    counts = samples_by_name(full)["pg_stat_activity_count"]
    assert counts[("postgres", "idle")] == 3
    found = samples_by_name(full)
    assert found["pg_settings_max_connections"] == {(): 6}
    assert found["pg_settings_superuser_reserved_connections"] == {(): 2}


async def test_connections_near_the_limit_degrade_then_fail(runner: Any) -> None:
    """20 slots for non-superusers: 18 other sessions are 90 %; 19 and stackprobe's own
    leave none."""
    require_postgres()
    cluster = ThrowawayCluster(max_connections=22, reserved=2).create()
    held: list[asyncpg.Connection] = []
    try:
        probe_runner = runner(pg_target(cluster.dsn(), password="admin"))
        held += [await asyncpg.connect(cluster.dsn(), password="admin") for _ in range(17)]
        below = await probe_runner.run()
        held.append(await asyncpg.connect(cluster.dsn(), password="admin"))
        near = await probe_runner.run()
        held.append(await asyncpg.connect(cluster.dsn(), password="admin"))
        full = await probe_runner.run()
    finally:
        for connection in held:
            connection.terminate()
        cluster.destroy()

    assert verdict(below) == (Health.OK, "", "")
    assert verdict(near) == (
        Health.DEGRADED,
        "connections 90 % of the 20 non-superusers may open",
        "PostgresConnectionsNearLimit",
    )
    assert checked_evidence(near)["sessions"] == (
        "18 of 20 non-superusers may open, stackprobe's own not counted: 18 idle"
    )
    assert verdict(full)[::2] == (Health.FAILING, "PostgresConnectionsNearLimit")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (  # asyncio, for a host with two addresses, both refusing: text only, no causes
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 5432)"
            ),
            Reason.CONNECTION_REFUSED,
        ),
        (ConnectionError('PostgreSQL server at "db:5432" rejected SSL upgrade'), Reason.TLS),
        (
            asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
            Reason.STATEMENT_TIMEOUT,
        ),
        (asyncpg.QueryCanceledError("canceling statement due to user request"), Reason.OTHER),
    ],
)
def test_classify(exc: BaseException, reason: Reason) -> None:
    from stackprobe.probes.postgres import classify

    assert classify(exc) == reason


async def deadlock(first: asyncpg.Connection, second: asyncpg.Connection) -> None:
    """Each session locks one row, then waits for the other's: PostgreSQL aborts one."""
    transactions = (first.transaction(), second.transaction())
    for connection, transaction in zip((first, second), transactions, strict=True):
        await transaction.start()
        await connection.execute("SET LOCAL deadlock_timeout = '50ms'")
    await first.execute("UPDATE pair SET id = id WHERE id = 1")
    await second.execute("UPDATE pair SET id = id WHERE id = 2")
    outcomes = await asyncio.gather(
        first.execute("UPDATE pair SET id = id WHERE id = 2"),
        second.execute("UPDATE pair SET id = id WHERE id = 1"),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes].count(asyncpg.DeadlockDetectedError) == 1, outcomes
    for transaction in transactions:
        await transaction.rollback()


async def test_deadlocks_and_transactions_are_counted_by_database(
    admin: asyncpg.Connection, runner: Any
) -> None:
    await ensure_database(admin, "sp_deadlock")
    dsn = require_postgres().rsplit("/", 1)[0] + "/sp_deadlock"
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await first.execute(
            "CREATE TABLE IF NOT EXISTS pair (id int PRIMARY KEY);"
            "INSERT INTO pair VALUES (1), (2) ON CONFLICT DO NOTHING"
        )
        probe = runner(pg_target(probe_dsn("sp_deadlock")))
        before = await probe.run()
        assert before.health() == Verdict(Health.OK), before.health()
        counted = {
            name: value(before, name, "sp_deadlock")
            for name in ("pg_stat_database_deadlocks", "pg_stat_database_xact_rollback")
        }
        for _ in range(3):
            await deadlock(first, second)
        # a session's counts reach the view when it ends, or after up to 10 s idle
        await first.close()
        await second.close()

        async def seen() -> bool:
            after = await probe.run()
            return value(after, "pg_stat_database_deadlocks", "sp_deadlock") == (
                counted["pg_stat_database_deadlocks"] + 3
            )

        await wait_until_async(seen, 10, what="3 deadlocks counted")
        after = await probe.run()
    finally:
        await first.close()
        await second.close()

    # both transactions of each pair rolled back: the aborted one, and the other by us
    assert value(after, "pg_stat_database_xact_rollback", "sp_deadlock") >= (
        counted["pg_stat_database_xact_rollback"] + 6
    )
    assert verdict(after) == (
        Health.DEGRADED,
        "3 deadlocks in sp_deadlock in the last 15 minutes",
        "PostgresDeadlocks",
    )
    frozen = await admin.fetchval(
        "SELECT age(datfrozenxid) FROM pg_database WHERE datname = 'sp_deadlock'"
    )
    assert value(after, "pg_database_wraparound_age_datfrozenxid_seconds", "sp_deadlock") > 0
    assert value(after, "pg_database_wraparound_age_datfrozenxid_seconds", "sp_deadlock") <= (
        frozen
    )
    chunks = Renderer(all_metric_specs(KINDS)).render("db", after.samples)
    exposed = b"".join(chunks.values()).decode()
    # a counter: prometheus_client's exposition names it with _total
    assert 'pg_stat_database_deadlocks_total{datname="sp_deadlock",target="db"}' in exposed


async def rows(row: dict[str, Any]) -> tuple[list[_Finding], PostgresState]:
    """The per-database findings of a statement's answer, for ages no test can wait for."""
    state = PostgresState(pg_target(probe_dsn()))
    findings: list[_Finding] = []
    _database_samples(state, row, findings)
    return findings, state


async def test_wraparound_ages_page_ahead_and_at_the_horizon() -> None:
    def answer(xid_age: int, mxid_age: int) -> dict[str, Any]:
        return {"per_database": f'[["app", 1, 0, 0, {xid_age}, {mxid_age}]]'}

    quiet, _ = await rows(answer(999_999_999, 5))
    ahead, _ = await rows(answer(7, 1_000_000_000))
    imminent, state = await rows(answer(WRAPAROUND_IMMINENT, 7))

    assert quiet == []
    assert [f.verdict for f in ahead] == [
        Verdict(
            Health.DEGRADED,
            "app's oldest unfrozen multixact ID is 1,000,000,000 old: 46 % of the way to "
            "wraparound",
            "PostgresWraparoundApproaching",
        )
    ]
    assert [f.verdict for f in imminent] == [
        Verdict(
            Health.FAILING,
            "transaction IDs near wraparound in app: writes stop in 37,000,000 more",
            "PostgresWraparoundImminent",
        )
    ]
    assert state.oldest_unfrozen == (WRAPAROUND_IMMINENT, "app", "transaction")


async def test_deadlocks_outside_the_window_are_forgotten() -> None:
    """The window slides: deadlocks older than 15 minutes no longer count."""
    state = PostgresState(pg_target(probe_dsn()))
    points = state.deadlocks.setdefault("app", deque())
    now = asyncio.get_running_loop().time()
    points.append((now - DEADLOCK_WINDOW_SECONDS - 60, 0))
    points.append((now - DEADLOCK_WINDOW_SECONDS + 60, 3))
    findings: list[_Finding] = []

    _database_samples(state, {"per_database": '[["app", 1, 0, 5, 9, 9]]'}, findings)

    assert findings == []  # 5 now against the 3 within the window: 2
    assert points[0][0] == now - DEADLOCK_WINDOW_SECONDS + 60


def test_an_inactive_slot_holding_a_gibibyte_and_a_standby_behind() -> None:
    findings: list[_Finding] = []
    samples: list[Any] = []
    row = {
        "replica": True,
        "receiving": False,
        "replication_lag": 301.0,
        "slots": '[["cdc", "app", "logical", false, 1073741825, "extended"], '
        '["small", "", "physical", false, 1024, "reserved"], '
        '["live", "", "physical", true, 5368709120, "reserved"], '
        '["gone", "", "physical", false, 0, "lost"]]',
    }

    line = _replication(row, samples, findings)

    assert [f.verdict for f in findings] == [
        Verdict(
            Health.DEGRADED,
            "this standby is 5m 1s behind its primary, and no WAL receiver runs: it is cut off",
            "PostgresReplicationLagging",
        ),
        Verdict(
            Health.DEGRADED,
            "replication slot cdc has no consumer and keeps 1.0 GiB of WAL on disk",
            "PostgresReplicationSlotInactive",
        ),
        Verdict(
            Health.DEGRADED,
            "replication slot gone is lost: the WAL its consumer needs is gone, and the "
            "consumer must start over",
            "PostgresReplicationSlotLost",
        ),
    ]
    assert line == (
        "standby, 5m 1s behind, no WAL receiver running, 4 slots; inactive: cdc (logical, "
        "1.0 GiB), small (physical, 1.0 KiB)"
    )
    lost = {s.label_values: s.value for s in samples if s.spec.name.endswith("slot_lost")}
    assert lost == {("cdc", "app"): 0, ("small", ""): 0, ("live", ""): 0, ("gone", ""): 1}
    assert [s.value for s in samples if s.spec.name == "stackprobe_pg_wal_receiver_up"] == [0]


async def test_replication_slots_and_a_standby(runner: Any) -> None:
    require_postgres()
    primary = ThrowawayCluster(max_connections=10, reserved=2).create()
    standby: ThrowawayCluster | None = None
    try:
        standby = primary.standby("sp_standby")
        admin = await asyncpg.connect(primary.dsn(), password="admin")
        await admin.execute("SELECT pg_create_physical_replication_slot('sp_orphan', true)")
        on_primary = runner(pg_target(primary.dsn(), password="admin"))
        on_standby = runner(pg_target(standby.dsn(), password="admin"))

        async def streaming() -> bool:
            result = await on_primary.run()
            return value(result, "pg_replication_slots_active", "sp_standby", "") == 1

        await wait_until_async(streaming, 15, what="the standby streaming through its slot")
        held = value(
            await on_primary.run(), "pg_replication_slots_pg_wal_lsn_diff", "sp_orphan", ""
        )
        await admin.execute("CREATE TABLE t AS SELECT generate_series(1, 100000) AS n")
        written = await on_primary.run()

        assert value(written, "pg_replication_is_replica") == 0
        assert value(written, "pg_replication_lag_seconds") == 0
        assert value(written, "pg_replication_slots_active", "sp_orphan", "") == 0
        # the orphan keeps every byte written since: 100,000 rows are over a megabyte of WAL
        assert (
            value(written, "pg_replication_slots_pg_wal_lsn_diff", "sp_orphan", "")
            > held + 1_000_000
        )
        shown = checked_evidence(written)["replication"]
        assert re.fullmatch(
            r"primary, 2 slots; inactive: sp_orphan \(physical, \d+\.\d MiB\)", shown
        )
        assert written.health() == Verdict(Health.OK)  # under a gibibyte: nothing to say yet

        caught_up = await on_standby.run()
        assert value(caught_up, "pg_replication_is_replica") == 1
        replica_admin = await asyncpg.connect(standby.dsn(), password="admin")

        async def replayed() -> bool:
            return bool(await replica_admin.fetchval("SELECT to_regclass('t') IS NOT NULL"))

        await wait_until_async(replayed, 15, what="the standby replaying the table")
        assert value(await on_standby.run(), "pg_replication_lag_seconds") == 0
        assert value(await on_standby.run(), "stackprobe_pg_wal_receiver_up") == 1
        await replica_admin.execute("SELECT pg_wal_replay_pause()")
        await admin.execute("INSERT INTO t VALUES (0)")
        await asyncio.sleep(1.2)

        async def behind() -> bool:
            return value(await on_standby.run(), "pg_replication_lag_seconds") >= 1

        # received and not replayed: the lag is the age of the last transaction replayed
        await wait_until_async(behind, 15, what="the paused standby behind")
        assert checked_evidence(await on_standby.run())["replication"].startswith("standby, ")
        await replica_admin.execute("SELECT pg_wal_replay_resume()")
        await replica_admin.close()

        async def caught_up() -> bool:
            return value(await on_standby.run(), "pg_replication_lag_seconds") == 0

        await wait_until_async(caught_up, 15, what="the resumed standby caught up")
        # The primary gone: the standby has replayed all it received, and still it falls
        # behind (postgres_exporter's query would say 0 here).
        await admin.close()
        primary.stop("immediate")

        async def cut_off() -> bool:
            result = await on_standby.run()
            return (
                value(result, "stackprobe_pg_wal_receiver_up") == 0
                and value(result, "pg_replication_lag_seconds") >= 1
            )

        await wait_until_async(cut_off, 20, what="the standby cut off, its lag counting up")
        assert (
            checked_evidence(await on_standby.run())["replication"].startswith("standby, ")
            and "no WAL receiver running" in checked_evidence(await on_standby.run())["replication"]
        )
        primary.start()
        standby.destroy()

        async def orphaned() -> bool:
            result = await on_primary.run()
            return value(result, "pg_replication_slots_active", "sp_standby", "") == 0

        await wait_until_async(orphaned, 15, what="the standby's slot inactive once it is gone")
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()
