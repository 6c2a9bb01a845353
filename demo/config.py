"""The config stackprobe runs in the demo: every kind, pointed at the demo stack, written as
a user would write it (`stackprobe demo --print-config` shows it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from stackprobe.demo import world
from stackprobe.demo.faults import POOL_MAX_OVERFLOW, POOL_SIZE
from stackprobe.demo.site import SITE_NAME
from stackprobe.durations import format_duration

# The cloudwatch target's period: the demo writes its datapoints at high resolution.
CLOUDWATCH_PERIOD = 10.0
# The logs targets' ingestion_lag: moto stores a line as it is put, so 2 s cover the put
# itself (CloudWatch Logs needs the 60 s default).
DEMO_INGESTION_LAG = 2.0


@dataclass(frozen=True)
class Addresses:
    aws_endpoint: str
    https_port: int  # the site, as its users reach it
    tasks_port: int  # the backend tasks' own port
    dns_port: int
    ca_file: str
    load_balancer_dimension: str
    postgres_dsn: str
    postgres_password_env: str | None  # the variable holding the password, if one is set
    redis_url: str
    # the security groups of the demo's PostgreSQL and Redis, which the tasks must reach
    database_group: str = ""
    cache_group: str = ""


def demo_config(at: Addresses, interval: float, console: dict[str, Any] | None = None) -> str:
    """Every check each `interval`, given 80 % of it to finish; `console` is the landing
    page's section (the demo's Alertmanager, Prometheus and rules, with --with-alerts)."""
    # Slow past 2 s, or 70 % of a shorter run's time: loopback answers in milliseconds, so
    # only a stalled machine is slow, and a tighter bound would flap on a busy one.
    slow = format_duration(round(min(2.0, interval * 0.7), 3))
    # by address: the demo's DNS serves the aep-dns check, not this machine's resolver
    site = f"https://127.0.0.1:{at.https_port}"
    tls = {"ca_file": at.ca_file}
    postgres: dict[str, Any] = {
        "name": "aep-db",
        "kind": "postgres",
        "dsn": at.postgres_dsn,
        "app_pools": {
            _database(at.postgres_dsn): {
                "size": POOL_SIZE,
                "max_overflow": POOL_MAX_OVERFLOW,
                "service": world.BACKEND,
            }
        },
        "pg_stat_statements": {"enabled": True},
    }
    if at.postgres_password_env:
        postgres["password"] = {"from_env": at.postgres_password_env}
    # the ECS service behind the site's checks: the alerts name it, and an outage of the
    # service mutes the checks' own alerts in Alertmanager
    backend = {"service": world.BACKEND}
    targets: list[dict[str, Any]] = [
        {
            "name": "aep-live",
            "kind": "http",
            "role": "liveness",
            "url": f"{site}/health/live",
            "tls": tls,
            "labels": backend,
        },
        {
            "name": "aep-ready",
            "kind": "http",
            "role": "readiness",
            "url": f"{site}/health/ready",
            "tls": tls,
            "latency_threshold": slow,
            "labels": backend,
        },
        {
            "name": "aep-tiles",
            "kind": "http",
            "role": "endpoint",
            "url": f"{site}/tiles/WebMercatorQuad/3/4/2.png",
            "tls": tls,
            "latency_threshold": slow,
        },
        {
            "name": "aep-backend-tasks",
            "kind": "http",
            "discover": {
                "ecs": {
                    "cluster": world.CLUSTER,
                    "service": world.BACKEND,
                    "port": at.tasks_port,
                    "path": "/health/ready",
                }
            },
        },
        {
            "name": "aep-dns",
            "kind": "dns",
            "query": SITE_NAME,
            "server": f"127.0.0.1:{at.dns_port}",
        },
        postgres,
        # the Redis the backend uses: Redis down then explains the backend's `redis: false`
        {
            "name": "aep-redis",
            "kind": "redis",
            "url": at.redis_url,
            "labels": backend,
            "keys": ["celery"],  # the backend's task queue; empty (so absent) in the demo
        },
        {
            "name": "aep-ecs",
            "kind": "ecs_service",
            "cluster": world.CLUSTER,
            "expect_env": world.EXPECTED_ENV,
            # each task's CPU and memory, as the world writes them: every 10 s
            "task_resources": {"period": format_duration(CLOUDWATCH_PERIOD), "delay": "0s"},
            "security_groups": True,
            "reaches": [
                {"name": name, "port": port, "security_groups": [group]}
                for name, port, group in (
                    ("postgres", 5432, at.database_group),
                    ("redis", 6379, at.cache_group),
                )
                if group
            ],
        },
        {
            "name": "aep-alb",
            "kind": "alb",
            "load_balancers": [world.LOAD_BALANCER],
            "expect_health_check_path": "/health/live",
        },
        # the services' own logs: the lines the runbooks grep for, counted
        {
            "name": "aep-backend-logs",
            "kind": "logs",
            "log_groups": [world.LOG_GROUPS[world.BACKEND]],
            "signals": [
                "redis_transport_closed",
                "queuepool_exhausted",
                "code_error",
                "rate_limited",
                "connection_refused",
            ],
            "ingestion_lag": format_duration(DEMO_INGESTION_LAG),
            "labels": backend,
        },
        {
            "name": "aep-worker-logs",
            "kind": "logs",
            "log_groups": [world.LOG_GROUPS[world.WORKER]],
            "signals": ["too_many_clients", "code_error", "s3_upload_failed"],
            "ingestion_lag": format_duration(DEMO_INGESTION_LAG),
            "labels": {"service": world.WORKER},
        },
        {
            "name": "aep-jobs",
            "kind": "sqs",
            "queues": [world.QUEUE],
            "canary": {"queue": world.CANARY_QUEUE},
        },
        {"name": "aep-rasters", "kind": "s3", "buckets": [world.BUCKET], "canary": {}},
        {
            "name": "aep-cloudwatch",
            "kind": "cloudwatch",
            # the demo writes its datapoints as they happen, at high resolution; CloudWatch
            # would take a minute, and AWS's own ALB, ECS and SQS metrics have 60 s periods
            "period": format_duration(CLOUDWATCH_PERIOD),
            "delay": "0s",
            "albs": [{"load_balancer": at.load_balancer_dimension}],
            "ecs_services": [
                {"cluster": world.CLUSTER, "service": name} for name in world.SERVICES
            ],
            "sqs_queues": [world.QUEUE],
        },
        {
            # every instance in the region: the demo's database and its read replica. Twice
            # a period: its figures change no more often, and moto's GetMetricData, which
            # scans every datapoint it holds, can take seconds on a busy machine.
            "name": "aep-rds",
            "kind": "rds",
            "period": format_duration(CLOUDWATCH_PERIOD),
            "delay": "0s",
            "interval": format_duration(max(interval, CLOUDWATCH_PERIOD / 2)),
            "timeout": format_duration(max(interval, CLOUDWATCH_PERIOD / 2) * 0.8),
        },
        {
            # the Redis replication group's nodes, twice a period as aep-rds
            "name": "aep-cache",
            "kind": "elasticache",
            "clusters": [world.CACHE],
            "period": format_duration(CLOUDWATCH_PERIOD),
            "delay": "0s",
            "interval": format_duration(max(interval, CLOUDWATCH_PERIOD / 2)),
            "timeout": format_duration(max(interval, CLOUDWATCH_PERIOD / 2) * 0.8),
        },
    ]
    document = {
        "defaults": {
            "interval": format_duration(interval),
            "timeout": format_duration(round(interval * 0.8, 3)),
        },
        "aws": {"region": world.REGION, "endpoint_url": at.aws_endpoint},
        "targets": targets,
    }
    if console:
        document["console"] = console
    return yaml.safe_dump(document, sort_keys=False)


def _database(dsn: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(dsn).path.lstrip("/") or "postgres"
