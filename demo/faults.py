"""The demo's faults: each one plays a runbook incident on the demo stack, so stackprobe's
series, and the alerts on them, show it as they would in production.

A fault changes the world the way the incident does, not stackprobe's view of it: the ALB
reports the targets unhealthy, ECS stops the tasks, the queue really grows, the app's
connections to the real PostgreSQL are really held and the real Redis really closes
stackprobe's connections. The backend's pools are warm from the start, as a running app's
are: `pools` connections open and idle.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog

from stackprobe.demo.site import SiteState
from stackprobe.demo.world import World

# The backend's SQLAlchemy pool per task (AEP Incident 4: "Default: 5 connections per task").
POOL_SIZE = 5
POOL_MAX_OVERFLOW = 0
# Between a service's desired count reaching 0 and its tasks leaving the load balancer, and
# between its new targets registering and passing their health checks: 300 s and up to
# 150 s on AWS by default, here shortened, the second still longer than the e2e's shortest
# `for` (5 s), as AWS's is longer than the rules' 1m.
DRAIN_SECONDS = 5.0
REGISTRATION_SECONDS = 8.0
# SQLAlchemy's pool_timeout: a request waits this long for a connection from a full pool
# before it fails and logs "QueuePool limit of size 5 overflow 0 reached".
POOL_TIMEOUT = 30.0
# How long switching redis-flapping off waits for its Redis client to close.
KILLER_STOP_SECONDS = 3.0


@dataclass(frozen=True)
class Fault:
    name: str
    incident: str  # the runbook incident it plays
    what: str  # what it does to the stack
    # The alerts of alert_rules/*.rules.yml it fires by itself, which page (those it mutes
    # aside); `stackprobe demo`'s banner says when (tests/test_demo_alerts.py checks them
    # against the rules and tests/support/incidents.py).
    alerts: tuple[str, ...] = ()


FAULTS = {
    f.name: f
    for f in (
        Fault(
            "bad-deploy",
            "AEP Incident 1 (all requests 5xx: roll back)",
            "the backend is deployed with code that fails every request but /health/live: "
            "/health/ready answers 500 and the ALB's requests end in 5xx",
            (
                "AlbMostRequests5xx",
                "HealthReadyFailing",
                "EcsTaskReadyFailing",
                "AppCodeErrorsAfterDeploy",
            ),
        ),
        Fault(
            "deploy-rolled-back",
            "AEP Incident 1 (a deployment in the last 30 minutes: rolled back)",
            "a worker deployment whose tasks fail to start: ECS's circuit breaker rolls it back "
            "to the revision it replaced",
            ("EcsDeploymentRolledBack",),
        ),
        Fault(
            "llm-rate-limited",
            "AEP Incident 1 (openai.RateLimitError in the logs)",
            "the LLM provider answers 429: the backend logs openai.RateLimitError",
            ("LlmRateLimitedLogged",),
        ),
        Fault(
            "5xx-spike",
            "AEP Incident 1 (ALB 5xx > 5 %)",
            "one request in ten to the backend ends in a 5xx",
            ("AlbHigh5xxRate",),
        ),
        Fault(
            "redis-transport-closed",
            "AEP Incident 3",
            "the app's pooled Redis connections are dead: /health/ready answers 503 with "
            "redis: false and requests log `RuntimeError: transport closed`, while Redis "
            "itself answers",
            ("AppRedisPoolBroken",),
        ),
        Fault(
            "redis-transport-intermittent",
            "AEP Incident 3 (intermittent)",
            "some of the backend's requests get a dead pooled Redis connection and log "
            "`RuntimeError: transport closed`; /health/ready, which opens its own, passes",
            ("AppRedisTransportClosedLogged",),
        ),
        Fault(
            "redis-flapping",
            "AEP Incident 3 (Redis dropping clients)",
            "Redis closes stackprobe's connections every second",
            ("RedisConnectionErrors",),
        ),
        Fault(
            "scaled-to-zero",
            "AEP Incident 6 (complete outage)",
            "the backend service is scaled to 0: its tasks stop, its targets leave the ALB, "
            "which answers every request with 503; /health/live and /health/ready too",
            ("EcsServiceScaledToZero", "HealthLiveFailing", "AlbMostRequests5xx"),
        ),
        Fault(
            "tasks-failing",
            "AEP Incident 6 (all tasks stopped: bad deploy)",
            "a backend deployment whose image cannot be pulled: the old tasks stop, every new "
            "one fails to start and the rollout FAILS; the ALB and the site answer 503",
            (
                "EcsServiceNoRunningTasks",
                "HealthLiveFailing",
                "EcsDeploymentFailed",
                "EcsServiceCrashLooping",
                "AlbMostRequests5xx",
            ),
        ),
        Fault(
            "alb-failed",
            "AEP Incident 6 (ALB offline)",
            "the load balancer leaves the active state and answers every request with 5xx itself",
            ("AlbNotActive", "AlbMostRequests5xx"),
        ),
        Fault(
            "dns-broken",
            "AEP Incident 6 (DNS not resolving)",
            "the site's name has no record any more: NXDOMAIN",
            ("DnsNotResolving",),
        ),
        Fault(
            "worker-deleted",
            "AEP Incident 6 (a service deleted by accident)",
            "the worker service is deleted",
            ("EcsServiceMissing",),
        ),
        Fault(
            "db-unreachable",
            "AEP Incident 2 (/health/ready 503: DB connection failing)",
            "the app's tasks cannot reach PostgreSQL (a security group change): /health/ready "
            "answers 503 with database: false, while PostgreSQL itself answers",
            ("DependencyComponentDown",),
        ),
        Fault(
            "unhealthy-targets",
            "AEP Incident 2",
            "the backend's target group checks /health, which the app does not serve: every "
            "target fails with Target.ResponseCodeMismatch",
            ("AlbUnhealthyTargets", "AlbNoHealthyTargets", "AlbHealthCheckPathDrift"),
        ),
        Fault(
            "oom-kill",
            "AEP Incident 2 / 6 (task not starting: OOM)",
            "a backend task is killed for running out of memory, and so is each replacement",
            ("EcsServiceCrashLooping",),
        ),
        Fault(
            "db-pool-exhausted",
            "AEP Incident 4",
            "the backend's pools are used up: every connection of its warmed pools sits idle "
            "in a transaction, and after SQLAlchemy's 30 s pool timeout requests log "
            "`QueuePool limit of size 5 overflow 0 reached`",
            (
                "PostgresAppPoolExhausted",
                "PostgresIdleInTransaction",
                "AppQueuePoolExhaustedLogged",
            ),
        ),
        Fault(
            "db-too-many-clients",
            "VivaCampo Scenario 1",
            "connections leak until PostgreSQL refuses new ones, and the workers log "
            "`FATAL: sorry, too many clients already`",
            ("PostgresConnectionsNearLimit", "PostgresTooManyClientsLogged"),
        ),
        Fault(
            "env-drift",
            "AEP Incident 5",
            "the backend is deployed without BUDGET_ENFORCEMENT_MODE=strict",
            ("EcsTaskDefinitionEnvDrift",),
        ),
        Fault(
            "access-logs-off",
            "AEP Incident 7 (containment: enable ALB access logs)",
            "the load balancer's access logs are switched off",
            ("AlbAccessLogsDisabled",),
        ),
        Fault(
            "s3-growth",
            "VivaCampo Scenario 2",
            "S3 reports yesterday's bucket size 50 % above the day before's",
            ("S3BucketGrowingFast",),
        ),
        Fault(
            "s3-upload-failing",
            "VivaCampo Scenario 2 (S3 upload failed)",
            "the workers' uploads to the rasters bucket are denied: they log `S3 upload failed "
            "... AccessDenied`",
            ("S3UploadFailuresLogged",),
        ),
        Fault(
            "rds-disk-full",
            "A full database disk (writes fail; PostgreSQL still answers)",
            "the RDS instance's storage is used up: its status turns storage-full and "
            "FreeStorageSpace falls to 1 %",
            ("RdsStorageFull",),
        ),
        Fault(
            "jobs-stuck",
            "VivaCampo Scenario 4",
            "the workers stop taking jobs: the queue grows and nothing is deleted",
            ("SqsJobsStuck",),
        ),
        Fault(
            "tiles-down",
            "VivaCampo Scenario 3 (map tiles not loading)",
            "the tile server answers 503",
            ("EndpointFailing",),
        ),
    )
}

# Connections db-too-many-clients opens at most, whatever the server's max_connections.
LEAK_MAX = 1000


class FaultError(Exception):
    """A fault that cannot be switched as asked; the message says why."""


class Faults:
    """Which faults are on, and the switch. World calls block, so they run in a thread."""

    def __init__(
        self, world: World, site: SiteState, postgres_dsn: str, redis_url: str, pools: int
    ) -> None:
        self.world = world
        self.site = site
        self.postgres_dsn = postgres_dsn
        self.redis_url = redis_url
        self.pools = pools  # connections the backend's pools may hold, all tasks together
        self.on: set[str] = set()
        self.lock = asyncio.Lock()
        self._pool: list[Any] = []  # the backend's warmed pools: open, idle between requests
        self._leaked: list[Any] = []  # db-too-many-clients' connections
        self._killer: asyncio.Task[None] | None = None
        self.log = structlog.get_logger("stackprobe.demo")

    def state(self) -> list[dict[str, Any]]:
        return [
            {
                "name": f.name,
                "on": f.name in self.on,
                "incident": f.incident,
                "what": f.what,
                "alerts": list(f.alerts),
            }
            for f in FAULTS.values()
        ]

    async def switch(self, name: str, on: bool) -> bool:
        """Switch a fault; whether it is on afterwards."""
        if name not in FAULTS:
            raise FaultError(f"no fault {name!r}; the faults are: {', '.join(FAULTS)}")
        async with self.lock:
            if (name in self.on) == on:
                return on
            switch = getattr(self, "_" + name.replace("-", "_"))
            try:
                await switch(on)
            except Exception as exc:  # the demo keeps running; the caller hears what failed
                if on:  # undo what the switch did before it failed, so the stack is whole
                    with contextlib.suppress(Exception):
                        await switch(False)
                if isinstance(exc, FaultError):
                    raise
                self.log.exception("fault switch failed", fault=name, on=on)
                raise FaultError(
                    f"switching {name} {'on' if on else 'off'} failed: {type(exc).__name__}: "
                    f"{exc}; see the demo's log"
                ) from None
            if on:
                self.on.add(name)
            else:
                self.on.discard(name)
            self.log.info("fault switched", fault=name, on=on)
            return on

    async def clear(self) -> None:
        """Every fault off, each tried whatever the others do (at shutdown)."""
        for name in FAULTS:
            try:
                await self.switch(name, False)
            except FaultError as exc:
                self.log.warning("could not switch a fault off", fault=name, error=str(exc))

    async def warm(self) -> None:
        """Open the backend's pools as a running app keeps them: `pools` connections, idle.
        Best effort: without a reachable PostgreSQL the database faults say why."""
        try:
            await self._fill_pool()
        except FaultError as exc:
            self.log.warning("the backend's pools stay cold", error=str(exc))

    async def close(self) -> None:
        await self.clear()
        for connection in self._pool:
            with contextlib.suppress(Exception):
                await connection.close(timeout=5)
        self._pool.clear()

    async def _connect(self) -> Any:
        try:
            return await asyncpg.connect(self.postgres_dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise FaultError(
                f"cannot open connections to PostgreSQL ({type(exc).__name__}); start it, or "
                "point the demo at one with --postgres-dsn"
            ) from None

    async def _fill_pool(self) -> None:
        self._pool = [c for c in self._pool if not c.is_closed()]
        while len(self._pool) < self.pools:
            self._pool.append(await self._connect())

    async def _redis_transport_closed(self, on: bool) -> None:
        # Redis is fine and so is stackprobe's connection to it; only the app's are dead
        self.site.redis = not on
        self.world.app_errors("redis-transport-closed", "transport_closed", on)

    async def _redis_transport_intermittent(self, on: bool) -> None:
        self.world.app_errors("redis-transport-intermittent", "transport_closed", on)

    async def _redis_flapping(self, on: bool) -> None:
        if on:
            self._killer = asyncio.create_task(self._close_redis_clients())
        elif self._killer is not None:
            # Cancelled, and given a bounded while to close its client: every fault switch
            # waits for this one (`switch` holds the lock), and a redis-py client cancelled
            # mid-command has taken more than 30 s to close (a CI run of the e2e incidents,
            # whose next switch timed out behind it). What is left of it ends on its own.
            self._killer.cancel()
            await asyncio.wait({self._killer}, timeout=KILLER_STOP_SECONDS)
            self._killer = None

    async def _close_redis_clients(self) -> None:
        """Each second, Redis closes the connections stackprobe keeps (it names them
        `stackprobe`), as a Redis dropping its clients would; no other client of this Redis
        (yours, on a laptop) is touched."""
        client = aioredis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            while True:
                try:
                    for connection in await client.client_list():
                        if connection.get("name") == "stackprobe":
                            await client.client_kill_filter(_id=connection["id"])
                except (aioredis.RedisError, OSError) as exc:
                    self.log.warning("cannot reach Redis to close its clients", error=str(exc))
                await asyncio.sleep(1)
        finally:
            with contextlib.suppress(Exception):  # TimeoutError included
                async with asyncio.timeout(KILLER_STOP_SECONDS):
                    await client.aclose()

    async def _scaled_to_zero(self, on: bool) -> None:
        if not on:
            await asyncio.to_thread(self.world.restore_backend)
            # new targets register (`initial`) before their health checks pass
            await asyncio.sleep(REGISTRATION_SECONDS)
            await asyncio.to_thread(self.world.backend_targets_registered)
            self.site.up = True
            return
        await asyncio.to_thread(self.world.scale_backend_to_zero)
        # ECS takes a while to stop the tasks and drain them from the target group (300 s
        # by default; shortened here): the cause shows before its symptoms, as it does on AWS
        await asyncio.sleep(DRAIN_SECONDS)
        await asyncio.to_thread(self.world.drain_backend)
        self.site.up = False

    async def _unhealthy_targets(self, on: bool) -> None:
        await asyncio.to_thread(self.world.backend_targets_unhealthy, on)

    async def _db_pool_exhausted(self, on: bool) -> None:
        self.world.app_errors("db-pool-exhausted", "queuepool", on, after=POOL_TIMEOUT)
        if not on:
            for connection in self._pool:
                with contextlib.suppress(Exception):
                    await connection.execute("ROLLBACK")
            return
        await self._fill_pool()
        for connection in self._pool:
            # what a leaked SQLAlchemy session looks like: checked out, idle in a transaction
            # (kept even where the server would end such sessions)
            await connection.execute("SET idle_in_transaction_session_timeout = 0; BEGIN")
            await connection.execute("SELECT 1")

    async def _db_too_many_clients(self, on: bool) -> None:
        if not on:
            self.world.app_errors("db-too-many-clients", "too_many_clients", False)
            for connection in self._leaked:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=5)
            self._leaked.clear()
            return
        while len(self._leaked) < LEAK_MAX:
            try:
                self._leaked.append(await asyncpg.connect(self.postgres_dsn, timeout=5))
            except asyncpg.TooManyConnectionsError:
                # "sorry, too many clients already": the leak has filled it, and the workers'
                # next connections are refused too
                self.world.app_errors("db-too-many-clients", "too_many_clients", True)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if self._leaked:  # a server that stops answering new connections is full too
                    self.world.app_errors("db-too-many-clients", "too_many_clients", True)
                    return
                await self._connect()  # says why none could be opened at all
        self.log.warning("stopped leaking connections before PostgreSQL refused one")

    async def _jobs_stuck(self, on: bool) -> None:
        self.world.jobs_stuck = on

    async def _oom_kill(self, on: bool) -> None:
        await asyncio.to_thread(self.world.crash_loop, on)

    async def _env_drift(self, on: bool) -> None:
        await asyncio.to_thread(self.world.deploy_backend, on)

    async def _bad_deploy(self, on: bool) -> None:
        # on: the broken release goes out; off: the rollback, a deployment of its own
        await asyncio.to_thread(self.world.deploy_backend)
        self.site.broken = on
        self.world.error_ratio = 1.0 if on else 0.0
        self.world.app_errors("bad-deploy", "code_error", on)

    async def _deploy_rolled_back(self, on: bool) -> None:
        await asyncio.to_thread(self.world.worker_rolled_back, on)

    async def _llm_rate_limited(self, on: bool) -> None:
        self.world.app_errors("llm-rate-limited", "rate_limited", on)

    async def _s3_upload_failing(self, on: bool) -> None:
        self.world.app_errors("s3-upload-failing", "s3_upload_failed", on)

    async def _5xx_spike(self, on: bool) -> None:
        self.world.error_ratio = 0.1 if on else 0.0

    async def _tasks_failing(self, on: bool) -> None:
        await asyncio.to_thread(self.world.backend_cannot_start, on)
        self.site.up = not on

    async def _alb_failed(self, on: bool) -> None:
        await asyncio.to_thread(self.world.load_balancer_failed, on)

    async def _db_unreachable(self, on: bool) -> None:
        self.site.database = not on

    async def _dns_broken(self, on: bool) -> None:
        self.site.dns = not on

    async def _worker_deleted(self, on: bool) -> None:
        await asyncio.to_thread(self.world.worker_deleted, on)

    async def _access_logs_off(self, on: bool) -> None:
        await asyncio.to_thread(self.world.access_logs, not on)

    async def _tiles_down(self, on: bool) -> None:
        self.site.tiles = not on

    async def _rds_disk_full(self, on: bool) -> None:
        await asyncio.to_thread(self.world.storage_full, on)

    async def _s3_growth(self, on: bool) -> None:
        await asyncio.to_thread(self.world.bucket_grew, on)
