"""stackprobe as a user runs it, against real PostgreSQL and Redis: reasons, recovery, one
connection per target across a reload, a clean promtool check, and canary passwords that
appear nowhere."""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.support.datastores import (
    PROBE_PASSWORD,
    PROBE_ROLE,
    RedisServer,
    ensure_probe_role,
    require_postgres,
)
from tests.support.exporter import Exporter, start_exporter, stop_exporter
from tests.support.processes import require_binary

REDIS_PASSWORD = "CANARY-redis-e2e-91ab"
WRONG = "CANARY-wrong-e2e-55cd"


def reasons(exporter: Exporter) -> dict[str, str | None]:
    metrics = exporter.metrics()
    found: dict[str, str | None] = {
        s.labels["target"]: None for s in metrics["probe_success"] if s.value == 1
    }
    for sample in metrics.get("stackprobe_probe_failure_reason", []):
        found[sample.labels["target"]] = sample.labels["reason"]
    return found


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer("--requirepass", REDIS_PASSWORD).start()
    yield server
    server.stop()


def config(redis_port: int, threshold: str = "30s") -> dict[str, Any]:
    def pg(name: str, password_env: str) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "postgres",
            "dsn": f"postgresql://{PROBE_ROLE}@127.0.0.1:5432/postgres",
            "password": {"from_env": password_env},
            "long_query_threshold": threshold,
        }

    def redis(name: str, password_env: str) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "redis",
            "url": f"redis://127.0.0.1:{redis_port}/0",
            "password": {"from_env": password_env},
        }

    return {
        "defaults": {"interval": "2s", "timeout": "1s"},
        "targets": [
            pg("db", "PG_PASSWORD"),
            pg("db-wrong-password", "WRONG_PASSWORD"),
            redis("cache", "REDIS_PASSWORD"),
            redis("cache-wrong-password", "WRONG_PASSWORD"),
        ],
    }


async def stackprobe_sessions() -> int:
    connection = await asyncpg.connect(require_postgres())
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 "
                "AND application_name = 'stackprobe'",
                PROBE_ROLE,
            )
        )
    finally:
        await connection.close()


def test_datastores_end_to_end(redis_server: RedisServer, tmp_path: Path) -> None:
    asyncio.run(_with_admin(ensure_probe_role))
    env = {"PG_PASSWORD": PROBE_PASSWORD, "REDIS_PASSWORD": REDIS_PASSWORD, "WRONG_PASSWORD": WRONG}
    exporter = start_exporter(tmp_path, config(redis_server.port), env)
    try:
        exporter.wait_ready()
        assert reasons(exporter) == {
            "db": None,
            "db-wrong-password": "auth_failed",
            "cache": None,
            "cache-wrong-password": "auth_failed",
        }
        assert asyncio.run(stackprobe_sessions()) == 1

        # Redis killed: the scrape keeps answering, the reason follows, then it recovers.
        redis_server.kill()
        exporter.until("cache refused", lambda: reasons(exporter)["cache"] == "connection_refused")
        started = time.monotonic()
        assert exporter.get("/metrics").status_code == 200
        assert time.monotonic() - started < 1
        redis_server.start()
        exporter.until("cache back", lambda: reasons(exporter)["cache"] is None)
        errors = {
            s.labels["reason"]: s.value
            for s in exporter.metrics()["stackprobe_redis_connection_errors"]
            if s.labels["target"] == "cache" and s.name.endswith("_total") and s.value
        }
        assert errors["connection_closed"] == 1 and errors["connection_refused"] >= 1

        # Redis frozen: the probe times out within its deadline while scrapes stay fast.
        redis_server.signal(signal.SIGSTOP)
        try:
            exporter.until("cache timing out", lambda: reasons(exporter)["cache"] == "timeout")
            started = time.monotonic()
            assert exporter.get("/metrics").status_code == 200
            assert time.monotonic() - started < 1
        finally:
            redis_server.signal(signal.SIGCONT)
        exporter.until("cache back", lambda: reasons(exporter)["cache"] is None)

        # A reload that changes the target: the old connection goes before the new one comes.
        exporter.config_path.write_text(yaml.safe_dump(config(redis_server.port, "10s")))
        exporter.process.send_signal(signal.SIGHUP)
        exporter.until("the reloaded threshold", lambda: _threshold(exporter) == 10.0)
        assert asyncio.run(stackprobe_sessions()) == 1

        promtool = require_binary("promtool")
        body = exporter.get("/metrics").content
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, check=False
        )
        # The one lint finding is postgres_exporter's own name, kept on purpose so its
        # dashboards and rules work unchanged (docs/metrics.md says so).
        assert (checked.stdout + checked.stderr).decode().splitlines() == [
            "pg_stat_activity_count non-histogram and non-summary metrics should not have "
            '"_count" suffix'
        ]

        outputs = {
            "metrics": body.decode(),
            "landing": exporter.get("/").text,
            "ready": exporter.get("/-/ready").text,
        }
    finally:
        stop_exporter(exporter)
    outputs["logs"] = exporter.logs()
    assert '"reason": "auth_failed"' in outputs["logs"]
    for secret in (PROBE_PASSWORD, REDIS_PASSWORD, WRONG):
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            for where, text in outputs.items():
                assert form not in text, f"{form} leaked into {where}"


def _threshold(exporter: Exporter) -> float | None:
    samples = exporter.metrics().get("stackprobe_pg_long_query_threshold_seconds", [])
    return next((s.value for s in samples if s.labels["target"] == "db"), None)


async def _with_admin(action: Any) -> None:
    connection = await asyncpg.connect(require_postgres())
    try:
        await action(connection)
    finally:
        await connection.close()
