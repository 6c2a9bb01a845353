"""PostgreSQL probe: connections by database and state against the server's limits, and the
slow failures that stop a database with no warning in its connections.

An exhausted connection pool shows first as sessions piling up by state (active, "idle in
transaction"), long-running queries, an application's checked-out connections reaching
pool_size x task_count, and at last "too many clients already": this probe measures each.
Beside them, from the same statement: deadlocks and rollbacks per database, the transaction
ID age that stops every write at wraparound, the WAL replication slots keep on disk, and a
standby's replay lag.

What it does differently from postgres_exporter, on purpose:
- One connection per target, kept open between runs (application_name `stackprobe`): the
  prober can never be what exhausts the pool, and it never pays a connection per scrape. A
  connection that fails is dropped and opened again at the next run, with a growing pause
  after repeated failures, so a server out of slots is not hammered.
- One SQL statement per run, answering everything at once, with a session statement_timeout
  below the run's timeout so a slow server cannot pile up probe queries; autocommit and
  read-only, so no transaction is ever left open.
- Metric names follow postgres_exporter's where it has the signal (`pg_up`,
  `pg_stat_activity_count`, `pg_stat_activity_max_tx_duration`, `pg_settings_*`), every
  database x state pair is exported even at zero, and stackprobe's own connection is not
  counted (it is always exactly one).

Beside the samples, each run gives the console a verdict with the thresholds of
alert_rules/postgres.rules.yml (the worst condition seen, naming the alert that pages on it)
and its evidence: the server's version, the database as the server names it, how the
connection was come by, the statement's duration and the sessions by state.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stackprobe.contract import (
    EVIDENCE_VALUE_MAX,
    Area,
    Evidence,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
    Verdict,
)
from stackprobe.durations import Duration
from stackprobe.probes._kept import KeptConnection, one_line
from stackprobe.probes._sizes import format_bytes
from stackprobe.secrets import SecretRef, StrOrSecret, credential_free_url, reveal
from stackprobe.target import TargetConfig

# asyncpg is imported by the first run of a postgres target, so a config without one never
# loads it.
if TYPE_CHECKING:
    import asyncpg

# The states pg_stat_activity reports for client backends, all exported even at zero:
# `starting` is PostgreSQL 18's authentication in progress, `unknown` a session whose state
# the probe's role may not see (it lacks pg_read_all_stats; stackprobe_pg_stats_visible 0).
STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
    "starting",
    "unknown",
)


class Reason(StrEnum):
    """Why a PostgreSQL probe failed; the label values of `stackprobe_probe_failure_reason`."""

    TOO_MANY_CLIENTS = "too_many_clients"  # SQLSTATE 53300: all three server messages
    AUTH_FAILED = "auth_failed"  # wrong password, unknown role, pg_hba.conf refusal
    CONNECTION_REFUSED = "connection_refused"  # nothing listens, or the server is starting
    TIMEOUT = "timeout"  # no connection or answer within the deadline
    DATABASE_MISSING = "database_missing"
    STATEMENT_TIMEOUT = "statement_timeout"  # the probe's own query was cancelled
    CONNECTION_CLOSED = "connection_closed"  # terminated by the server or the network
    TLS = "tls"
    DNS = "dns"
    OTHER = "other"


# The verdict's thresholds: those of alert_rules/postgres.rules.yml, so console and pager agree.
CONNECTIONS_NEAR_LIMIT = 0.9  # PostgresConnectionsNearLimit: pg:connections:used_ratio >= 0.9
APP_POOL_NEAR_FULL = 0.9  # PostgresAppPoolExhausted: pg:app_pool_connections:used_ratio >= 0.9
# PostgresAppPoolExhausted: the states pg:app_pool_connections:checked_out sums.
CHECKED_OUT_STATES = frozenset(
    {"active", "idle in transaction", "idle in transaction (aborted)", "fastpath function call"}
)
IDLE_IN_TRANSACTION_SESSIONS = 5  # PostgresIdleInTransaction: sessions idle in a tx >= 5
IDLE_IN_TRANSACTION_SECONDS = 300.0  # PostgresIdleInTransaction: oldest idle in a tx > 300 s
SLOW_STATEMENT_SECONDS = 1.0  # PostgresSlowStatements: mean_exec_time_seconds > 1
LEAK_STEP_SECONDS = 300.0  # PostgresConnectionLeak: the [3h:5m] subquery's step
LEAK_WINDOW_SECONDS = 3 * 3600.0  # PostgresConnectionLeak: the [3h:5m] subquery's range
LEAK_HORIZON_SECONDS = 4 * 3600.0  # PostgresConnectionLeak: predict_linear(..., 4 * 3600)
LEAK_MIN_SPAN_SECONDS = 3600.0  # PostgresConnectionLeak: its for: 1h, as the trend's least span
# PostgresWraparoundImminent: 40 million transactions before the 2^31 horizon PostgreSQL
# warns in every session; 3 million before it, it refuses every statement that writes.
WRAPAROUND_HORIZON = 2**31
WRAPAROUND_IMMINENT = WRAPAROUND_HORIZON - 40_000_000
WRAPAROUND_APPROACHING = 1_000_000_000  # PostgresWraparoundApproaching: half the horizon
SLOT_RETAINED_BYTES = 2**30  # PostgresReplicationSlotInactive: an inactive slot holding 1 GiB
REPLICATION_LAG_SECONDS = 300.0  # PostgresReplicationLagging: a standby 5 minutes behind
DEADLOCKS = 3  # PostgresDeadlocks: increase(...[15m]) >= 3
DEADLOCK_WINDOW_SECONDS = 900.0
# StackprobeCannotMeasure: failures of stackprobe's own access; PostgresDown pages on the rest.
CANNOT_MEASURE = frozenset({"auth_failed", "database_missing", "tls", "dns", "other"})


class AppPool(BaseModel):
    """An application's SQLAlchemy-style pool, so rules can compare the connections it has
    checked out with `size + max_overflow` per running task: an application whose sessions
    reach that many has no connection left to hand out, whatever the server's limits.

    `max_overflow` has no default: SQLAlchemy's is 10, and a guess either way is wrong for
    someone (0 pages for a pool with room left, 10 misses one that is full)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=1)
    max_overflow: int = Field(ge=0)
    service: str = ""  # the ECS service whose tasks hold this pool, for joins


class StatStatements(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    top: int = Field(10, ge=1, le=100)


class PostgresTarget(TargetConfig):
    kind: Literal["postgres"] = "postgres"
    dsn: StrOrSecret
    password: SecretRef | None = None
    long_query_threshold: Duration = 30.0
    statement_timeout: Duration | None = None
    app_pools: dict[str, AppPool] = Field(default_factory=dict)
    pg_stat_statements: StatStatements = StatStatements()

    @field_validator("dsn")
    @classmethod
    def _usable_dsn(cls, value: str | SecretRef) -> str | SecretRef:
        return credential_free_url(
            value,
            "dsn",
            ("postgres://", "postgresql://"),
            "postgresql://, e.g. postgresql://probe@db:5432/app",
            carries=frozenset({"password"}),
            fix="the DSN carries a password; give it as password: {from_env: VARIABLE}, or "
            "give the whole dsn as {from_env: VARIABLE}",
        )

    @model_validator(mode="after")
    def _statement_timeout_below_timeout(self) -> PostgresTarget:
        if self.statement_timeout is not None and self.statement_timeout >= self.timeout:
            raise ValueError(
                "statement_timeout must be below the timeout, or a slow server keeps running "
                "probe queries the probe has given up on"
            )
        return self

    def describe(self) -> str:
        if isinstance(self.dsn, SecretRef):
            return f"postgres <dsn from {self.dsn.source()}>"
        return f"postgres {self.dsn}"

    def session_statement_timeout(self) -> float:
        """Below the run's timeout, so the server cancels a slow probe query by itself."""
        return self.statement_timeout or max(0.1, self.timeout * 0.8)


def advice(target: PostgresTarget, targets: Sequence[TargetConfig]) -> list[str]:
    """A pool's capacity is its size times the service's running tasks, which only an
    ecs_service target measures: the rule joins the two on `service`."""
    found = []
    for datname, pool in target.app_pools.items():
        if not pool.service:
            found.append(
                f"PostgresAppPoolExhausted cannot fire for database {datname}: "
                f"app_pools.{datname} names no service; set service: to the ECS service whose "
                "tasks hold the pool, and cover it with an ecs_service target"
            )
        elif not any(
            # by kind name, not class: importing ecs_service would load it for every
            # PostgreSQL config (probes/__init__.py)
            t.kind == "ecs_service"
            and pool.service in (getattr(t, "services", ()) or [pool.service])
            for t in targets
        ):
            found.append(
                f"PostgresAppPoolExhausted cannot fire for database {datname}: no ecs_service "
                f"target covers service {pool.service} (the rule joins on "
                f"aws_ecs_service_running_tasks); add {pool.service} to the services of an "
                "ecs_service target for its cluster"
            )
    return found


PG_UP = MetricSpec("pg_up", "1 if the probe could connect and run its query, else 0.")
PG_STAT_ACTIVITY_COUNT = MetricSpec(
    "pg_stat_activity_count",
    "Client connections by database and state (stackprobe's own excluded).",
    ("datname", "state"),
)
PG_STAT_ACTIVITY_MAX_TX_DURATION = MetricSpec(
    "pg_stat_activity_max_tx_duration",
    "Seconds the oldest open transaction has run, by database and state.",
    ("datname", "state"),
)
PG_SETTINGS_MAX_CONNECTIONS = MetricSpec(
    "pg_settings_max_connections", "The server's max_connections."
)
PG_SETTINGS_SUPERUSER_RESERVED = MetricSpec(
    "pg_settings_superuser_reserved_connections",
    "The server's superuser_reserved_connections: slots ordinary roles cannot use.",
)
PG_SETTINGS_RESERVED = MetricSpec(
    "pg_settings_reserved_connections",
    "The server's reserved_connections (PostgreSQL 16+): slots only pg_use_reserved_connections "
    "members may use.",
)
PG_STATS_VISIBLE = MetricSpec(
    "stackprobe_pg_stats_visible",
    "1 if the probe's role sees every session's state (pg_read_all_stats), else 0: then other "
    "roles' sessions count under state unknown.",
)
PG_LONG_RUNNING = MetricSpec(
    "pg_stat_activity_long_running_queries",
    "Active queries running longer than long_query_threshold, by database.",
    ("datname",),
)
PG_OLDEST_QUERY = MetricSpec(
    "pg_stat_activity_oldest_query_seconds",
    "Seconds the oldest active query has run, by database (0 when none).",
    ("datname",),
)
PG_OLDEST_IDLE_TX = MetricSpec(
    "pg_stat_activity_oldest_idle_in_transaction_seconds",
    "Seconds the oldest session has sat idle in a transaction, by database (0 when none).",
    ("datname",),
)
PG_WAITING_ON_LOCKS = MetricSpec(
    "pg_stat_activity_waiting_on_locks",
    "Sessions waiting for a lock, by database.",
    ("datname",),
)
PG_STATEMENT_MEAN = MetricSpec(
    "pg_stat_statements_mean_exec_time_seconds",
    "Mean execution time of the slowest statements (top N), from pg_stat_statements.",
    ("queryid", "datname"),
)
PG_STATEMENT_CALLS = MetricSpec(
    "pg_stat_statements_calls",
    "Times each of the top-N statements ran, from pg_stat_statements.",
    ("queryid", "datname"),
)
PG_STAT_STATEMENTS_AVAILABLE = MetricSpec(
    "stackprobe_pg_stat_statements_available",
    "1 if pg_stat_statements (PostgreSQL 13+) can be read in the probe's database, else 0; "
    "only when enabled.",
)
PG_LONG_QUERY_THRESHOLD = MetricSpec(
    "stackprobe_pg_long_query_threshold_seconds",
    "The target's long_query_threshold, for rules on long-running queries.",
)
PG_XACT_COMMIT = MetricSpec(
    "pg_stat_database_xact_commit",
    "Transactions committed in each database, from pg_stat_database.",
    ("datname",),
    type="counter",
)
PG_XACT_ROLLBACK = MetricSpec(
    "pg_stat_database_xact_rollback",
    "Transactions rolled back in each database, from pg_stat_database; a pool's reset on "
    "return (SQLAlchemy's) counts here too.",
    ("datname",),
    type="counter",
)
PG_DEADLOCKS = MetricSpec(
    "pg_stat_database_deadlocks",
    "Deadlocks PostgreSQL detected in each database (each aborted one transaction).",
    ("datname",),
    type="counter",
)
PG_WRAPAROUND_XID = MetricSpec(
    "pg_database_wraparound_age_datfrozenxid_seconds",
    "age(datfrozenxid): transactions since each database's oldest unfrozen transaction ID; "
    "PostgreSQL refuses writes 3 million short of 2^31. A count of transactions, whatever "
    "the name (postgres_exporter's).",
    ("datname",),
)
PG_WRAPAROUND_MXID = MetricSpec(
    "pg_database_wraparound_age_datminmxid_seconds",
    "mxid_age(datminmxid): multixact IDs since each database's oldest, with the same 2^31 "
    "horizon. A count, whatever the name (postgres_exporter's).",
    ("datname",),
)
PG_IS_REPLICA = MetricSpec(
    "pg_replication_is_replica", "1 if the server is a standby (in recovery), else 0."
)
PG_REPLICATION_LAG = MetricSpec(
    "pg_replication_lag_seconds",
    "On a standby, seconds since the last transaction it replayed, 0 when it has replayed "
    "everything it received; 0 on a primary.",
)
PG_WAL_RECEIVER_UP = MetricSpec(
    "stackprobe_pg_wal_receiver_up",
    "On a standby, 1 while a WAL receiver process runs (it streams, or is connecting), else "
    "0: cut off from its primary.",
)
PG_SLOT_LOST = MetricSpec(
    "stackprobe_pg_replication_slot_lost",
    "1 if the slot's wal_status is `lost` (PostgreSQL 13+): max_slot_wal_keep_size removed WAL "
    "its consumer still needed, which must then start over.",
    ("slot_name", "database"),
)
PG_SLOT_ACTIVE = MetricSpec(
    "pg_replication_slots_active",
    "1 if a consumer is attached to the replication slot, else 0; database is empty for a "
    "physical slot.",
    ("slot_name", "database"),
)
PG_SLOT_RETAINED = MetricSpec(
    "pg_replication_slots_pg_wal_lsn_diff",
    "Bytes of WAL the slot keeps on disk: the server's WAL position minus the slot's "
    "restart_lsn. An inactive slot's only grows, until the disk is full.",
    ("slot_name", "database"),
)
PG_APP_POOL_SIZE = MetricSpec(
    "stackprobe_pg_app_pool_size",
    "Configured app_pools size per task, by database and ECS service.",
    ("datname", "service"),
)
PG_APP_POOL_MAX_OVERFLOW = MetricSpec(
    "stackprobe_pg_app_pool_max_overflow",
    "Configured app_pools max_overflow per task, by database and ECS service.",
    ("datname", "service"),
)
PG_CONNECTS = MetricSpec(
    "stackprobe_pg_connects",
    "Connections the probe has opened to the server (one per target, again after failures).",
    type="counter",
)
PG_CONNECTION_ERRORS = MetricSpec(
    "stackprobe_pg_connection_errors",
    "Errors the probe met, by reason, since stackprobe started; a kept connection the server "
    "closed (a restart, pg_terminate_backend) counts here even when the retry succeeds.",
    ("reason",),
    type="counter",
)

METRICS = (
    PG_UP,
    PG_STAT_ACTIVITY_COUNT,
    PG_STAT_ACTIVITY_MAX_TX_DURATION,
    PG_SETTINGS_MAX_CONNECTIONS,
    PG_SETTINGS_SUPERUSER_RESERVED,
    PG_SETTINGS_RESERVED,
    PG_STATS_VISIBLE,
    PG_LONG_RUNNING,
    PG_OLDEST_QUERY,
    PG_OLDEST_IDLE_TX,
    PG_WAITING_ON_LOCKS,
    PG_STATEMENT_MEAN,
    PG_STATEMENT_CALLS,
    PG_STAT_STATEMENTS_AVAILABLE,
    PG_XACT_COMMIT,
    PG_XACT_ROLLBACK,
    PG_DEADLOCKS,
    PG_WRAPAROUND_XID,
    PG_WRAPAROUND_MXID,
    PG_IS_REPLICA,
    PG_REPLICATION_LAG,
    PG_WAL_RECEIVER_UP,
    PG_SLOT_ACTIVE,
    PG_SLOT_RETAINED,
    PG_SLOT_LOST,
    PG_LONG_QUERY_THRESHOLD,
    PG_APP_POOL_SIZE,
    PG_APP_POOL_MAX_OVERFLOW,
    PG_CONNECTS,
    PG_CONNECTION_ERRORS,
)

# Everything in one statement: $1 is the long-query threshold in seconds. Sessions are client
# backends other than this one; databases are those that accept connections, and any other a
# session is in. Settings come from current_setting(), not the pg_settings view, which builds
# every setting to return two (measured: 0.89 ms against 0.20 ms for the whole statement).
# `now()` is taken before the activity snapshot, hence greatest(0, ...). Per database as well:
# pg_stat_database's counters and the wraparound ages; and replication as postgres_exporter
# reads it: a standby's lag is 0 when it has replayed all it received (an idle primary sends
# nothing), and a slot's retained WAL is measured from the WAL position a standby has too.
ACTIVITY_SQL_TEMPLATE = """
WITH states(state) AS (
  VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
         ('fastpath function call'), ('disabled'), ('starting'), ('unknown')
), sessions AS (
  SELECT datname, coalesce(state, 'unknown') AS state, xact_start, query_start, state_change,
         wait_event_type
  FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname IS NOT NULL
), dbs AS (
  SELECT datname FROM pg_database WHERE datallowconn
  UNION SELECT datname FROM sessions
)
SELECT
  current_setting('max_connections')::int AS max_connections,
  current_setting('superuser_reserved_connections')::int AS superuser_reserved,
  current_setting('reserved_connections', true)::int AS reserved,
  current_setting('autovacuum_freeze_max_age')::int8 AS freeze_max_age,
  pg_has_role('pg_read_all_stats', 'MEMBER') AS sees_all,
  (SELECT coalesce(json_agg(json_build_array(c.datname, c.state, c.n, c.max_tx)), '[]')
   FROM (SELECT d.datname, st.state, count(s.datname) AS n,
                coalesce(greatest(0, max(extract(epoch FROM now() - s.xact_start))), 0)::float8
                  AS max_tx
         FROM dbs d CROSS JOIN states st
         LEFT JOIN sessions s ON s.datname = d.datname AND s.state = st.state
         GROUP BY d.datname, st.state) c) AS by_state,
  (SELECT coalesce(json_agg(json_build_array(p.datname, p.long_running, p.oldest_query,
                                             p.oldest_idle_tx, p.waiting)), '[]')
   FROM (SELECT d.datname,
                count(s.datname) FILTER (
                  WHERE s.state = 'active' AND now() - s.query_start > make_interval(secs => $1)
                ) AS long_running,
                coalesce(greatest(0, max(extract(epoch FROM now() - s.query_start))
                         FILTER (WHERE s.state = 'active')), 0)::float8 AS oldest_query,
                coalesce(greatest(0, max(extract(epoch FROM now() - s.state_change))
                         FILTER (WHERE s.state LIKE 'idle in transaction%')), 0)::float8
                  AS oldest_idle_tx,
                count(s.datname) FILTER (WHERE s.wait_event_type = 'Lock') AS waiting
         FROM dbs d LEFT JOIN sessions s ON s.datname = d.datname
         GROUP BY d.datname) p) AS per_db,
  (SELECT coalesce(json_agg(json_build_array(d.datname, s.xact_commit, s.xact_rollback,
                                             s.deadlocks, age(d.datfrozenxid),
                                             mxid_age(d.datminmxid))), '[]')
   FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid
   WHERE d.datallowconn) AS per_database,
  pg_is_in_recovery() AS replica,
  EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS receiving,
  {lag}::float8 AS replication_lag,
  (SELECT coalesce(json_agg(json_build_array(r.slot_name, coalesce(r.database, ''), r.slot_type,
                                             r.active, coalesce(pg_wal_lsn_diff(
     CASE WHEN pg_is_in_recovery() THEN {receive_lsn} ELSE pg_current_wal_lsn() END,
     r.restart_lsn), 0)::float8, to_jsonb(r) ->> 'wal_status') ORDER BY r.slot_name), '[]')
   FROM pg_replication_slots r) AS slots
"""
# A standby's lag is 0 when it has replayed all it received *and* its WAL receiver runs: one
# cut off from its primary has replayed all it received too (postgres_exporter's blind spot).
STANDBY_LAG = """CASE WHEN NOT pg_is_in_recovery() THEN 0
       WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
            AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0
       ELSE coalesce(greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())), 0)
  END"""
# Aurora refuses the WAL position functions of a standby ("not supported for Aurora"): its
# readers share the writer's storage, and RdsReplicaLagging reads their lag from CloudWatch.
ACTIVITY_SQL = ACTIVITY_SQL_TEMPLATE.format(
    lag=STANDBY_LAG, receive_lsn="pg_last_wal_receive_lsn()"
)
AURORA_ACTIVITY_SQL = ACTIVITY_SQL_TEMPLATE.format(lag="NULL", receive_lsn="NULL::pg_lsn")

# Appended as one more column when pg_stat_statements is enabled and readable; $2 is N. One row
# per statement and database: the view has one per role (and per top-level flag) as well.
STATEMENTS_COLUMN = """,
  (SELECT coalesce(json_agg(json_build_array(t.queryid::text, t.datname, t.mean_ms, t.calls)),
                   '[]')
   FROM (SELECT s.queryid, d.datname,
                sum(s.total_exec_time) / nullif(sum(s.calls), 0) AS mean_ms,
                sum(s.calls) AS calls
         FROM {schema}.pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE s.queryid IS NOT NULL
         GROUP BY s.queryid, d.datname
         ORDER BY mean_ms DESC NULLS LAST LIMIT $2) t) AS top_statements
"""

# Run once per new connection, not per cycle: where pg_stat_statements lives, if anywhere.
STATEMENTS_SCHEMA_SQL = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""
# ... and whether it can be read with PostgreSQL 13's column names: loaded through
# shared_preload_libraries, updated after an upgrade, granted to the role.
STATEMENTS_PROBE_SQL = "SELECT mean_exec_time FROM {schema}.pg_stat_statements LIMIT 0"


@cache
def _statements_unreadable() -> tuple[type[Exception], ...]:
    """What the statement's statements column raises when the extension cannot be read
    after all."""
    import asyncpg

    return (
        asyncpg.UndefinedTableError,
        asyncpg.UndefinedColumnError,
        asyncpg.UndefinedFunctionError,
        asyncpg.ObjectNotInPrerequisiteStateError,
        asyncpg.InsufficientPrivilegeError,
    )


# Once per connection: what the evidence names (the server's own view, so never a DSN), and
# for PostgreSQL 14+ idle_session_timeout off for this session.
IDENTITY_SQL = """
SELECT current_database() AS db, current_user AS role, host(inet_server_addr()) AS addr,
       inet_server_port() AS port, to_regproc('aurora_version') IS NOT NULL AS aurora
"""
KEEP_IDLE_COLUMN = ", set_config('idle_session_timeout', '0', false) AS keep_idle"


@cache
def _closed() -> tuple[type[BaseException], ...]:
    """What a kept connection the server has closed since the last run raises on its next
    use."""
    import asyncpg

    return (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, ConnectionError)


class PostgresState(KeptConnection["asyncpg.Connection", Reason]):
    """The target's kept connection, and what it learnt on connecting."""

    def __init__(self, target: PostgresTarget) -> None:
        super().__init__()
        self.statements_sql: str | None = None  # the statement with its top-N column, if any
        self.activity_sql = ACTIVITY_SQL  # Aurora's, once the connection says it is Aurora
        # The evidence that changes only with the connection, built when it opens.
        self.described: tuple[str, str] = ("target", target.describe())
        self.server: Evidence = ()
        self.query_seconds = 0.0
        # PostgresConnectionLeak's trend: (event-loop time, sessions), one every step.
        self.trend: deque[tuple[float, int]] = deque(
            maxlen=int(LEAK_WINDOW_SECONDS / LEAK_STEP_SECONDS) + 1
        )
        self.predicted: float | None = None  # sessions the trend reaches at the horizon
        # PostgresDeadlocks' window: (event-loop time, deadlocks) per database, each run's.
        self.deadlocks: dict[str, deque[tuple[float, int]]] = {}
        # (age, database, "transaction" or "multixact"), the last run's oldest
        self.oldest_unfrozen: tuple[int, str, str] = (0, "", "transaction")

    async def close(self, connection: asyncpg.Connection, graceful: bool) -> None:
        import asyncpg

        if connection.is_closed():
            return
        if graceful:
            try:
                await connection.close(timeout=1)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                pass
        connection.terminate()


async def probe(target: PostgresTarget, ctx: ProbeContext) -> ProbeResult:
    state: PostgresState = ctx.state
    return await state.run(
        target,
        ctx,
        lambda: _query(target, state),
        ok=lambda row: _ok(target, state, row),
        failed=lambda reason, detail: _failed(target, state, reason, detail),
        classify=classify,
        detail=lambda reason, exc: _detail(reason, exc, target),
        keep=lambda exc: _connection_intact(exc, state),
    )


def _connection_intact(exc: BaseException, state: PostgresState) -> bool:
    """The server answered with an error (statement_timeout, a cancel) and the connection is
    fine: keeping it keeps the probe's slot on a server that is running out."""
    import asyncpg

    connection = state.connection
    return (
        connection is not None
        and not connection.is_closed()
        and isinstance(exc, asyncpg.PostgresError)
        and not isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.AdminShutdownError)
    )


async def _query(target: PostgresTarget, state: PostgresState) -> Any:
    """The statement on the kept connection or a new one; a kept one the server closed (a
    restart, pg_terminate_backend) counts as connection_closed, and the run goes on."""
    return await state.use(
        lambda: _connection(target, state),
        lambda connection: _fetch(target, state, connection),
        closed=lambda exc: isinstance(exc, _closed()),
        counted=lambda exc: Reason.CONNECTION_CLOSED,
    )


async def _connection(target: PostgresTarget, state: PostgresState) -> asyncpg.Connection:
    import asyncpg

    if state.connection is not None:
        if not state.connection.is_closed():
            return state.connection
        # The server closed it between runs (a restart, pg_terminate_backend): the
        # "connection closed" event, counted though the run goes on with a new one.
        state.count(Reason.CONNECTION_CLOSED)
        await state.drop()
    dsn = reveal(target.dsn)
    statement_timeout = int(target.session_statement_timeout() * 1000)
    connection = await asyncpg.connect(
        dsn,
        password=target.password.get() if target.password else None,
        timeout=target.timeout,
        statement_cache_size=4,
        server_settings={
            "application_name": "stackprobe",
            "statement_timeout": str(statement_timeout),
            "default_transaction_read_only": "on",
            "idle_in_transaction_session_timeout": str(statement_timeout),
        },
    )
    state.adopt(connection)
    # A server-wide idle_session_timeout shorter than the interval would close the kept
    # connection between runs. Not a startup setting: older servers refuse unknown ones.
    keep_idle = connection.get_server_version() >= (14, 0)
    row = await connection.fetchrow(IDENTITY_SQL + (KEEP_IDLE_COLUMN if keep_idle else ""))
    assert row is not None  # a SELECT without FROM has its one row
    version = str(connection.get_settings().server_version).split(" ", 1)[0]
    where = f"{row['addr']}:{row['port']}" if row["addr"] else "a local socket"
    state.server = (
        state.described,
        ("server", f"PostgreSQL {version}"),
        ("database", f"{row['db']} on {where} as {row['role']}"),
    )
    state.activity_sql = AURORA_ACTIVITY_SQL if row["aurora"] else ACTIVITY_SQL
    state.statements_sql = None
    if target.pg_stat_statements.enabled:
        state.statements_sql = await _statements_sql(connection, state.activity_sql)
    return connection


async def _statements_sql(connection: asyncpg.Connection, activity_sql: str) -> str | None:
    """The statement with its top-N column, if pg_stat_statements can be read here."""
    import asyncpg

    schema = await connection.fetchval(STATEMENTS_SCHEMA_SQL)
    if schema is None:
        return None
    quoted = '"' + str(schema).replace('"', '""') + '"'
    try:
        await connection.fetch(STATEMENTS_PROBE_SQL.format(schema=quoted))
    except asyncpg.PostgresError:
        return None
    return activity_sql + STATEMENTS_COLUMN.format(schema=quoted)


async def _fetch(
    target: PostgresTarget, state: PostgresState, connection: asyncpg.Connection
) -> Any:
    started = time.perf_counter()
    if state.statements_sql is not None:
        try:
            row = await connection.fetchrow(
                state.statements_sql, target.long_query_threshold, target.pg_stat_statements.top
            )
            state.query_seconds = time.perf_counter() - started
            return row
        except _statements_unreadable():
            state.statements_sql = None  # dropped or revoked since the connect: go on without
    row = await connection.fetchrow(state.activity_sql, target.long_query_threshold)
    state.query_seconds = time.perf_counter() - started
    return row


def _ok(target: PostgresTarget, state: PostgresState, row: Any) -> ProbeResult:
    """The samples, and on the way the few figures the verdict and the evidence need."""
    max_connections = row["max_connections"]
    superuser_reserved = row["superuser_reserved"]
    reserved = row["reserved"]
    samples = [
        PG_UP(1),
        PG_SETTINGS_MAX_CONNECTIONS(max_connections),
        PG_SETTINGS_SUPERUSER_RESERVED(superuser_reserved),
        PG_STATS_VISIBLE(1 if row["sees_all"] else 0),
    ]
    if reserved is not None:
        samples.append(PG_SETTINGS_RESERVED(reserved))
    pools = target.app_pools
    by_state: dict[str, int] = {}
    checked_out: dict[str, int] = {}
    pooled: dict[str, int] = {}  # sessions idle, outside a transaction: in the app's pool
    idle_in_tx: dict[str, int] = {}
    for datname, state_name, count, max_tx in json.loads(row["by_state"]):
        samples.append(PG_STAT_ACTIVITY_COUNT(count, datname, state_name))
        samples.append(PG_STAT_ACTIVITY_MAX_TX_DURATION(max_tx, datname, state_name))
        if count:
            by_state[state_name] = by_state.get(state_name, 0) + count
            if state_name.startswith("idle in transaction"):
                idle_in_tx[datname] = idle_in_tx.get(datname, 0) + count
            if datname in pools and state_name in CHECKED_OUT_STATES:
                checked_out[datname] = checked_out.get(datname, 0) + count
            if state_name == "idle":
                pooled[datname] = pooled.get(datname, 0) + count
    findings: list[_Finding] = []
    for datname, long_running, oldest, oldest_idle_tx, waiting in json.loads(row["per_db"]):
        samples += [
            PG_LONG_RUNNING(long_running, datname),
            PG_OLDEST_QUERY(oldest, datname),
            PG_OLDEST_IDLE_TX(oldest_idle_tx, datname),
            PG_WAITING_ON_LOCKS(waiting, datname),
        ]
        if long_running:
            findings.append(_long_running(target, datname, long_running, oldest))
        idle = idle_in_tx.get(datname, 0)
        if idle >= IDLE_IN_TRANSACTION_SESSIONS or oldest_idle_tx > IDLE_IN_TRANSACTION_SECONDS:
            findings.append(_idle_in_transaction(datname, idle, oldest_idle_tx))
    if target.pg_stat_statements.enabled:
        readable = row.get("top_statements") is not None
        samples.append(PG_STAT_STATEMENTS_AVAILABLE(1 if readable else 0))
        if readable:
            for queryid, datname, mean_ms, calls in json.loads(row["top_statements"]):
                samples.append(PG_STATEMENT_MEAN(mean_ms / 1000, queryid, datname))
                samples.append(PG_STATEMENT_CALLS(calls, queryid, datname))
                if mean_ms / 1000 > SLOW_STATEMENT_SECONDS:
                    findings.append(_slow_statement(queryid, datname, mean_ms / 1000))
    samples += _config_samples(target, state)
    samples += _database_samples(state, row, findings)
    replication = _replication(row, samples, findings)

    sessions = sum(by_state.values())
    limit = max_connections - superuser_reserved - (reserved or 0)
    if limit > 0 and (sessions >= CONNECTIONS_NEAR_LIMIT * limit or sessions + 1 >= limit):
        findings.append(_near_limit(sessions, limit))
    _trend(state, sessions)
    if state.predicted is not None and state.predicted > max_connections - superuser_reserved:
        findings.append(_leak(sessions, state.predicted, max_connections - superuser_reserved))
    evidence = [
        *state.server,
        state.via,
        ("query", f"1 statement in {state.query_seconds * 1000:.1f} ms"),
        ("sessions", _sessions(sessions, limit, by_state)),
        ("wraparound", _wraparound_line(state, row["freeze_max_age"])),
        ("replication", replication),
    ]
    if not row["sees_all"]:
        evidence.append(("note", "other roles' session states are hidden: no pg_read_all_stats"))
    for datname, pool in pools.items():
        finding, line = _pool(datname, pool, checked_out.get(datname, 0), pooled.get(datname, 0))
        evidence.append(("pool", line))
        if finding is not None:
            findings.append(finding)
    if not findings:
        return ProbeResult.ok(tuple(samples), evidence=tuple(evidence))
    findings.sort(key=lambda f: f.rank)
    evidence += [
        ("also", f"{f.verdict.why} [{f.verdict.alert}]" if f.verdict.alert else f.verdict.why)
        for f in findings[1:4]
    ]
    return ProbeResult.ok(tuple(samples), verdict=findings[0].verdict, evidence=tuple(evidence))


class _Finding:
    """One unhealthy condition an ok run saw; the worst goes on the console, in the order of
    its alert's priority (P1 first), the others into the evidence."""

    __slots__ = ("rank", "verdict")

    def __init__(self, health: Health, order: int, why: str, alert: str) -> None:
        self.rank = (health is not Health.FAILING, order)
        self.verdict = Verdict(health, why, alert)


def _near_limit(sessions: int, limit: int) -> _Finding:
    """PostgresConnectionsNearLimit counts other sessions only; with stackprobe's own every
    slot taken, new connections are refused now: failing, not near."""
    if sessions + 1 >= limit:
        return _Finding(
            Health.FAILING,
            0,
            f"connections {_percent(sessions + 1, limit)} % of the {limit} non-superusers may "
            "open (stackprobe's own included): new ones get too many clients",
            "PostgresConnectionsNearLimit",
        )
    return _Finding(
        Health.DEGRADED,
        0,
        f"connections {_percent(sessions, limit)} % of the {limit} non-superusers may open",
        "PostgresConnectionsNearLimit",
    )


def _pool(datname: str, pool: AppPool, checked_out: int, idle: int) -> tuple[_Finding | None, str]:
    """PostgresAppPoolExhausted's capacity is (size + max_overflow) x the service's running
    tasks, which only an ecs_service target measures. For a pool naming a service the kind
    judges what needs no task count: a warm pool keeps its connections open and idle between
    requests, so none idle in the database and at least one pool's worth checked out means
    every connection the pools hold is out: full when they may not overflow, nearly so when
    they may. One naming no service is taken as one process holding size + max_overflow."""
    per_task = pool.size + pool.max_overflow
    if pool.service:
        line = (
            f"{datname} for {pool.service}: {checked_out} checked out, {idle} idle, "
            f"{per_task} per running task"
        )
        if idle or checked_out < pool.size:
            return None, line
        why = (
            f"{datname} pools of {pool.service} hold no idle connection: {checked_out} checked out"
        )
        if pool.max_overflow:
            why += f"; each task may still open {pool.max_overflow} more"
            return _Finding(Health.DEGRADED, 1, why, "PostgresAppPoolExhausted"), line
        why += f", {pool.size} per task with no overflow: the pools are full"
        return _Finding(Health.FAILING, 1, why, "PostgresAppPoolExhausted"), line
    line = f"{datname}: {checked_out} of {per_task} checked out (one process, no service)"
    if checked_out < APP_POOL_NEAR_FULL * per_task:
        return None, line
    health = Health.FAILING if checked_out >= per_task else Health.DEGRADED
    percent = _percent(checked_out, per_task)
    why = f"{datname} pool {percent} % checked out ({checked_out} of {per_task})"
    return _Finding(health, 1, why, "PostgresAppPoolExhausted"), line


def _long_running(target: PostgresTarget, datname: str, count: int, oldest: float) -> _Finding:
    what = "query" if count == 1 else "queries"
    return _Finding(
        Health.DEGRADED,
        4,
        f"{count} {what} in {datname} running over {_duration(target.long_query_threshold)}, "
        f"the oldest for {_duration(oldest)}",
        "PostgresLongRunningQueries",
    )


def _idle_in_transaction(datname: str, count: int, oldest: float) -> _Finding:
    why = f"{count} idle in transaction in {datname}"
    if oldest > IDLE_IN_TRANSACTION_SECONDS:
        why += f", the oldest for {_duration(oldest)}"
    return _Finding(Health.DEGRADED, 5, why, "PostgresIdleInTransaction")


def _leak(sessions: int, predicted: float, limit: int) -> _Finding:
    return _Finding(
        Health.DEGRADED,
        8,
        f"connections growing: {sessions} now, {predicted:.0f} in 4h at this rate, past the "
        f"limit of {limit}",
        "PostgresConnectionLeak",
    )


def _slow_statement(queryid: str, datname: str, mean: float) -> _Finding:
    return _Finding(
        Health.DEGRADED,
        9,
        f"statement {queryid} in {datname} averages {mean:.1f}s",
        "PostgresSlowStatements",
    )


def _database_samples(state: PostgresState, row: Any, findings: list[_Finding]) -> list[Sample]:
    """pg_stat_database's counters and the wraparound ages, by database; the deadlocks each
    database saw in the rule's window, and the oldest unfrozen ID, for the verdict."""
    samples: list[Sample] = []
    now = asyncio.get_running_loop().time()
    oldest: tuple[int, str, str] = (0, "", "transaction")
    answered = json.loads(row["per_database"])
    for datname, commits, rollbacks, deadlocks, xid_age, mxid_age in answered:
        samples += [
            PG_XACT_COMMIT(commits, datname),
            PG_XACT_ROLLBACK(rollbacks, datname),
            PG_DEADLOCKS(deadlocks, datname),
            PG_WRAPAROUND_XID(xid_age, datname),
            PG_WRAPAROUND_MXID(mxid_age, datname),
        ]
        oldest = max(oldest, (xid_age, datname, "transaction"), (mxid_age, datname, "multixact"))
        recent = _increase(state.deadlocks.setdefault(datname, deque()), now, deadlocks)
        if recent >= DEADLOCKS:
            findings.append(
                _Finding(
                    Health.DEGRADED,
                    6,
                    f"{recent} deadlocks in {datname} in the last 15 minutes",
                    "PostgresDeadlocks",
                )
            )
    state.oldest_unfrozen = oldest
    for gone in state.deadlocks.keys() - {d[0] for d in answered}:  # dropped databases
        del state.deadlocks[gone]
    age, datname, counter = oldest
    if age >= WRAPAROUND_IMMINENT:
        left = max(0, WRAPAROUND_HORIZON - 3_000_000 - age)
        why = f"{counter} IDs near wraparound in {datname}: writes stop in {left:,} more"
        findings.append(_Finding(Health.FAILING, 2, why, "PostgresWraparoundImminent"))
    elif age >= WRAPAROUND_APPROACHING:
        why = (
            f"{datname}'s oldest unfrozen {counter} ID is {age:,} old: "
            f"{_percent(age, WRAPAROUND_HORIZON)} % of the way to wraparound"
        )
        findings.append(_Finding(Health.DEGRADED, 2, why, "PostgresWraparoundApproaching"))
    return samples


def _increase(points: deque[tuple[float, int]], now: float, value: int) -> int:
    """How much a counter grew over the deadlock window, from the runs within it as
    increase() takes the samples within its range; a counter that went down (pg_stat_reset,
    a restart) starts again from its new value."""
    if points and value < points[-1][1]:
        points.clear()
    points.append((now, value))
    while now - points[0][0] > DEADLOCK_WINDOW_SECONDS:
        points.popleft()
    return value - points[0][1]


def _replication(row: Any, samples: list[Sample], findings: list[_Finding]) -> str:
    """A standby's lag and the slots' retained WAL: the samples, the findings and the
    evidence line."""
    replica = bool(row["replica"])
    samples.append(PG_IS_REPLICA(1 if replica else 0))
    lag = None if row["replication_lag"] is None else float(row["replication_lag"])  # Aurora
    if lag is not None:
        samples.append(PG_REPLICATION_LAG(lag))
    if replica:
        samples.append(PG_WAL_RECEIVER_UP(1 if row["receiving"] else 0))
    if lag is not None and lag > REPLICATION_LAG_SECONDS:
        why = f"this standby is {_duration(lag)} behind its primary"
        if not row["receiving"]:
            why += ", and no WAL receiver runs: it is cut off"
        findings.append(_Finding(Health.DEGRADED, 7, why, "PostgresReplicationLagging"))
    slots = json.loads(row["slots"])
    inactive = []
    for slot_name, database, slot_type, active, retained, wal_status in slots:
        samples.append(PG_SLOT_ACTIVE(1 if active else 0, slot_name, database))
        samples.append(PG_SLOT_RETAINED(retained, slot_name, database))
        samples.append(PG_SLOT_LOST(1 if wal_status == "lost" else 0, slot_name, database))
        if wal_status == "lost":  # max_slot_wal_keep_size removed WAL its consumer needed
            why = (
                f"replication slot {slot_name} is lost: the WAL its consumer needs is gone, "
                "and the consumer must start over"
            )
            findings.append(_Finding(Health.DEGRADED, 3, why, "PostgresReplicationSlotLost"))
        elif not active:
            inactive.append(f"{slot_name} ({slot_type}, {format_bytes(retained)})")
            if retained > SLOT_RETAINED_BYTES:
                why = (
                    f"replication slot {slot_name} has no consumer and keeps "
                    f"{format_bytes(retained)} of WAL on disk"
                )
                findings.append(
                    _Finding(Health.DEGRADED, 3, why, "PostgresReplicationSlotInactive")
                )
    line = "primary"
    if replica:
        line = "standby" + ("" if lag is None else f", {_duration(lag)} behind")
        line += "" if row["receiving"] else ", no WAL receiver running"
    if slots:
        line += f", {len(slots)} slots"
        if inactive:
            line += f"; inactive: {', '.join(inactive)}"
    return line[:EVIDENCE_VALUE_MAX]


def _wraparound_line(state: PostgresState, freeze_max_age: int) -> str:
    age, datname, counter = state.oldest_unfrozen
    return (
        f"oldest unfrozen {counter} ID {age:,} old ({datname}); autovacuum forces a freeze "
        f"at {freeze_max_age:,}, writes stop at {WRAPAROUND_HORIZON - 3_000_000:,}"
    )


def _trend(state: PostgresState, sessions: int) -> None:
    """PostgresConnectionLeak's predict_linear over [3h:5m], from the runs this state has
    seen: a point every step, the least-squares line refitted only when one is added, and no
    prediction before the points span the rule's `for:` of an hour."""
    now = asyncio.get_running_loop().time()
    trend = state.trend
    if trend and now - trend[-1][0] < LEAK_STEP_SECONDS:
        return
    trend.append((now, sessions))
    state.predicted = predict_linear(trend, now + LEAK_HORIZON_SECONDS)


def predict_linear(points: Sequence[tuple[float, int]], at: float) -> float | None:
    """The least-squares line through the points, at time `at`, as Prometheus's
    predict_linear; None while they span less than LEAK_MIN_SPAN_SECONDS."""
    if len(points) < 2 or points[-1][0] - points[0][0] < LEAK_MIN_SPAN_SECONDS:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in points)
    variance = sum((t - mean_t) ** 2 for t, _ in points)
    slope = covariance / variance
    return mean_v + slope * (at - mean_t)


def _sessions(sessions: int, limit: int, by_state: dict[str, int]) -> str:
    states = ", ".join(f"{n} {name}" for name, n in by_state.items())
    text = f"{sessions} of {limit} non-superusers may open, stackprobe's own not counted"
    return f"{text}: {states}"[:EVIDENCE_VALUE_MAX] if states else text


def _percent(part: int, whole: int) -> int:
    """Rounded down, so 90 % shows only at the threshold itself."""
    return part * 100 // whole


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s".replace(".0s", "s")
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def _config_samples(target: PostgresTarget, state: PostgresState) -> list[Sample]:
    """What the run reports whether or not the server answered; every error reason is present
    from the start, so rate() sees the first one too."""
    samples = [
        PG_LONG_QUERY_THRESHOLD(target.long_query_threshold),
        PG_CONNECTS(state.connects),
        *(PG_CONNECTION_ERRORS(state.errors[r], r.value) for r in Reason),
    ]
    for datname, pool in target.app_pools.items():
        samples.append(PG_APP_POOL_SIZE(pool.size, datname, pool.service))
        samples.append(PG_APP_POOL_MAX_OVERFLOW(pool.max_overflow, datname, pool.service))
    return samples


def _failed(
    target: PostgresTarget, state: PostgresState, reason: StrEnum, detail: str
) -> ProbeResult:
    """Failing either way: PostgresDown pages for a server that refuses, is full or does not
    answer; StackprobeCannotMeasure for stackprobe's own access (its login, its setup)."""
    alert = "StackprobeCannotMeasure" if reason in CANNOT_MEASURE else "PostgresDown"
    evidence = (state.described, state.via, ("error", detail[:EVIDENCE_VALUE_MAX]))
    return ProbeResult.failed(
        reason,
        detail,
        (PG_UP(0), *_config_samples(target, state)),
        verdict=Verdict(Health.FAILING, _why(reason, detail), alert),
        evidence=evidence,
    )


def _why(reason: StrEnum, detail: str) -> str:
    """The failure in on-call words; the server's own message where it says it best."""
    message = detail.split(": ", 1)[-1]
    if reason == Reason.TOO_MANY_CLIENTS:
        if "too many connections for role" in message:
            return message  # the role's CONNECTION LIMIT, not the server's
        if "reserved" in message:
            return "too many clients already: only reserved connection slots are left"
        return "too many clients already: every connection slot is taken"
    if reason == Reason.CONNECTION_REFUSED:
        return "connection refused: PostgreSQL is down, starting or shutting down"
    if reason == Reason.CONNECTION_CLOSED:
        return f"connection closed by the server or the network: {message}"
    if reason == Reason.AUTH_FAILED:
        return f"stackprobe's own login is refused: {message}"
    if reason in (Reason.TIMEOUT, Reason.STATEMENT_TIMEOUT):
        return detail
    return message


def classify(exc: BaseException) -> Reason:
    """asyncpg raises the server's SQLSTATE as its own class; sockets raise OSError."""
    import asyncpg

    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return Reason.TOO_MANY_CLIENTS
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return Reason.AUTH_FAILED  # wrong password (28P01), unknown role, pg_hba refusal (28000)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return Reason.DATABASE_MISSING
    if isinstance(exc, asyncpg.QueryCanceledError):
        # 57014 is also pg_cancel_backend ("due to user request"): not a slow server.
        return Reason.STATEMENT_TIMEOUT if "statement timeout" in str(exc) else Reason.OTHER
    if isinstance(exc, asyncpg.CannotConnectNowError | ConnectionRefusedError):
        return Reason.CONNECTION_REFUSED  # 57P03: starting up or shutting down
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT
    if isinstance(exc, ssl.SSLError) or (isinstance(exc, ConnectionError) and "SSL" in str(exc)):
        return Reason.TLS  # the handshake, or "rejected SSL upgrade" for sslmode=require
    if isinstance(exc, socket.gaierror):
        return Reason.DNS
    if isinstance(exc, OSError) and "Connect call failed" in str(exc):
        # asyncio's OSError("Multiple exceptions: ...") for a host with several addresses
        # (localhost: ::1 and 127.0.0.1), each refused; it keeps no structured causes.
        return Reason.CONNECTION_REFUSED
    if isinstance(
        exc,
        asyncpg.ConnectionDoesNotExistError
        | asyncpg.AdminShutdownError
        | asyncpg.PostgresConnectionError
        | ConnectionError,
    ):
        return Reason.CONNECTION_CLOSED
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return Reason.CONNECTION_CLOSED
    return Reason.OTHER


def _detail(reason: Reason, exc: BaseException, target: PostgresTarget) -> str:
    """One line for logs and the landing page. Server messages name roles and databases,
    never passwords; the redactor scrubs anything else on the way out."""
    if reason is Reason.TIMEOUT:
        return f"no connection or answer within {target.timeout:g}s"
    if reason is Reason.STATEMENT_TIMEOUT:
        return (
            f"the probe's query ran past statement_timeout "
            f"{target.session_statement_timeout():g}s: the server is slow"
        )
    if isinstance(exc, ValueError):  # asyncpg's DSN parser: its text may hold password pieces
        return f"{type(exc).__name__}: the DSN could not be used; check its escaping"
    return one_line(exc)


KIND = ProbeKind(
    "postgres",
    PostgresTarget,
    probe,
    METRICS,
    Reason,
    "PostgreSQL connections against the limits, wraparound, replication, deadlocks",
    state=PostgresState,
    advice=advice,
    area=Area.DATABASES,
)
