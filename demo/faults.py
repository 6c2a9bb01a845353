"""The demo's faults: each one plays a runbook incident on the demo stack, so stackprobe's
series, and the alerts on them, show it as they would in production.

A fault changes the world the way the incident does, not stackprobe's view of it: the ALB
reports the targets unhealthy, ECS stops the tasks, the queue really grows, connections to
the real PostgreSQL are really held and the real Redis really closes its clients.
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


@dataclass(frozen=True)
class Fault:
    name: str
    incident: str  # the runbook incident it plays
    what: str  # what it does to the stack


FAULTS = {
    f.name: f
    for f in (
        Fault(
            "redis-transport-closed",
            "AEP Incident 3",
            "/health/ready answers 503 with redis: false, and Redis closes its clients' "
            "connections every second",
        ),
        Fault(
            "scaled-to-zero",
            "AEP Incident 6 (complete outage)",
            "the backend service is scaled to 0: its tasks stop, its targets leave the ALB, "
            "/health/live and /health/ready answer 503",
        ),
        Fault(
            "unhealthy-targets",
            "AEP Incident 2",
            "the backend's target group checks /health, which the app does not serve: every "
            "target fails with Target.ResponseCodeMismatch",
        ),
        Fault(
            "db-pool-exhausted",
            "AEP Incident 4",
            "the backend's connection pools are used up: as many PostgreSQL connections as "
            "its tasks may hold sit idle in a transaction",
        ),
        Fault(
            "jobs-stuck",
            "VivaCampo Scenario 4",
            "the workers stop taking jobs: the queue grows and nothing is deleted",
        ),
        Fault(
            "oom-kill",
            "AEP Incident 1 (tasks restarting)",
            "a backend task is killed for running out of memory, and so is each replacement",
        ),
        Fault(
            "env-drift",
            "AEP Incident 5",
            "the backend is deployed without BUDGET_ENFORCEMENT_MODE=strict",
        ),
        Fault(
            "s3-growth",
            "VivaCampo Scenario 2",
            "S3 reports yesterday's bucket size 50 % above the day before's",
        ),
    )
}


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
        self._held: list[Any] = []  # the exhausted pool's connections
        self._killer: asyncio.Task[None] | None = None
        self.log = structlog.get_logger("stackprobe.demo")

    def state(self) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "on": f.name in self.on, "incident": f.incident, "what": f.what}
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

    async def _redis_transport_closed(self, on: bool) -> None:
        self.site.redis = not on
        if on:
            self._killer = asyncio.create_task(self._close_redis_clients())
        elif self._killer is not None:
            self._killer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._killer
            self._killer = None

    async def _close_redis_clients(self) -> None:
        """Each second, Redis closes the connections stackprobe keeps (it names them
        `stackprobe`), as the incident's closed their app's; no other client of this Redis
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
        if not on:
            for connection in self._held:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=5)
            self._held.clear()
            return
        try:
            for _ in range(self.pools):
                connection = await asyncpg.connect(self.postgres_dsn, timeout=5)
                self._held.append(connection)
                # what a leaked SQLAlchemy session looks like: idle, in a transaction (kept
                # even where the server would end such sessions)
                await connection.execute(
                    "SET idle_in_transaction_session_timeout = 0; BEGIN; SELECT 1"
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise FaultError(
                f"cannot open connections to PostgreSQL ({type(exc).__name__}); start it, or "
                "point the demo at one with --postgres-dsn"
            ) from None

    async def _jobs_stuck(self, on: bool) -> None:
        self.world.jobs_stuck = on

    async def _oom_kill(self, on: bool) -> None:
        await asyncio.to_thread(self.world.crash_loop, on)

    async def _env_drift(self, on: bool) -> None:
        await asyncio.to_thread(self.world.deploy_backend, on)

    async def _s3_growth(self, on: bool) -> None:
        await asyncio.to_thread(self.world.bucket_grew, on)
