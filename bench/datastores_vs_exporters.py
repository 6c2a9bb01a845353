"""stackprobe next to postgres_exporter and redis_exporter, in one run, on the same servers.

Against the PostgreSQL cluster `make test` starts and a Redis server of its own, it runs one
after the other, each for the same number of cycles:

- stackprobe with one postgres and one redis target (interval 1 s), counting its runs;
- Debian's prometheus-postgres-exporter and prometheus-redis-exporter at their defaults,
  scraped once a second as Prometheus would.

Each connects as a role and to a database of its own, so the server's own statistics say who
did what: pg_stat_statements (statements and server time, by role), pg_stat_database
(sessions opened, by database), pg_stat_activity (connections held), Redis INFO commandstats
and total_connections_received. Per cycle (stackprobe's probe run, an exporter's scrape) it
prints statements, PostgreSQL server time, Redis commands, new connections, connections held,
wall time and RSS, then the floors from the issue.

    make bench-datastores
    .venv/bin/python bench/datastores_vs_exporters.py --cycles 20
"""

# ruff: noqa: ASYNC210, ASYNC220  (a driver script: blocking here is deliberate)
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
import yaml
from processes import RedisServer, binary, floors, free_port, rss_mib, stackprobe_run, wait_http
from prometheus_client.parser import text_string_to_metric_families

ADMIN_DSN = os.environ.get(
    "STACKPROBE_TEST_PG_DSN", "postgresql://stackprobe_test:stackprobe_test@127.0.0.1:5432/postgres"
)
PASSWORD = "bench-only-password"
ROLES = {"stackprobe": "bench_stackprobe", "postgres_exporter": "bench_pgexporter"}


@dataclass
class Counts:
    """What the servers say one client did between two snapshots."""

    statements: int = 0
    server_ms: float = 0.0
    pg_sessions: int = 0
    pg_held: int = 0
    redis_commands: int = 0
    redis_by_command: dict[str, int] = field(default_factory=dict)
    redis_connections: int = 0
    redis_held: int = 0


class Servers:
    def __init__(self, admin: asyncpg.Connection, redis_port: int) -> None:
        self.admin = admin
        self.redis = aioredis.Redis(port=redis_port, driver_info=None)

    @classmethod
    async def prepare(cls, redis_port: int) -> Servers:
        admin = await asyncpg.connect(ADMIN_DSN)
        for role in ROLES.values():
            exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
            await admin.execute(f"GRANT pg_monitor TO {role}")
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", role):
                await admin.execute(f"CREATE DATABASE {role} OWNER {role}")
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return cls(admin, redis_port)

    async def snapshot(self, who: str) -> Counts:
        role = ROLES.get(who)
        counts = Counts()
        if role:
            row = await self.admin.fetchrow(
                "SELECT coalesce(sum(s.calls), 0)::int AS calls, "
                # plan time stays 0 unless pg_stat_statements.track_planning is on
                "coalesce(sum(s.total_exec_time + s.total_plan_time), 0)::float8 AS ms "
                "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
                "WHERE r.rolname = $1",
                role,
            )
            counts.statements, counts.server_ms = row["calls"], row["ms"]
            counts.pg_sessions = await self.admin.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = $1", role
            )
            counts.pg_held = await self.admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role
            )
        info = await self.redis.info("commandstats")
        counts.redis_by_command = {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()}
        counts.redis_commands = sum(counts.redis_by_command.values())
        counts.redis_connections = (await self.redis.info("stats"))["total_connections_received"]
        counts.redis_held = (await self.redis.info("clients"))["connected_clients"] - 1
        return counts


def delta(before: Counts, after: Counts, cycles: int, own_info_calls: int) -> dict[str, Any]:
    """Per cycle, with the measuring client's own Redis commands taken out."""
    by_command = {
        name: after.redis_by_command.get(name, 0) - before.redis_by_command.get(name, 0)
        for name in after.redis_by_command
    }
    by_command["info"] = by_command.get("info", 0) - own_info_calls
    by_command = {k: v for k, v in by_command.items() if v}
    return {
        "statements": (after.statements - before.statements) / cycles,
        "server_ms": (after.server_ms - before.server_ms) / cycles,
        "pg_sessions": (after.pg_sessions - before.pg_sessions) / cycles,
        "pg_held": after.pg_held,
        "redis_commands": sum(by_command.values()) / cycles,
        "redis_by_command": {k: v / cycles for k, v in sorted(by_command.items())},
        "redis_connections": (after.redis_connections - before.redis_connections) / cycles,
        "redis_held": after.redis_held,
    }


# The measuring client's own INFO calls between two snapshots: a snapshot sends three.
SNAPSHOT_INFO_CALLS = 3


async def measure(servers: Servers, who: str, cycles: int, step: Any) -> dict[str, Any]:
    """Warm up one cycle, then count `cycles` of them between two snapshots."""
    await step()
    before = await servers.snapshot(who)
    started = time.monotonic()
    for _ in range(cycles):
        await step()
    wall = time.monotonic() - started
    after = await servers.snapshot(who)
    figures = delta(before, after, cycles, SNAPSHOT_INFO_CALLS)
    figures["wall_s"] = wall / cycles
    return figures


_SUM = ("stackprobe_probe_run_duration_seconds", "_sum")
_COUNT = ("stackprobe_probe_run_duration_seconds", "_count")


async def run_stackprobe(
    servers: Servers, redis_port: int, cycles: int, tmp: Path
) -> dict[str, Any]:
    config = {
        "defaults": {"interval": "1s", "timeout": "900ms"},
        "targets": [
            {
                "name": "db",
                "kind": "postgres",
                "password": {"from_env": "PGPW"},
                "dsn": f"postgresql://{ROLES['stackprobe']}@127.0.0.1:5432/{ROLES['stackprobe']}",
            },
            {"name": "cache", "kind": "redis", "url": f"redis://127.0.0.1:{redis_port}/0"},
        ],
    }
    path = tmp / "stackprobe.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        stackprobe_run(path, port, "--log-level", "warning"),
        env={**os.environ, "PGPW": PASSWORD},
    )
    try:
        wait_http(url + "/-/ready")

        async def own(name: str, suffix: str) -> dict[str, float]:
            response = await client.get(url + "/metrics")
            return {
                s.labels["kind"]: s.value
                for f in text_string_to_metric_families(response.text)
                if f.name == name
                for s in f.samples
                if s.name.endswith(suffix) and s.labels.get("result") == "success"
            }

        async def one_cycle() -> None:
            """Wait until both targets have finished one more successful run."""
            start = await own("stackprobe_probe_runs", "_total")
            while True:
                await asyncio.sleep(0.05)
                now = await own("stackprobe_probe_runs", "_total")
                if all(now[k] > start[k] for k in ("postgres", "redis")):
                    return

        async with httpx.AsyncClient(timeout=10) as client:
            sums = await own("stackprobe_probe_run_duration_seconds", "_sum")
            counts = await own("stackprobe_probe_run_duration_seconds", "_count")
            figures = await measure(servers, "stackprobe", cycles, one_cycle)
            sums = {k: v - sums[k] for k, v in (await own(*_SUM)).items()}
            counts = {k: v - counts[k] for k, v in (await own(*_COUNT)).items()}
        # Wall time of a cycle: one postgres run and one redis run, as the runs timed them.
        figures["wall_s"] = sum(sums[k] / counts[k] for k in ("postgres", "redis"))
        figures["rss_mib"] = rss_mib(process.pid)[0]
        return figures
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


async def run_exporter(
    servers: Servers, who: str, command: list[str], env: dict[str, str], cycles: int
) -> dict[str, Any]:
    port = free_port()
    process = subprocess.Popen(
        [*command, f"--web.listen-address=127.0.0.1:{port}"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_http(url)
        timings: list[float] = []

        async def scrape() -> None:
            await asyncio.sleep(1)  # Prometheus' pace at a 1 s interval
            started = time.monotonic()
            httpx.get(url, timeout=30).raise_for_status()
            timings.append(time.monotonic() - started)

        figures = await measure(servers, who, cycles, scrape)
        figures["wall_s"] = sum(timings[-cycles:]) / cycles
        figures["rss_mib"] = rss_mib(process.pid)[0]
        return figures
    finally:
        process.terminate()
        process.wait(timeout=20)


def table(rows: dict[str, dict[str, Any]], keys: list[tuple[str, str, str]]) -> None:
    names = list(rows)
    print(f"{'per cycle / scrape':34}" + "".join(f"{n:>20}" for n in names))
    for key, label, fmt in keys:
        cells = "".join(f"{format(rows[n][key], fmt):>20}" for n in names)
        print(f"{label:34}{cells}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    redis_server = RedisServer().start()  # one of the bench's own, as the tests start theirs
    redis_port = redis_server.port
    servers = await Servers.prepare(redis_port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sp = await run_stackprobe(servers, redis_port, args.cycles, Path(tmp))
        pe = await run_exporter(
            servers,
            "postgres_exporter",
            [binary("prometheus-postgres-exporter")],
            {
                "DATA_SOURCE_NAME": f"postgresql://{ROLES['postgres_exporter']}:{PASSWORD}@127.0.0.1"
                f":5432/{ROLES['postgres_exporter']}?sslmode=disable"
            },
            args.cycles,
        )
        re = await run_exporter(
            servers,
            "redis_exporter",
            [binary("prometheus-redis-exporter"), f"--redis.addr=redis://127.0.0.1:{redis_port}"],
            {},
            args.cycles,
        )
    finally:
        await servers.admin.close()
        await servers.redis.aclose()
        redis_server.stop()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {args.cycles} cycles each, one after the other; "
        f"PostgreSQL {await _pg_version()}, Redis {_redis_version()}"
    )
    print("\n## PostgreSQL")
    table(
        {"stackprobe": sp, "postgres_exporter": pe},
        [
            ("statements", "SQL statements", ".2f"),
            ("server_ms", "server exec time (ms)", ".3f"),
            ("pg_sessions", "new connections", ".2f"),
            ("pg_held", "connections held", "d"),
        ],
    )
    print("\n## Redis")
    table(
        {"stackprobe": sp, "redis_exporter": re},
        [
            ("redis_commands", "commands", ".2f"),
            ("redis_connections", "new connections", ".2f"),
            ("redis_held", "connections held", "d"),
        ],
    )
    print(f"{'commands by name':34}{sp['redis_by_command']!s:>20}")
    print(f"{'':34}{'':>20}{re['redis_by_command']!s}")
    print("\n## process")
    table(
        {"stackprobe": sp, "postgres_exporter": pe, "redis_exporter": re},
        [
            ("wall_s", "wall time per cycle (s)", ".4f"),
            ("rss_mib", "RSS (MiB)", ".1f"),
        ],
    )
    ratio = pe["server_ms"] / sp["server_ms"] if sp["server_ms"] else float("inf")
    verdicts = [
        ("1 SQL statement per cycle", sp["statements"] == 1, f"{sp['statements']:.2f}"),
        (">= 10x less PostgreSQL server time", ratio >= 10, f"{ratio:.1f}x less"),
        ("<= 2 Redis commands per cycle", sp["redis_commands"] <= 2, f"{sp['redis_commands']:.2f}"),
        (
            "0 new PostgreSQL connections per cycle",
            sp["pg_sessions"] == 0,
            f"{sp['pg_sessions']:.2f}",
        ),
        (
            "0 new Redis connections per cycle",
            sp["redis_connections"] == 0,
            f"{sp['redis_connections']:.2f} (redis_exporter {re['redis_connections']:.2f})",
        ),
        # issue 19: one PostgreSQL and one Redis target in one process
        ("RSS <= 50 MiB", sp["rss_mib"] <= 50, f"{sp['rss_mib']:.1f} MiB"),
    ]
    return floors(verdicts)


async def _pg_version() -> str:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def _redis_version() -> str:
    done = subprocess.run([binary("redis-server"), "--version"], capture_output=True, text=True)
    return done.stdout.split()[2].removeprefix("v=")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
