"""Every dashboard query against a real Prometheus that scraped stackprobe probing a whole
stack: moto for AWS, the test PostgreSQL, a throwaway Redis, dnsmasq and a health endpoint.
A panel whose queries return nothing shows an empty graph at 3 a.m.; this test fails first."""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import pytest
import trustme
import yaml
from aiohttp import web

from stackprobe.app import App
from stackprobe.config import parse_config
from stackprobe.probes import KINDS
from stackprobe.secrets import Redactor
from stackprobe.server import make_web_app
from tests.aws import REGION, Inventory
from tests.conftest import free_port, require_binary
from tests.datastores import ADMIN_DSN, RedisServer, require_postgres
from tests.probes.test_dns import dnsmasq  # noqa: F401  (the fixture)
from tests.test_dashboards import DASHBOARDS, load, named_queries

ROOT = Path(__file__).parent.parent


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def cloudwatch_datapoints(inventory: Inventory) -> None:
    """What CloudWatch would hold: ALB, ECS and SQS figures in the last closed minutes."""
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    now = time.time()
    lb = inventory.load_balancers[0][1]
    cluster = inventory.clusters[0].cluster
    series = [
        ("AWS/ApplicationELB", "RequestCount", {"LoadBalancer": lb}, 500.0),
        ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", {"LoadBalancer": lb}, 5.0),
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", {"LoadBalancer": lb}, 1.0),
        ("AWS/ApplicationELB", "TargetResponseTime", {"LoadBalancer": lb}, 0.2),
        ("AWS/ECS", "CPUUtilization", {"ClusterName": cluster, "ServiceName": "svc-0"}, 40.0),
        ("AWS/ECS", "MemoryUtilization", {"ClusterName": cluster, "ServiceName": "svc-0"}, 60.0),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "jobs-0"}, 120.0),
    ]
    for minutes_ago in range(1, 6):
        at = datetime.fromtimestamp(math.floor(now / 60) * 60 - 60 * minutes_ago + 5, UTC)
        for namespace, metric, dims, value in series:
            cloudwatch.put_metric_data(
                Namespace=namespace,
                MetricData=[
                    {
                        "MetricName": metric,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                        "Timestamp": at,
                        "Value": value,
                    }
                ],
            )


def config_text(
    inventory: Inventory, health: int, tls: tuple[int, Path], dns: str, redis_url: str
) -> str:
    fast = {"interval": "2s", "timeout": "1500ms"}
    targets: list[dict[str, Any]] = []
    for raw in inventory.targets(percentiles=True):
        if raw["kind"] == "cloudwatch":
            raw = {
                **raw,
                "delay": "1m",
                "albs": [{"load_balancer": inventory.load_balancers[0][1]}],
            }
        targets.append({**raw, **fast})
    targets += [
        {"name": "site-live", "kind": "http", "url": f"http://127.0.0.1:{health}/health/live"},
        {
            "name": "site-ready",
            "kind": "http",
            "url": f"http://127.0.0.1:{health}/health/ready",
            "latency_threshold": "1s",
        },
        {
            "name": "site-tls",
            "kind": "http",
            "url": f"https://127.0.0.1:{tls[0]}/health/live",
            "tls": {"ca_file": str(tls[1])},
        },
        {"name": "site-dns", "kind": "dns", "query": "site.test", "server": dns},
        {
            "name": "db",
            "kind": "postgres",
            "dsn": ADMIN_DSN.replace(":stackprobe_test@", "@"),
            "password": {"from_env": "PG_PASSWORD"},
            "app_pools": {"postgres": {"size": 5, "max_overflow": 5, "service": "svc-0"}},
            "pg_stat_statements": {"enabled": True},
        },
        {"name": "cache", "kind": "redis", "url": redis_url},
    ]
    for target in targets[-6:]:
        target.update(fast)
    return yaml.safe_dump({"aws": {"region": REGION}, "targets": targets})


@pytest.fixture
async def stack(
    moto: None,
    dnsmasq: str,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[tuple[str, Inventory]]:
    require_postgres()
    inventory = Inventory(clusters=1, services=2, target_groups=2, queues=1, buckets=1)
    cloudwatch_datapoints(inventory)
    # a rollout ECS gave up on: EcsDeploymentFailed fires a minute in, so the firing-alerts
    # annotation has an alert to show
    from tests.aws import ecs_backend

    cluster = inventory.clusters[0].cluster
    ecs_backend().services[f"{cluster}:svc-0"].deployments[0]["rolloutState"] = "FAILED"

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "db": True, "redis": True})

    health_app = web.Application()
    health_app.router.add_get("/health/live", ready)
    health_app.router.add_get("/health/ready", ready)
    health, health_port = await serve(health_app)
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls_runner = web.AppRunner(health_app)
    await tls_runner.setup()
    tls_port = free_port()
    await web.TCPSite(tls_runner, "127.0.0.1", tls_port, ssl_context=server_context).start()
    redis = RedisServer().start()
    # a session idle in a transaction, so the panel for them has one to show
    idle = await asyncpg.connect(ADMIN_DSN)
    await idle.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    transaction = idle.transaction()
    await transaction.start()
    await idle.execute("SELECT 1")
    text = config_text(inventory, health_port, (tls_port, ca_file), dnsmasq, redis.url())
    config = parse_config(text, "<live>", KINDS, {"PG_PASSWORD": "stackprobe_test"})
    app = App(config, kinds=KINDS, redactor=Redactor(), config_path=None)
    app.start()
    exporter, port = await serve(make_web_app(app))
    try:
        yield f"127.0.0.1:{port}", inventory
    finally:
        await exporter.cleanup()
        await app.stop()
        await transaction.rollback()
        await idle.close()
        redis.stop()
        await health.cleanup()
        await tls_runner.cleanup()


@pytest.fixture
async def prometheus(stack: tuple[str, Inventory], tmp_path: Path) -> AsyncIterator[str]:
    binary = require_binary("prometheus")
    address, _ = stack
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted((ROOT / "alert_rules").glob("*.rules.yml"))],
        "scrape_configs": [{"job_name": "stackprobe", "static_configs": [{"targets": [address]}]}],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 20)


def dashboard_queries() -> dict[str, str]:
    """Each query of every panel, variable and annotation of every dashboard, by where."""
    return {
        f"{path.stem} {name}": expr
        for path in sorted(DASHBOARDS.glob("*.json"))
        for name, expr in named_queries(load(path)).items()
    }


async def test_every_panel_variable_and_annotation_returns_data(
    prometheus: str, stack: tuple[str, Inventory]
) -> None:
    _, inventory = stack
    wanted = dashboard_queries()
    empty = set(wanted)
    deployed = False
    async with httpx.AsyncClient(base_url=prometheus, timeout=5) as client:
        deadline = time.monotonic() + 120
        while empty and time.monotonic() < deadline:
            await asyncio.sleep(2)
            try:
                await client.get("/-/ready")
            except httpx.TransportError:
                continue
            if not deployed and time.monotonic() > deadline - 105:
                # a deployment while Prometheus watches: the deploy marker must show it
                stack_cluster = inventory.clusters[0]
                definition = stack_cluster.task_definition("app", {"X": "2"})
                stack_cluster.deploy("svc-1", definition)
                deployed = True
            for name in sorted(empty):
                params = {"query": wanted[name]}
                answer = (await client.get("/api/v1/query", params=params)).json()
                if answer.get("status") == "success" and answer["data"]["result"]:
                    empty.discard(name)

    assert not empty, f"no data for: {json.dumps(sorted(empty), indent=1)}"
