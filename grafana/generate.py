"""Generates stackprobe's Grafana dashboards with grafana-foundation-sdk (Grafana 11.6 line).

    .venv/bin/python grafana/generate.py          # writes grafana/dashboards/*.json

The JSON is committed; tests/test_dashboards.py regenerates it and fails on any difference,
validates it against Grafana 11.6's dashboard schema, and checks every query. The overview
is laid out along the runbooks' incidents: what broke, since when, and did a deploy cause it.
Panel ids 1-9 are the area panels the alert rules' dashboard_url opens (docs/alerts.md).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    GridPos,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).parent / "dashboards"
RUNBOOK = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TARGET = 'target=~"$target"'
SERVICE = 'cluster=~"$cluster", service=~"$service"'
ECS_DIMENSIONS = 'dimension_ClusterName=~"$cluster", dimension_ServiceName=~"$service"'


@dataclass(frozen=True)
class Signal:
    """One panel: what it shows, why it matters, and the runbook section for it."""

    id: int
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    description: str
    runbook: str  # the alert whose section says what to do
    unit: str = "short"
    width: int = 8
    more_runbooks: tuple[str, ...] = ()  # further alerts the panel shows, each its own link


ROWS: tuple[tuple[str, tuple[Signal, ...]], ...] = (
    (
        "Site health: /health/live, /health/ready, each ECS task, DNS",
        (
            Signal(
                1,
                "Health checks passing",
                (
                    (
                        f"probe_success{{{TARGET}}}"
                        ' and on (target) stackprobe_target_info{kind="http"}',
                        "{{target}}",
                    ),
                ),
                "1 while the target's check passes. A live check at 0 is a P0 (AEP Incident 6), "
                "a ready check at 0 a P1; the reason is in the Failure reasons panel.",
                "HealthLiveFailing",
                width=12,
            ),
            Signal(
                10,
                "Readiness components",
                ((f"stackprobe_health_component_up{{{TARGET}}}", "{{target}} {{component}}"),),
                "Components read from the readiness body: redis 0 is AEP Incident 3.",
                "DependencyComponentDown",
                width=12,
            ),
            Signal(
                11,
                "ECS tasks probed one by one",
                ((f"stackprobe_ecs_task_probe_success{{{TARGET}}}", "{{task}} {{address}}"),),
                "Each running task's own health check: a task at 0 while the ALB routes to it "
                "is AEP Incident 2's 'curl each task's IP'.",
                "EcsTaskReadyFailing",
            ),
            Signal(
                2,
                "DNS resolves",
                (
                    (
                        f"probe_success{{{TARGET}}}"
                        ' and on (target) stackprobe_target_info{kind="dns"}',
                        "{{target}}",
                    ),
                ),
                "1 while the site's name resolves (AEP Incident 6: dig the site's name).",
                "DnsNotResolving",
            ),
            Signal(
                12,
                "Probe duration",
                (
                    (f"probe_duration_seconds{{{TARGET}}}", "{{target}}"),
                    (
                        f"stackprobe_http_latency_threshold_seconds{{{TARGET}}}",
                        "threshold {{target}}",
                    ),
                ),
                "Seconds each check took, and the latency threshold of the URLs that have one.",
                "EndpointSlow",
                unit="s",
            ),
        ),
    ),
    (
        "Load balancer: 5xx, latency, target health",
        (
            Signal(
                3,
                "ALB 5xx ratio",
                (("aws_applicationelb:http_5xx:ratio5m", "{{dimension_LoadBalancer}}"),),
                "Target and ELB 5xx over requests, 5m: above 5 % is AEP Incident 1 (P1).",
                "AlbHigh5xxRate",
                unit="percentunit",
            ),
            Signal(
                13,
                "ALB response time",
                (
                    (
                        f"aws_applicationelb_target_response_time_p95"
                        f'{{{TARGET}, dimension_TargetGroup=""}}',
                        "p95 {{dimension_LoadBalancer}}",
                    ),
                    (
                        f"aws_applicationelb_target_response_time_p99"
                        f'{{{TARGET}, dimension_TargetGroup=""}}',
                        "p99 {{dimension_LoadBalancer}}",
                    ),
                ),
                "Target response time p95 and p99 (VivaCampo resolution: p95 < 500 ms).",
                "AlbHighLatency",
                unit="s",
            ),
            Signal(
                14,
                "Target health",
                (
                    (
                        f"aws_alb_target_group_healthy_targets{{{TARGET}}}",
                        "healthy {{load_balancer}} {{target_group}}",
                    ),
                    (
                        f"aws_alb_target_group_targets{{{TARGET}}}",
                        "{{target_group}} {{state}} {{reason}}",
                    ),
                ),
                "Healthy targets per group (0 is a P0, AEP Incident 2), and every target by "
                "state and AWS's reason code.",
                "AlbNoHealthyTargets",
            ),
        ),
    ),
    (
        "ECS: desired vs running, stopped tasks, deployments, resources",
        (
            Signal(
                4,
                "Running vs desired tasks",
                (
                    (f"aws_ecs_service_running_tasks{{{SERVICE}}}", "running {{service}}"),
                    (f"aws_ecs_service_desired_tasks{{{SERVICE}}}", "desired {{service}}"),
                ),
                "Running below desired means tasks fail to start; desired 0 is AEP Incident 6.",
                "EcsServiceNoRunningTasks",
            ),
            Signal(
                15,
                "Tasks stopped, by reason",
                (
                    (
                        f"increase(aws_ecs_service_tasks_stopped_total{{{SERVICE}}}[15m])",
                        "{{service}} {{reason}}",
                    ),
                ),
                "Stopped tasks in 15 minutes by class: oom, image_pull, secrets, health_check.",
                "EcsServiceCrashLooping",
            ),
            Signal(
                21,
                "Deployments by rollout state",
                (
                    (
                        "sum by (cluster, service, rollout_state) "
                        f"(aws_ecs_service_deployments{{{SERVICE}}})",
                        "{{service}} {{rollout_state}}",
                    ),
                ),
                "More than one deployment is a rollout under way; FAILED is ECS giving up.",
                "EcsDeploymentFailed",
            ),
            Signal(
                16,
                "CPU and memory",
                (
                    (
                        f"aws_ecs_cpuutilization_average{{{ECS_DIMENSIONS}}}",
                        "cpu {{dimension_ServiceName}}",
                    ),
                    (
                        f"aws_ecs_memory_utilization_average{{{ECS_DIMENSIONS}}}",
                        "memory {{dimension_ServiceName}}",
                    ),
                ),
                "Percent of the task's reservation; near 100 means 502/504s and OOM kills.",
                "EcsServiceResourcesSaturated",
                unit="percent",
            ),
            Signal(
                86,
                "CPU and memory per task",
                (
                    (
                        "max without (instance) "
                        "(aws_ecs_containerinsights_task_cpu_utilization_average"
                        f"{{{ECS_DIMENSIONS}}})",
                        "cpu {{dimension_ServiceName}} {{dimension_TaskId}}",
                    ),
                    (
                        "max without (instance) "
                        "(aws_ecs_containerinsights_task_memory_utilization_average"
                        f"{{{ECS_DIMENSIONS}}})",
                        "memory {{dimension_ServiceName}} {{dimension_TaskId}}",
                    ),
                ),
                "With `task_resources`, each task's CPU and memory (Container Insights, enhanced): "
                "the one task near 100 % that the service's average hides, and the next OOM kill.",
                "EcsTaskResourcesSaturated",
                unit="percent",
            ),
        ),
    ),
    (
        "Application logs: what the services' log groups say",
        (
            Signal(
                36,
                "Log signals",
                (
                    (
                        f"increase(stackprobe_logs_pattern_matches_total{{{TARGET}}}[5m])",
                        "{{log_group}} {{pattern}}",
                    ),
                ),
                "Lines matching each signal per log group in 5 minutes, a minute or two behind "
                "the log: too_many_clients is VivaCampo Scenario 1, redis_transport_closed AEP "
                "Incident 3, queuepool_exhausted Incident 4, code_error after a deploy and "
                "rate_limited Incident 1, s3_upload_failed Scenario 2. The links open each "
                "signal's alert.",
                "PostgresTooManyClientsLogged",
                width=24,
                more_runbooks=(
                    "AppRedisTransportClosedLogged",
                    "AppQueuePoolExhaustedLogged",
                    "AppCodeErrorsAfterDeploy",
                    "LlmRateLimitedLogged",
                    "S3UploadFailuresLogged",
                ),
            ),
        ),
    ),
    (
        "Queues and storage",
        (
            Signal(
                5,
                "Queue depth",
                (
                    (f"aws_sqs_messages_visible{{{TARGET}}}", "waiting {{queue}}"),
                    (f"aws_sqs_messages_in_flight{{{TARGET}}}", "in flight {{queue}}"),
                ),
                "Jobs waiting and being worked; growing with none deleted is VivaCampo Scenario 4.",
                "SqsJobsStuck",
            ),
            Signal(
                35,
                "Oldest message age",
                (
                    (
                        f"aws_sqs_approximate_age_of_oldest_message_maximum{{{TARGET}}}",
                        "{{dimension_QueueName}}",
                    ),
                ),
                "How long the oldest job has waited.",
                "SqsOldestMessageTooOld",
                unit="s",
            ),
            Signal(
                17,
                "Dead letters",
                (
                    (
                        f"aws_sqs_dead_letter_messages_visible{{{TARGET}}}",
                        "{{queue}} {{dead_letter_queue}}",
                    ),
                ),
                "Jobs that failed every retry and wait in the dead-letter queue.",
                "SqsDeadLetterMessages",
            ),
            Signal(
                6,
                "Bucket size",
                ((f"aws_s3_bucket_size_bytes{{{TARGET}}}", "{{bucket}} {{storage_type}}"),),
                "Bytes per bucket, daily: growth is VivaCampo Scenario 2.",
                "S3BucketGrowingFast",
                unit="bytes",
            ),
            Signal(
                22,
                "Bucket objects",
                ((f"aws_s3_bucket_objects{{{TARGET}}}", "{{bucket}}"),),
                "Objects per bucket; rasters with no lifecycle rule only ever add up.",
                "S3BucketGrowingFast",
            ),
            Signal(
                84,
                "S3 write canary",
                (
                    (
                        f"max without (instance) (stackprobe_s3_canary_success{{{TARGET}}})",
                        "works {{bucket}}",
                    ),
                    (
                        f"max without (instance) (stackprobe_s3_canary_step_seconds{{{TARGET}}})",
                        "{{step}} s {{bucket}}",
                    ),
                ),
                "With `canary:`, 1 while stackprobe can put, read back and delete an object "
                "in the bucket, and each step's seconds: 0 is the uploads' \"Access Denied\" "
                "before users meet it (VivaCampo Scenario 2).",
                "S3WriteCanaryFailing",
            ),
            Signal(
                85,
                "SQS write canary",
                (
                    (
                        f"max without (instance) (stackprobe_sqs_canary_success{{{TARGET}}})",
                        "works {{queue}}",
                    ),
                    (
                        f"max without (instance) (stackprobe_sqs_canary_step_seconds{{{TARGET}}})",
                        "{{step}} s {{queue}}",
                    ),
                ),
                "With `canary:`, 1 while stackprobe can send, receive and delete a message on "
                "its canary queue, and each step's seconds: 0 means jobs cannot be enqueued.",
                "SqsWriteCanaryFailing",
            ),
        ),
    ),
    (
        "Databases",
        (
            Signal(
                34,
                "PostgreSQL and Redis up",
                (
                    (f"pg_up{{{TARGET}}}", "postgres {{target}}"),
                    (f"redis_up{{{TARGET}}}", "redis {{target}}"),
                ),
                "1 while stackprobe can connect and query; 0 is VivaCampo Scenario 1 or AEP "
                "Incident 3 (the reason is in the Failure reasons panel).",
                "PostgresDown",
            ),
            Signal(
                7,
                "PostgreSQL connections by state",
                (
                    (
                        f"sum by (target, state) (pg_stat_activity_count{{{TARGET}}})",
                        "{{target}} {{state}}",
                    ),
                    (
                        f"pg_settings_max_connections{{{TARGET}}}"
                        f" - pg_settings_superuser_reserved_connections{{{TARGET}}}"
                        f" - (pg_settings_reserved_connections{{{TARGET}}}"
                        f" or on (target) 0 * pg_settings_max_connections{{{TARGET}}})",
                        "limit {{target}}",
                    ),
                ),
                "Connections against what ordinary roles may open (AEP Incident 4, VivaCampo "
                "Scenario 1).",
                "PostgresConnectionsNearLimit",
            ),
            Signal(
                18,
                "Long queries and idle transactions",
                (
                    (
                        f"pg_stat_activity_oldest_query_seconds{{{TARGET}}}",
                        "oldest query {{datname}}",
                    ),
                    (
                        f"pg_stat_activity_oldest_idle_in_transaction_seconds{{{TARGET}}}",
                        "idle in transaction {{datname}}",
                    ),
                ),
                "Age of the oldest running query and of the oldest idle transaction.",
                "PostgresLongRunningQueries",
                unit="s",
            ),
            Signal(
                8,
                "Redis PING latency",
                ((f"stackprobe_redis_ping_duration_seconds{{{TARGET}}}", "{{target}}"),),
                "How fast Redis answers a PING, round trip (AEP Incident 3).",
                "RedisDown",
                unit="s",
            ),
            Signal(
                19,
                "Redis connection errors by reason",
                (
                    (
                        f"increase(stackprobe_redis_connection_errors_total{{{TARGET}}}[5m])",
                        "{{target}} {{reason}}",
                    ),
                ),
                "Closed, refused and timed-out connections: the 'transport closed' family.",
                "RedisConnectionErrors",
            ),
            Signal(
                23,
                "Redis clients against maxclients",
                (
                    (f"redis_connected_clients{{{TARGET}}}", "clients {{target}}"),
                    (f"redis_config_maxclients{{{TARGET}}}", "maxclients {{target}}"),
                ),
                "Connected clients; at maxclients new connections are refused.",
                "RedisTooManyClients",
            ),
        ),
    ),
    (
        "Posture: what should be configured",
        (
            Signal(
                26,
                "Load balancer active",
                (
                    (
                        f'aws_alb_load_balancer_state{{{TARGET}, state="active"}}',
                        "{{load_balancer}}",
                    ),
                ),
                "1 while the load balancer is active; 0 is failed, provisioning or missing "
                "(AEP Incident 6).",
                "AlbNotActive",
                width=6,
            ),
            Signal(
                27,
                "Health-check path as expected",
                (
                    (
                        f"aws_alb_target_group_health_check_path_match{{{TARGET}}}",
                        "{{target_group}}",
                    ),
                ),
                "1 while the target group checks the expected path (AEP Incident 2).",
                "AlbHealthCheckPathDrift",
                width=6,
            ),
            Signal(
                28,
                "Access logs on",
                ((f"aws_alb_access_logs_enabled{{{TARGET}}}", "{{load_balancer}}"),),
                "1 while the load balancer writes access logs (AEP Incident 7).",
                "AlbAccessLogsDisabled",
                width=6,
            ),
            Signal(
                29,
                "ECS services active",
                ((f"aws_ecs_service_active{{{SERVICE}}}", "{{cluster}}/{{service}}"),),
                "1 while the service exists and is ACTIVE; 0 is deleted or draining.",
                "EcsServiceMissing",
                width=6,
            ),
            Signal(
                31,
                "Days until certificates expire",
                (
                    (
                        f"(probe_ssl_earliest_cert_expiry{{{TARGET}}} - time()) / 86400",
                        "{{target}}",
                    ),
                ),
                "Days left on each HTTPS target's certificate; under 14 pages.",
                "TlsCertificateExpiringSoon",
                unit="d",
            ),
            Signal(
                32,
                "Dead-letter queues in place",
                (
                    (f"aws_sqs_redrive_policy{{{TARGET}}}", "redrive {{queue}}"),
                    (
                        f"aws_sqs_dead_letter_queue_exists{{{TARGET}}}",
                        "exists {{dead_letter_queue}}",
                    ),
                ),
                "1 where a queue has a redrive policy and its dead-letter queue exists.",
                "SqsNoRedrivePolicy",
            ),
            Signal(
                33,
                "Lifecycle rules",
                ((f"aws_s3_bucket_lifecycle_rules{{{TARGET}}}", "{{bucket}}"),),
                "Enabled lifecycle rules per bucket; 0 means nothing ever expires.",
                "S3NoLifecycleRule",
            ),
        ),
    ),
    (
        "stackprobe itself",
        (
            Signal(
                25,
                "stackprobe scraped and its config",
                (
                    ('up{job=~".*stackprobe.*"}', "up {{instance}}"),
                    ("stackprobe_config_last_reload_successful", "config loaded {{instance}}"),
                ),
                "1 while Prometheus scrapes stackprobe and its last config load succeeded.",
                "StackprobeDown",
            ),
            Signal(
                9,
                "Failure reasons",
                ((f"stackprobe_probe_failure_reason{{{TARGET}}}", "{{target}} {{reason}}"),),
                "Why each failing target fails, from a small fixed set of reasons.",
                "StackprobeCannotMeasure",
            ),
            Signal(
                24,
                "Result age",
                (
                    (
                        f"time() - stackprobe_probe_last_run_timestamp_seconds{{{TARGET}}}",
                        "{{target}}",
                    ),
                ),
                "Seconds since each target's last run ended; more than a few intervals means "
                "its results are stale.",
                "StackprobeProbesStale",
                unit="s",
            ),
            Signal(
                20,
                "AWS API calls by outcome",
                (
                    (
                        "sum by (service, operation, outcome)"
                        " (rate(stackprobe_aws_api_calls_total[5m]))",
                        "{{service}} {{operation}} {{outcome}}",
                    ),
                ),
                "Requests per second to AWS; throttled and denied need attention.",
                "StackprobeAwsThrottled",
                unit="reqps",
                width=24,
            ),
            Signal(
                69,
                "Owners per target (replicas sharing a config)",
                (
                    (
                        f"sum by (target) (stackprobe_target_owned{{{TARGET}}})",
                        "{{target}} owners",
                    ),
                    (
                        f"max by (target) (stackprobe_target_replicas{{{TARGET}}})",
                        "{{target}} wanted",
                    ),
                    (
                        f"max by (target) (probe_success{{{TARGET}}})"
                        f" - min by (target) (probe_success{{{TARGET}}})",
                        "{{target}} owners disagree",
                    ),
                ),
                "How many stackprobe replicas probe each target against how many should; 0 "
                "owners means nobody probes it. 1 in 'disagree' means one owner sees it fail "
                "and another does not.",
                "StackprobeTargetUnowned",
                width=24,
                more_runbooks=("StackprobeTargetUnderReplicated", "StackprobeReplicasDisagree"),
            ),
        ),
    ),
)

# The panel each alert's dashboard_url opens: the one that shows its signal.
# tests/test_dashboards.py checks each against the alert's own series.
ALERT_PANELS: dict[str, tuple[str, int]] = {
    "HealthLiveFailing": ("stackprobe-overview", 1),
    "HealthReadyFailing": ("stackprobe-overview", 1),
    "ExternalDependencyFailing": ("stackprobe-overview", 1),
    "DependencyComponentDown": ("stackprobe-overview", 10),
    "AppRedisPoolBroken": ("stackprobe-overview", 10),
    "EndpointFailing": ("stackprobe-overview", 1),
    "EcsTaskReadyFailing": ("stackprobe-overview", 11),
    "DnsNotResolving": ("stackprobe-overview", 2),
    "EndpointSlow": ("stackprobe-overview", 12),
    "AlbHigh5xxRate": ("stackprobe-overview", 3),
    "AlbMostRequests5xx": ("stackprobe-overview", 3),
    "AlbHighLatency": ("stackprobe-overview", 13),
    "AlbNoHealthyTargets": ("stackprobe-overview", 14),
    "AlbUnhealthyTargets": ("stackprobe-overview", 14),
    "EcsServiceScaledToZero": ("stackprobe-overview", 4),
    "EcsServiceNoRunningTasks": ("stackprobe-overview", 4),
    "EcsServiceCrashLooping": ("stackprobe-overview", 15),
    "EcsDeploymentFailed": ("stackprobe-overview", 21),
    "EcsDeploymentRolledBack": ("stackprobe-ecs", 48),
    "EcsServiceResourcesSaturated": ("stackprobe-overview", 16),
    "EcsTaskResourcesSaturated": ("stackprobe-overview", 86),
    "EcsTaskDefinitionEnvDrift": ("stackprobe-ecs", 44),
    "EcsSecurityGroupPathClosed": ("stackprobe-ecs", 88),
    "PostgresTooManyClientsLogged": ("stackprobe-overview", 36),
    "AppRedisTransportClosedLogged": ("stackprobe-overview", 36),
    "AppQueuePoolExhaustedLogged": ("stackprobe-overview", 36),
    "AppCodeErrorsAfterDeploy": ("stackprobe-overview", 36),
    "LlmRateLimitedLogged": ("stackprobe-overview", 36),
    "S3UploadFailuresLogged": ("stackprobe-overview", 36),
    "SqsJobsStuck": ("stackprobe-overview", 5),
    "SqsOldestMessageTooOld": ("stackprobe-overview", 35),
    "SqsDeadLetterMessages": ("stackprobe-overview", 17),
    "S3BucketGrowingFast": ("stackprobe-overview", 6),
    "S3WriteCanaryFailing": ("stackprobe-overview", 84),
    "SqsWriteCanaryFailing": ("stackprobe-overview", 85),
    "PostgresDown": ("stackprobe-overview", 34),
    "RedisDown": ("stackprobe-overview", 34),
    "PostgresConnectionsNearLimit": ("stackprobe-overview", 7),
    "PostgresConnectionLeak": ("stackprobe-overview", 7),
    "PostgresLongRunningQueries": ("stackprobe-datastores", 63),
    "PostgresIdleInTransaction": ("stackprobe-overview", 18),
    "PostgresAppPoolExhausted": ("stackprobe-datastores", 62),
    "PostgresSlowStatements": ("stackprobe-datastores", 64),
    "PostgresWraparoundImminent": ("stackprobe-datastores", 77),
    "PostgresWraparoundApproaching": ("stackprobe-datastores", 77),
    "PostgresReplicationSlotInactive": ("stackprobe-datastores", 78),
    "PostgresReplicationSlotLost": ("stackprobe-datastores", 87),
    "PostgresReplicationLagging": ("stackprobe-datastores", 79),
    "PostgresDeadlocks": ("stackprobe-datastores", 76),
    "RdsStorageFull": ("stackprobe-datastores", 70),
    "RdsStorageLow": ("stackprobe-datastores", 70),
    "RdsCpuSaturated": ("stackprobe-datastores", 71),
    "RdsBurstExhausted": ("stackprobe-datastores", 72),
    "RdsReplicaLagging": ("stackprobe-datastores", 73),
    "ElastiCacheEngineCpuSaturated": ("stackprobe-datastores", 81),
    "ElastiCacheEngineCpuHigh": ("stackprobe-datastores", 81),
    "ElastiCacheMemoryFull": ("stackprobe-datastores", 82),
    "ElastiCacheMemoryHigh": ("stackprobe-datastores", 82),
    "ElastiCacheReplicationLagging": ("stackprobe-datastores", 83),
    "RedisConnectionErrors": ("stackprobe-overview", 19),
    "RedisTooManyClients": ("stackprobe-overview", 23),
    "RedisQueueGrowing": ("stackprobe-datastores", 74),
    "RedisReplicaLinkDown": ("stackprobe-datastores", 80),
    "AlbNotActive": ("stackprobe-overview", 26),
    "AlbHealthCheckPathDrift": ("stackprobe-overview", 27),
    "AlbAccessLogsDisabled": ("stackprobe-overview", 28),
    "EcsServiceMissing": ("stackprobe-overview", 29),
    "TlsCertificateExpiringSoon": ("stackprobe-overview", 31),
    "SqsNoRedrivePolicy": ("stackprobe-overview", 32),
    "SqsDeadLetterQueueMissing": ("stackprobe-overview", 32),
    "S3NoLifecycleRule": ("stackprobe-overview", 33),
    "StackprobeDown": ("stackprobe-overview", 25),
    "StackprobeAbsent": ("stackprobe-overview", 25),
    "StackprobeConfigReloadFailed": ("stackprobe-overview", 25),
    "Watchdog": ("stackprobe-overview", 25),
    "StackprobeCannotMeasure": ("stackprobe-overview", 9),
    "StackprobeProbesStale": ("stackprobe-overview", 24),
    "StackprobeAwsThrottled": ("stackprobe-overview", 9),
    "StackprobeAwsAccessDenied": ("stackprobe-overview", 20),
    "StackprobeTargetUnowned": ("stackprobe-overview", 69),
    "StackprobeTargetUnderReplicated": ("stackprobe-overview", 69),
    "StackprobeReplicasDisagree": ("stackprobe-overview", 69),
}


def _panel(signal: Signal, x: int, y: int) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(signal.id)
        .title(signal.title)
        .description(signal.description)
        .datasource(DATASOURCE)
        .unit(signal.unit)
        .grid_pos(GridPos(h=8, w=signal.width, x=x, y=y))
        .links(
            [
                dashboard.DashboardLink("Runbook" if not signal.more_runbooks else alert)
                .type(DashboardLinkType.LINK)
                .url(f"{RUNBOOK}#{alert.lower()}")
                .target_blank(True)
                for alert in (signal.runbook, *signal.more_runbooks)
            ]
        )
    )
    for letter, (expr, legend) in zip("ABCD", signal.queries, strict=False):
        panel = panel.with_target(
            prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(letter)
        )
    return panel


ECS_ROWS: tuple[tuple[str, tuple[Signal, ...]], ...] = (
    (
        "Deployments",
        (
            Signal(
                40,
                "Deployments by status and rollout state",
                (
                    (
                        f"aws_ecs_service_deployments{{{SERVICE}}}",
                        "{{service}} {{status}} {{rollout_state}}",
                    ),
                ),
                "PRIMARY is the newest deployment; ACTIVE ones still run the previous version.",
                "EcsDeploymentFailed",
            ),
            Signal(
                41,
                "Task definition revision",
                (
                    (
                        f"aws_ecs_service_task_definition_revision{{{SERVICE}}}",
                        "{{service}} {{family}}",
                    ),
                ),
                "The PRIMARY deployment's revision: a step is a deploy.",
                "EcsDeploymentFailed",
            ),
            Signal(
                45,
                "Minutes since the newest deployment",
                (
                    (
                        "(time() - aws_ecs_service_last_deployment_timestamp_seconds"
                        f"{{{SERVICE}}}) / 60",
                        "{{service}}",
                    ),
                ),
                "A deploy in the last 30 minutes is the first suspect (AEP Incident 1).",
                "AlbHigh5xxRate",
                unit="m",
            ),
            Signal(
                48,
                "Rollbacks, and the revision each service replaced",
                (
                    (
                        f"increase(aws_ecs_service_rollbacks_total{{{SERVICE}}}[30m])",
                        "rollbacks in 30m {{service}}",
                    ),
                    (
                        f"aws_ecs_service_previous_task_definition_revision{{{SERVICE}}}",
                        "replaced {{service}} {{family}}",
                    ),
                    (
                        f"aws_ecs_service_primary_failed_tasks{{{SERVICE}}}",
                        "PRIMARY failed tasks {{service}}",
                    ),
                ),
                "A rollback ECS made in the last 30 minutes pages; the revision it replaced is "
                "the one that failed, and failed tasks on the PRIMARY come before it.",
                "EcsDeploymentRolledBack",
                width=24,
            ),
        ),
    ),
    (
        "Tasks",
        (
            Signal(
                42,
                "Failed tasks in current deployments",
                ((f"aws_ecs_service_deployment_failed_tasks{{{SERVICE}}}", "{{service}}"),),
                "Tasks that failed to start in the deployments under way.",
                "EcsServiceCrashLooping",
            ),
            Signal(
                43,
                "Stopped tasks ECS lists, by reason",
                (
                    (
                        f"sum by (service, reason) (aws_ecs_service_stopped_tasks{{{SERVICE}}})",
                        "{{service}} {{reason}}",
                    ),
                ),
                "Tasks stopped in about the last hour: oom, image_pull, secrets, health_check, "
                "scaling, user_initiated, essential_container_exited, other.",
                "EcsServiceCrashLooping",
            ),
            Signal(
                46,
                "Pending tasks",
                ((f"aws_ecs_service_pending_tasks{{{SERVICE}}}", "{{service}}"),),
                "Tasks waiting to start: pending that never turn running fail to start.",
                "EcsServiceNoRunningTasks",
            ),
            Signal(
                44,
                "Expected environment values",
                ((f"aws_ecs_service_expected_env_match{{{SERVICE}}}", "{{service}} {{name}}"),),
                "1 while every running task definition sets the expected value (AEP Incident 5).",
                "EcsTaskDefinitionEnvDrift",
            ),
            Signal(
                47,
                "CPU and memory, maximum",
                (
                    (
                        f"aws_ecs_cpuutilization_maximum{{{ECS_DIMENSIONS}}}",
                        "cpu {{dimension_ServiceName}}",
                    ),
                    (
                        f"aws_ecs_memory_utilization_maximum{{{ECS_DIMENSIONS}}}",
                        "memory {{dimension_ServiceName}}",
                    ),
                ),
                "The busiest task's share of its reservation.",
                "EcsServiceResourcesSaturated",
                unit="percent",
            ),
        ),
    ),
    (
        "Security-group paths (AEP Incidents 2 and 6)",
        (
            Signal(
                88,
                "ALB to tasks, on the container port",
                (
                    (
                        f'aws_ecs_service_security_group_path_open{{{SERVICE}, path="alb"}}',
                        "{{service}} tcp/{{port}}",
                    ),
                ),
                "1 while the ALB's security groups and the tasks' let the ALB reach the tasks "
                "on the container port; 0 is AEP Incident 6's removed ALB ingress: a site down.",
                "EcsSecurityGroupPathClosed",
                width=12,
            ),
            Signal(
                89,
                "Tasks to databases and caches",
                (
                    (
                        f'aws_ecs_service_security_group_path_open{{{SERVICE}, path!="alb"}}',
                        "{{service}} -> {{path}} tcp/{{port}}",
                    ),
                ),
                "1 while the tasks' security groups and the destination's let the tasks reach "
                "it on its port (the `reaches` of an ecs_service target); 0 fails every "
                "request that needs it.",
                "EcsSecurityGroupPathClosed",
                width=12,
            ),
        ),
    ),
)

DATASTORE_ROWS: tuple[tuple[str, tuple[Signal, ...]], ...] = (
    (
        "PostgreSQL",
        (
            Signal(
                60,
                "Connections by database and state",
                ((f"pg_stat_activity_count{{{TARGET}}}", "{{datname}} {{state}}"),),
                "Who holds the connections: many idle means big pools, many idle in "
                "transaction means code that does not commit.",
                "PostgresConnectionsNearLimit",
            ),
            Signal(
                61,
                "Share of the connection limit in use",
                (("pg:connections:used_ratio", "{{target}}"),),
                "Connections over max_connections minus the reserved slots.",
                "PostgresConnectionsNearLimit",
                unit="percentunit",
            ),
            Signal(
                62,
                "Share of the application pools in use",
                (
                    (
                        'pg:app_pool_connections:used_ratio{service=~"$service"}',
                        "{{datname}} {{service}}",
                    ),
                ),
                "Connections over (pool_size + max_overflow) x running tasks (AEP Incident 4).",
                "PostgresAppPoolExhausted",
                unit="percentunit",
            ),
            Signal(
                63,
                "Long-running queries and lock waits",
                (
                    (
                        f"pg_stat_activity_long_running_queries{{{TARGET}}}",
                        "long-running {{datname}}",
                    ),
                    (
                        f"pg_stat_activity_waiting_on_locks{{{TARGET}}}",
                        "waiting on locks {{datname}}",
                    ),
                ),
                "Queries past the threshold, and sessions blocked by another's lock.",
                "PostgresLongRunningQueries",
            ),
            Signal(
                64,
                "Slowest statements by mean time",
                (
                    (
                        f"topk(10, pg_stat_statements_mean_exec_time_seconds{{{TARGET}}})",
                        "{{datname}} {{queryid}}",
                    ),
                ),
                "pg_stat_statements' top statements by mean execution time.",
                "PostgresSlowStatements",
                unit="s",
            ),
            Signal(
                76,
                "Deadlocks and rollbacks",
                (
                    (
                        "max without (instance) "
                        f"(increase(pg_stat_database_deadlocks_total{{{TARGET}}}[15m]))",
                        "deadlocks in 15m {{datname}}",
                    ),
                    (
                        "max without (instance) "
                        f"(increase(pg_stat_database_xact_rollback_total{{{TARGET}}}[15m]))",
                        "rollbacks in 15m {{datname}}",
                    ),
                ),
                "Deadlocks in the last 15 minutes, each an aborted transaction; and rollbacks, "
                "which a pool's reset on return counts too: compare them with the days before.",
                "PostgresDeadlocks",
            ),
            Signal(
                77,
                "Transaction ID age (wraparound)",
                (
                    (
                        "max without (instance) "
                        f"(pg_database_wraparound_age_datfrozenxid_seconds{{{TARGET}}})",
                        "transactions {{datname}}",
                    ),
                    (
                        "max without (instance) "
                        f"(pg_database_wraparound_age_datminmxid_seconds{{{TARGET}}})",
                        "multixacts {{datname}}",
                    ),
                ),
                "IDs since each database's oldest unfrozen one: autovacuum freezes at 200 "
                "million by default; a billion is a P1, 2.1 billion a P0, and 2.14 billion "
                "stops writes.",
                "PostgresWraparoundApproaching",
                more_runbooks=("PostgresWraparoundImminent",),
            ),
            Signal(
                78,
                "WAL kept by replication slots",
                (
                    (
                        "max without (instance) "
                        f"(pg_replication_slots_pg_wal_lsn_diff{{{TARGET}}})",
                        "{{slot_name}} {{target}}",
                    ),
                ),
                "Bytes of WAL each slot keeps on disk; an inactive slot's only grow, until "
                "the disk is full.",
                "PostgresReplicationSlotInactive",
                unit="bytes",
            ),
            Signal(
                87,
                "Replication slots lost",
                (
                    (
                        f"max without (instance) (stackprobe_pg_replication_slot_lost{{{TARGET}}})",
                        "{{slot_name}} {{target}}",
                    ),
                ),
                "1 for a slot max_slot_wal_keep_size invalidated: the disk was saved, and the "
                "standby or CDC consumer behind it must be rebuilt.",
                "PostgresReplicationSlotLost",
            ),
            Signal(
                79,
                "Standby replication lag",
                (
                    (
                        f"max without (instance) (pg_replication_lag_seconds{{{TARGET}}})",
                        "{{target}}",
                    ),
                ),
                "Seconds since a standby last replayed a transaction while it has more to "
                "replay; 0 when it is caught up, and 0 on a primary.",
                "PostgresReplicationLagging",
                unit="s",
            ),
            Signal(
                68,
                "Connections the probes opened",
                (
                    (
                        f"increase(stackprobe_pg_connects_total{{{TARGET}}}[1h])",
                        "postgres {{target}}",
                    ),
                    (
                        f"increase(stackprobe_redis_connects_total{{{TARGET}}}[1h])",
                        "redis {{target}}",
                    ),
                ),
                "stackprobe keeps one connection per target; more means the server drops it.",
                "PostgresDown",
            ),
        ),
    ),
    (
        "RDS",
        (
            Signal(
                70,
                "RDS storage free",
                (
                    (
                        f"aws_rds:free_storage:ratio{{{TARGET}}}",
                        "{{dimension_DBInstanceIdentifier}} {{target}}",
                    ),
                ),
                "Free storage over allocated storage. Under 2 % (or status storage-full) "
                "writes fail: a P0; under 10 % with no autoscaling headroom, or under 20 % "
                "and full within 4 hours at the last hour's rate, a P1.",
                "RdsStorageFull",
                unit="percentunit",
                more_runbooks=("RdsStorageLow",),
            ),
            Signal(
                71,
                "RDS CPU",
                (
                    (
                        f"max without (instance) (aws_rds_cpuutilization_average{{{TARGET}}})",
                        "average {{dimension_DBInstanceIdentifier}}",
                    ),
                    (
                        f"max without (instance) (aws_rds_cpuutilization_maximum{{{TARGET}}})",
                        "maximum {{dimension_DBInstanceIdentifier}}",
                    ),
                ),
                "CPU %: over 90 on average for 15 minutes slows every query.",
                "RdsCpuSaturated",
                unit="percent",
            ),
            Signal(
                72,
                "RDS CPU credits and I/O burst balance",
                (
                    (
                        f"max without (instance) (aws_rds_cpucredit_balance_average{{{TARGET}}})",
                        "CPU credits {{dimension_DBInstanceIdentifier}}",
                    ),
                    (
                        f"max without (instance) (aws_rds_burst_balance_average{{{TARGET}}})",
                        "I/O burst % {{dimension_DBInstanceIdentifier}}",
                    ),
                ),
                "Credits left on a db.t* class, and the I/O burst balance of a gp2 volume: at "
                "0 the instance runs at its baseline.",
                "RdsBurstExhausted",
            ),
            Signal(
                73,
                "RDS replica lag",
                (
                    (
                        f"max without (instance) (aws_rds_replica_lag_average{{{TARGET}}})",
                        "{{dimension_DBInstanceIdentifier}}",
                    ),
                ),
                "Seconds a read replica is behind its source; -1 means its replication stopped.",
                "RdsReplicaLagging",
                unit="s",
            ),
            Signal(
                75,
                "RDS disk latency",
                (
                    (
                        f"max without (instance) (aws_rds_write_latency_average{{{TARGET}}})",
                        "write latency {{dimension_DBInstanceIdentifier}}",
                    ),
                    (
                        f"max without (instance) (aws_rds_read_latency_average{{{TARGET}}})",
                        "read latency {{dimension_DBInstanceIdentifier}}",
                    ),
                ),
                "Seconds per read and write I/O: a volume held to its baseline IOPS, or a "
                "disk queue, shows here first.",
                "RdsBurstExhausted",
                unit="s",
            ),
        ),
    ),
    (
        "ElastiCache",
        (
            Signal(
                81,
                "ElastiCache engine thread",
                (
                    (
                        "max without (instance) "
                        f"(aws_elasticache_engine_cpuutilization_average{{{TARGET}}})",
                        "average {{dimension_CacheClusterId}}/{{dimension_CacheNodeId}}",
                    ),
                    (
                        "max without (instance) "
                        f"(aws_elasticache_engine_cpuutilization_maximum{{{TARGET}}})",
                        "maximum {{dimension_CacheClusterId}}/{{dimension_CacheNodeId}}",
                    ),
                ),
                "% of the one thread Redis runs every command on: at 95 for 5 minutes every "
                "command queues (P0); over 80 for 15, the next peak pins it (P1).",
                "ElastiCacheEngineCpuSaturated",
                unit="percent",
                more_runbooks=("ElastiCacheEngineCpuHigh",),
            ),
            Signal(
                82,
                "ElastiCache memory, swap and evictions",
                (
                    (
                        "max without (instance) (aws_elasticache_database_memory_usage_"
                        f"percentage_average{{{TARGET}}})",
                        "memory % {{dimension_CacheClusterId}}/{{dimension_CacheNodeId}}",
                    ),
                    (
                        f"max without (instance) (aws_elasticache_evictions_sum{{{TARGET}}})",
                        "evicted a minute {{dimension_CacheClusterId}}/{{dimension_CacheNodeId}}",
                    ),
                    (
                        "max without (instance) "
                        f"(aws_elasticache_swap_usage_average{{{TARGET}}}) / 1048576",
                        "swap MiB {{dimension_CacheClusterId}}/{{dimension_CacheNodeId}}",
                    ),
                ),
                "Memory over maxmemory; keys evicted for memory; MiB swapped. A store (no "
                "`evicts: true`) at 99 % or evicting pages P0, over 90 % P1; any node over 50 "
                "MiB of swap P1.",
                "ElastiCacheMemoryFull",
                more_runbooks=("ElastiCacheMemoryHigh",),
            ),
            Signal(
                83,
                "ElastiCache replicas and connections",
                (
                    (
                        "max without (instance) "
                        f"(aws_elasticache_replication_lag_average{{{TARGET}}})",
                        "replica lag s {{dimension_CacheClusterId}}",
                    ),
                    (
                        "max without (instance) "
                        f"(aws_elasticache_curr_connections_maximum{{{TARGET}}})",
                        "connections {{dimension_CacheClusterId}}/{{dimension_CacheNodeId}}",
                    ),
                ),
                "Seconds each replica is behind its primary (over 30 for 10 minutes: P2), and "
                "client connections per node.",
                "ElastiCacheReplicationLagging",
            ),
        ),
    ),
    (
        "Redis",
        (
            Signal(
                65,
                "Memory against maxmemory",
                (
                    (f"redis_memory_used_bytes{{{TARGET}}}", "used {{target}}"),
                    (f"redis_memory_max_bytes{{{TARGET}}}", "max {{target}}"),
                ),
                "Memory in use; at maxmemory Redis evicts keys or refuses writes.",
                "RedisDown",
                unit="bytes",
            ),
            Signal(
                66,
                "Evictions and refused connections",
                (
                    (f"rate(redis_evicted_keys_total{{{TARGET}}}[5m])", "evicted {{target}}"),
                    (
                        f"rate(redis_rejected_connections_total{{{TARGET}}}[5m])",
                        "rejected {{target}}",
                    ),
                ),
                "Keys evicted for memory and connections refused for maxclients, per second.",
                "RedisTooManyClients",
            ),
            Signal(
                74,
                "Job queues",
                (
                    (
                        f"max without (instance) (redis_key_size{{{TARGET}}})",
                        "{{key}} {{db}} {{target}}",
                    ),
                ),
                "Items in each key a redis target's `keys:` lists (Celery, RQ, BullMQ queues). "
                "A line that only climbs means no worker takes jobs.",
                "RedisQueueGrowing",
            ),
            Signal(
                80,
                "Replication",
                (
                    (
                        f"max without (instance) (redis_master_link_up{{{TARGET}}})",
                        "link up {{target}} from {{master_host}}:{{master_port}}",
                    ),
                    (
                        f"max without (instance) (redis_connected_slaves{{{TARGET}}})",
                        "replicas attached to {{target}}",
                    ),
                ),
                "On a replica, 1 while its link to its master is up; on a master, how many "
                "replicas are attached. A master's attached replicas falling is a replica "
                "lost.",
                "RedisReplicaLinkDown",
            ),
            Signal(
                67,
                "Keyspace hits and misses",
                (
                    (f"rate(redis_keyspace_hits_total{{{TARGET}}}[5m])", "hits {{target}}"),
                    (f"rate(redis_keyspace_misses_total{{{TARGET}}}[5m])", "misses {{target}}"),
                ),
                "Lookups per second that found their key, and those that did not.",
                "RedisDown",
            ),
        ),
    ),
)


FIRING = 'ALERTS{alertstate="firing", alertname!="Watchdog"}'
ALERT_LABELS = "alertname, priority, runbook_url, target, cluster, service"


def _firing_alerts(y: int) -> table.Panel:
    """What pages now, each row linked to its runbook section: the rules carry the link as
    a label too, because ALERTS has the rules' labels and not their annotations."""
    return (
        table.Panel()
        .id(30)
        .title("Firing alerts")
        .description(
            "Every pending and firing alert: priority, what it concerns, since when; a row's "
            "runbook link opens the section that says what to do."
        )
        .unit("dateTimeFromNow")
        .datasource(DATASOURCE)
        .grid_pos(GridPos(h=6, w=24, x=0, y=y))
        .with_target(
            prometheus.Dataquery()
            # when each pending or firing alert became active, in ms for a date column
            .expr(
                f"max by ({ALERT_LABELS}) (ALERTS_FOR_STATE) * 1000"
                f' and on ({ALERT_LABELS}) ALERTS{{alertname!="Watchdog"}}'
            )
            .format(PromQueryFormat.TABLE)
            .instant()
            .ref_id("A")
        )
        .data_links(
            [
                dashboard.DashboardLink("Runbook: ${__data.fields.alertname}")
                .type(DashboardLinkType.LINK)
                .url("${__data.fields.runbook_url}")
                .target_blank(True)
            ]
        )
        .links(
            [
                dashboard.DashboardLink("Runbook")
                .type(DashboardLinkType.LINK)
                .url(f"{RUNBOOK}#stackprobe-runbook")
                .target_blank(True)
            ]
        )
    )


Rows = tuple[tuple[str, tuple[Signal, ...]], ...]


def _board(uid: str, title: str, description: str, rows: Rows, firing: bool) -> dashboard.Dashboard:
    """A dashboard with the shared variables and annotations, its rows laid out in a grid."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["stackprobe"])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .link(
            dashboard.DashboardLink("stackprobe dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["stackprobe"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for name, query in (
        ("cluster", "label_values(aws_ecs_service_desired_tasks, cluster)"),
        ("service", 'label_values(aws_ecs_service_desired_tasks{cluster=~"$cluster"}, service)'),
        ("target", "label_values(stackprobe_target_info, target)"),
    ):
        board = board.with_variable(
            dashboard.QueryVariable(name)
            .label(name.capitalize())
            .datasource(DATASOURCE)
            .query(query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
    board = board.annotation(
        dashboard.AnnotationQuery()
        .name("Deployments")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("blue")
        .expr(
            "max by (cluster, service) (aws_ecs_service_last_deployment_timestamp_seconds"
            '{cluster=~"$cluster", service=~"$service"}) * 1000'
        )
    )
    board = board.annotation(
        dashboard.AnnotationQuery()
        .name("Firing alerts")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .expr(FIRING)
    )
    y = 0
    if firing:
        board = board.with_panel(_firing_alerts(0))
        y = 6
    row_id = 100
    for row_title, signals in rows:
        board = board.with_row(
            dashboard.Row(row_title).id(row_id).grid_pos(GridPos(h=1, w=24, x=0, y=y))
        )
        row_id += 1
        y += 1
        x = 0
        for signal in signals:
            if x + signal.width > 24:
                x, y = 0, y + 8
            board = board.with_panel(_panel(signal, x, y))
            x += signal.width
        y += 8
    return board


def overview() -> dashboard.Dashboard:
    return _board(
        "stackprobe-overview",
        "stackprobe overview",
        "What broke, since when, and did a deploy cause it.",
        ROWS,
        firing=True,
    )


def ecs() -> dashboard.Dashboard:
    return _board(
        "stackprobe-ecs",
        "stackprobe ECS",
        "Deployments, task definitions, why tasks stop, expected environment values, and the "
        "security-group paths to the tasks and from them.",
        ECS_ROWS,
        firing=False,
    )


def datastores() -> dashboard.Dashboard:
    return _board(
        "stackprobe-datastores",
        "stackprobe databases: PostgreSQL, RDS, ElastiCache, Redis",
        "Connections against every limit, slow statements, wraparound and replication, RDS "
        "storage and CPU, ElastiCache engine and memory, Redis memory, clients and replicas.",
        DATASTORE_ROWS,
        firing=False,
    )


DASHBOARDS = {
    "stackprobe-overview.json": overview,
    "stackprobe-ecs.json": ecs,
    "stackprobe-datastores.json": datastores,
}


# How Grafana's Prometheus data source turns an annotation query's series into events. The
# SDK's 11.6 models (and the schema generated with them) have no fields for these, though
# Grafana reads them: a marker at each deployment's own time naming its service, and each
# alert's title with a link to its runbook section.
ANNOTATION_FORMAT: dict[str, dict[str, object]] = {
    "Deployments": {
        "useValueForTime": True,
        "titleFormat": "Deployed {{cluster}}/{{service}}",
        "tagKeys": "cluster,service",
    },
    "Firing alerts": {
        "titleFormat": "{{priority}} {{alertname}}",
        "textFormat": '{{target}}{{service}} <a href="{{runbook_url}}">runbook</a>',
        "tagKeys": "alertname,priority",
    },
}


def render(name: str) -> str:
    board = json.loads(JSONEncoder().encode(DASHBOARDS[name]().build()))
    for annotation in board.get("annotations", {}).get("list", ()):
        annotation.update(ANNOTATION_FORMAT.get(annotation["name"], {}))
    return json.dumps(board, sort_keys=True, indent=2) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name in DASHBOARDS:
        (OUT / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
