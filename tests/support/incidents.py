"""The incidents the end-to-end test plays: for each, the demo's fault, the alerts it must fire
with their labels, what they must mute, and what the page must say. docs/alerts.md names the
incident that proves each P0 and P1 alert, and tests/test_alert_rules.py checks it here;
tests/e2e/test_incidents.py plays them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stackprobe.demo import world
from tests.support.e2e_stack import E2E, bystander_id
from tests.support.polling import wait_until

RUNBOOK = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md"
RECEIVERS = {
    "P0": ("pager", "incident-channel"),
    "P1": ("pager",),
    "P2": ("chat",),
    "P3": ("tickets",),
}
# the receivers that hear when an alert resolves (tickets are closed by hand)
HEAR_RESOLVED = {"pager", "incident-channel", "chat"}
FIRE_WITHIN = 90.0  # seconds
# CloudWatch-fed alerts: the demo's 10 s period must close before its figure is read
CLOUDWATCH_WITHIN = 120.0
# P3 alerts wait an hour in production, a minute here
POSTURE_WITHIN = 150.0

Step = Callable[[E2E, bool], None]


@dataclass
class Incident:
    name: str  # how docs/alerts.md refers to it
    runbook: str
    fault: str | None  # the demo's fault that plays it; None: only `also` does
    alerts: dict[str, dict[str, str]]  # alertname -> labels it must carry (priority included)
    muted: dict[str, dict[str, str]] = field(default_factory=dict)  # suppressed while it fires
    within: float = FIRE_WITHIN
    # what the demo's fault cannot do from inside, done before the alert it causes is awaited
    also: tuple[str, Step] | None = None
    # alertname -> words its description must hold (what the page tells the on-call)
    says: dict[str, str] = field(default_factory=dict)
    before: Step | None = None  # checked before the fault: what must stay quiet
    # alertname -> labels of alerts that must reach no receiver during the incident nor on
    # its way back, though what they count is seen: the `pattern` counts that must grow
    quiet: dict[str, dict[str, str]] = field(default_factory=dict)
    counted: tuple[str, ...] = ()

    def expected(self) -> list[tuple[str, dict[str, str]]]:
        return list(self.alerts.items())


def redis_down(e2e: E2E, on: bool) -> None:
    """Beyond the app's dead connections: Redis itself goes away, then comes back."""
    if on:
        # the demo's faults touch nobody's connection: another client's is still there
        assert bystander_id(e2e.redis) == e2e.bystander, "a fault closed someone else's client"
        e2e.redis.kill()
    else:
        e2e.redis.start()
        e2e.connect_bystander()


def postgres_down(e2e: E2E, on: bool) -> None:
    """PostgreSQL stops (VivaCampo: "Database down", P0), then starts again."""
    if on:
        e2e.postgres.stop()
    else:
        e2e.postgres.start()


def redis_full(e2e: E2E, on: bool) -> None:
    """Redis's maxclients down to the clients it has (stackprobe's and the bystander's), set
    over the bystander's own connection: a new one would be refused."""
    limit = 2 if on else 10000
    e2e.bystander_command(f"CONFIG SET maxclients {limit}")


def warmed_pool_is_quiet(e2e: E2E, on: bool) -> None:
    """The backend's warmed pools, 10 idle connections, fill the pools' capacity but page no
    one: idle connections are not checked out."""
    idle = 'pg_stat_activity_count{target="aep-db",state="idle"} >= 10'
    wait_until(
        lambda: e2e.query(idle),
        FIRE_WITHIN,
        what="the warmed pools' idle connections",
        interval=0.5,
    )
    # longer than the rule's `for`, on the test's clock
    time.sleep(8)
    assert not e2e.query('ALERTS{alertname="PostgresAppPoolExhausted"}')


BACKEND = {"service": world.BACKEND}
WORKER = {"service": world.WORKER}

# Independent incidents, each on its own part of the stack, played at once.
WAVES: list[list[Incident]] = [
    [
        Incident(
            "bad-deploy",
            "AEP Incident 1: a deploy that fails every request",
            "bad-deploy",
            {
                "AlbMostRequests5xx": {"priority": "P0"},
                # what the runbook checks first: /health/ready fails, on the site and each task
                "HealthReadyFailing": {"priority": "P1", "target": "aep-ready", **BACKEND},
                "EcsTaskReadyFailing": {"priority": "P1", "target": "aep-backend-tasks"},
                # and its logs: KeyError after the deploy, with the command that rolls it back
                "AppCodeErrorsAfterDeploy": {
                    "priority": "P1",
                    "target": "aep-backend-logs",
                    "pattern": "code_error",
                    **BACKEND,
                },
            },
            muted={"AlbHigh5xxRate": {}},
            within=CLOUDWATCH_WITHIN,
            says={
                "AlbMostRequests5xx": "within 30 minutes: consider a rollback",
                "AppCodeErrorsAfterDeploy": (
                    f"aws ecs update-service --cluster {world.CLUSTER} --service "
                    f"{world.BACKEND} --task-definition {world.BACKEND}:"
                ),
            },
        ),
        Incident(
            "deploy-rolled-back",
            "AEP Incident 1: a deployment ECS rolled back",
            "deploy-rolled-back",
            {"EcsDeploymentRolledBack": {"priority": "P1", **WORKER}},
            # the FAILED deployment stays listed until the rollback completes: not a page
            quiet={"EcsDeploymentFailed": WORKER},
            says={"EcsDeploymentRolledBack": f"back from {world.WORKER}:2 to {world.WORKER}:1"},
        ),
        Incident(
            "llm-rate-limited",
            "AEP Incident 1: openai.RateLimitError in the logs",
            "llm-rate-limited",
            {"LlmRateLimitedLogged": {"priority": "P2", "pattern": "rate_limited", **BACKEND}},
        ),
        Incident(
            "redis-transport-intermittent",
            "AEP Incident 3: transport closed, readiness passing",
            "redis-transport-intermittent",
            {
                "AppRedisTransportClosedLogged": {
                    "priority": "P1",
                    "target": "aep-backend-logs",
                    **BACKEND,
                }
            },
            says={"AppRedisTransportClosedLogged": world.LOG_GROUPS[world.BACKEND]},
        ),
        Incident(
            "s3-upload-failing",
            "VivaCampo Scenario 2: S3 upload failed",
            "s3-upload-failing",
            {"S3UploadFailuresLogged": {"priority": "P2", "target": "aep-worker-logs", **WORKER}},
        ),
        Incident(
            "jobs-stuck",
            "VivaCampo Scenario 4: worker jobs stuck",
            "jobs-stuck",
            {"SqsJobsStuck": {"priority": "P1", "queue": world.QUEUE}},
            within=CLOUDWATCH_WITHIN,
        ),
        Incident(
            "rds-disk-full",
            "A database disk that fills: every write fails",
            "rds-disk-full",
            {
                "RdsStorageFull": {
                    "priority": "P0",
                    "dimension_DBInstanceIdentifier": world.DATABASE,
                }
            },
            # the P1 ahead of it is silent while the disk is full, and on the way back
            quiet={"RdsStorageLow": {"dimension_DBInstanceIdentifier": world.DATABASE}},
            says={"RdsStorageFull": "status storage-full"},
            within=CLOUDWATCH_WITHIN,
        ),
        Incident(
            "s3-growth",
            "VivaCampo Scenario 2: S3 bucket growth",
            "s3-growth",
            {"S3BucketGrowingFast": {"priority": "P2", "bucket": world.BUCKET}},
        ),
        Incident(
            "dns-broken",
            "AEP Incident 6: DNS not resolving",
            "dns-broken",
            {"DnsNotResolving": {"priority": "P0", "target": "aep-dns"}},
            says={"DnsNotResolving": "nxdomain"},
        ),
        Incident(
            "tiles-down",
            "VivaCampo: map tiles not loading",
            "tiles-down",
            {"EndpointFailing": {"priority": "P1", "target": "aep-tiles"}},
            says={"EndpointFailing": "http_status"},
        ),
        Incident(
            "access-logs-off",
            "AEP Incident 7: ALB access logs off",
            "access-logs-off",
            {"AlbAccessLogsDisabled": {"priority": "P3", "load_balancer": world.LOAD_BALANCER}},
            within=POSTURE_WITHIN,
        ),
        Incident(
            "db-pool-exhausted",
            "AEP Incident 4: database pool exhausted",
            "db-pool-exhausted",
            {
                "PostgresAppPoolExhausted": {"priority": "P1", "target": "aep-db"},
                "PostgresIdleInTransaction": {"priority": "P2", "target": "aep-db"},
                # requests that waited the pool's 30 s and failed: from the logs, after the
                # pool figures have paged, and muting them from then on
                "AppQueuePoolExhaustedLogged": {
                    "priority": "P1",
                    "target": "aep-backend-logs",
                    **BACKEND,
                },
            },
            muted={"PostgresAppPoolExhausted": {"target": "aep-db", **BACKEND}},
            before=warmed_pool_is_quiet,
        ),
        Incident(
            "redis-flapping",
            "AEP Incident 3: Redis dropping its clients",
            "redis-flapping",
            {
                "RedisConnectionErrors": {
                    "priority": "P1",
                    "target": "aep-redis",
                    "reason": "connection_closed",
                }
            },
        ),
    ],
    [
        Incident(
            "5xx-spike",
            "AEP Incident 1: high 5xx error rate",
            "5xx-spike",
            {"AlbHigh5xxRate": {"priority": "P1"}},
            within=CLOUDWATCH_WITHIN,
        ),
        Incident(
            "redis-transport-closed",
            "AEP Incident 3: Redis transport closed",
            "redis-transport-closed",
            {
                # the app's own readiness, on the site and on each task: Redis answers
                "AppRedisPoolBroken": {"priority": "P1", "component": "redis"},
                # then Redis itself goes: that pages, and mutes the app's symptom
                "RedisDown": {"priority": "P1", "target": "aep-redis"},
            },
            muted={
                "AppRedisPoolBroken": {"component": "redis"},
                "HealthReadyFailing": {"target": "aep-ready"},
                "EcsTaskReadyFailing": {"target": "aep-backend-tasks"},
            },
            also=("RedisDown", redis_down),
            says={"AppRedisPoolBroken": "the app's Redis pool, not Redis"},
            # the app's "transport closed" lines are counted, and page no one: the probe
            # alerts have, before the lines reached the count and for minutes after the fix
            quiet={"AppRedisTransportClosedLogged": BACKEND},
            counted=("redis_transport_closed",),
        ),
        Incident(
            "db-too-many-clients",
            "VivaCampo Scenario 1: too many clients, then the database down",
            "db-too-many-clients",
            {
                "PostgresConnectionsNearLimit": {"priority": "P1", "target": "aep-db"},
                # the workers' connections refused: "FATAL: sorry, too many clients already"
                "PostgresTooManyClientsLogged": {
                    "priority": "P0",
                    "target": "aep-worker-logs",
                    **WORKER,
                },
                "PostgresDown": {"priority": "P0", "target": "aep-db"},
            },
            also=("PostgresDown", postgres_down),
        ),
        Incident(
            "unhealthy-targets",
            "AEP Incident 2: unhealthy targets",
            "unhealthy-targets",
            {
                "AlbUnhealthyTargets": {
                    "priority": "P1",
                    "target_group": world.TARGET_GROUPS[world.BACKEND],
                    "reason": "Target.ResponseCodeMismatch",
                    **BACKEND,
                },
                "AlbNoHealthyTargets": {
                    "priority": "P0",
                    "target_group": world.TARGET_GROUPS[world.BACKEND],
                    **BACKEND,
                },
                # and the cause, named: the health check asks a path the app does not serve
                "AlbHealthCheckPathDrift": {
                    "priority": "P1",
                    "target_group": world.TARGET_GROUPS[world.BACKEND],
                },
            },
        ),
        Incident(
            "env-drift",
            "AEP Incident 5: budget enforcement off",
            "env-drift",
            {"EcsTaskDefinitionEnvDrift": {"priority": "P1", **BACKEND}},
        ),
    ],
    [
        Incident(
            "alb-failed",
            "AEP Incident 6: load balancer offline",
            "alb-failed",
            {"AlbNotActive": {"priority": "P0", "load_balancer": world.LOAD_BALANCER}},
        ),
        Incident(
            "worker-deleted",
            "AEP Incident 6: a service deleted",
            "worker-deleted",
            {"EcsServiceMissing": {"priority": "P0", "service": world.WORKER}},
        ),
        Incident(
            "oom-kill",
            "AEP Incident 2 / 6: tasks killed for memory",
            "oom-kill",
            {"EcsServiceCrashLooping": {"priority": "P1", **BACKEND}},
            says={"EcsServiceCrashLooping": "oom"},
        ),
        Incident(
            "db-unreachable",
            "AEP Incident 2: /health/ready 503, the database unreachable",
            "db-unreachable",
            {"DependencyComponentDown": {"priority": "P1", "component": "database"}},
            muted={
                "HealthReadyFailing": {"target": "aep-ready"},
                "EcsTaskReadyFailing": {"target": "aep-backend-tasks"},
            },
        ),
        Incident(
            "redis-full",
            "Redis at maxclients",
            None,
            {"RedisTooManyClients": {"priority": "P1", "target": "aep-redis"}},
            also=("RedisTooManyClients", redis_full),
        ),
    ],
    # the backend's outages, one after the other
    [
        Incident(
            "scaled-to-zero",
            "AEP Incident 6: complete outage",
            "scaled-to-zero",
            {
                "EcsServiceScaledToZero": {"priority": "P0", **BACKEND},
                "HealthLiveFailing": {"priority": "P0", "target": "aep-live"},
            },
            muted={
                "AlbNoHealthyTargets": BACKEND,
                "HealthReadyFailing": {"target": "aep-ready", **BACKEND},
            },
        ),
    ],
    [
        Incident(
            "tasks-failing",
            "AEP Incident 6: all tasks stopped after a bad deploy",
            "tasks-failing",
            {
                "EcsServiceNoRunningTasks": {"priority": "P0", **BACKEND},
                "HealthLiveFailing": {"priority": "P0", "target": "aep-live"},
                "EcsDeploymentFailed": {"priority": "P1", **BACKEND},
                "EcsServiceCrashLooping": {"priority": "P1", **BACKEND},
            },
            muted={
                "AlbNoHealthyTargets": BACKEND,
                "HealthReadyFailing": {"target": "aep-ready", **BACKEND},
            },
            says={"EcsServiceCrashLooping": "image_pull"},
        ),
    ],
]
INCIDENTS = [incident for wave in WAVES for incident in wave]
