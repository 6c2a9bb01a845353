"""Generates stackprobe's Grafana dashboards with grafana-foundation-sdk (Grafana 11.6 line).

    .venv/bin/python grafana/generate.py          # writes grafana/dashboards/*.json

The JSON is committed; tests/test_dashboards.py regenerates it and fails on any difference,
validates it against Grafana 11.6's dashboard schema, and checks every query. The overview
is laid out along the runbooks' incidents: what broke, since when, and did a deploy cause it.
Panel ids 1-9 are the area panels the alert rules' dashboard_url opens (docs/alerts.md).
"""

from __future__ import annotations

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
                        'probe_success and on (target) stackprobe_target_info{kind="dns"}',
                        "{{target}}",
                    ),
                ),
                "1 while the site's name resolves (AEP Incident 6: dig the site's name).",
                "DnsNotResolving",
            ),
            Signal(
                12,
                "Probe duration",
                ((f"probe_duration_seconds{{{TARGET}}}", "{{target}}"),),
                "Seconds each check took; compare with the latency threshold of tile URLs.",
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
                        'aws_applicationelb_target_response_time_p95{dimension_TargetGroup=""}',
                        "p95 {{dimension_LoadBalancer}}",
                    ),
                    (
                        'aws_applicationelb_target_response_time_p99{dimension_TargetGroup=""}',
                        "p99 {{dimension_LoadBalancer}}",
                    ),
                ),
                "Target response time p95 and p99 (VivaCampo resolution: p95 < 500 ms).",
                "AlbHighLatency",
                unit="s",
            ),
            Signal(
                14,
                "Healthy targets",
                (("aws_alb_target_group_healthy_targets", "{{load_balancer}} {{target_group}}"),),
                "Targets passing the health check; 0 is a P0 (AEP Incident 2).",
                "AlbNoHealthyTargets",
            ),
        ),
    ),
    (
        "ECS: desired vs running, stopped tasks, resources",
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
        ),
    ),
    (
        "Queues and storage",
        (
            Signal(
                5,
                "Queue depth",
                (
                    ("aws_sqs_messages_visible", "waiting {{queue}}"),
                    ("aws_sqs_messages_in_flight", "in flight {{queue}}"),
                ),
                "Jobs waiting and being worked; growing with none deleted is VivaCampo Scenario 4.",
                "SqsJobsStuck",
            ),
            Signal(
                17,
                "Oldest message and dead letters",
                (
                    (
                        "aws_sqs_approximate_age_of_oldest_message_maximum",
                        "oldest {{dimension_QueueName}}",
                    ),
                    ("aws_sqs_dead_letter_messages_visible", "dead letters {{queue}}"),
                ),
                "How long the oldest job has waited, and jobs that failed every retry.",
                "SqsDeadLetterMessages",
            ),
            Signal(
                6,
                "Bucket size",
                (("aws_s3_bucket_size_bytes", "{{bucket}} {{storage_type}}"),),
                "Bytes per bucket, daily: growth is VivaCampo Scenario 2.",
                "S3BucketGrowingFast",
                unit="bytes",
            ),
        ),
    ),
    (
        "Databases",
        (
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
                        f" - pg_settings_superuser_reserved_connections{{{TARGET}}}",
                        "limit {{target}}",
                    ),
                ),
                "Connections against what ordinary roles may open (AEP Incident 4, VivaCampo "
                "Scenario 1).",
                "PostgresConnectionsNearLimit",
                width=12,
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
                width=12,
            ),
            Signal(
                8,
                "Redis up and PING latency",
                (
                    (f"redis_up{{{TARGET}}}", "up {{target}}"),
                    (f"stackprobe_redis_ping_duration_seconds{{{TARGET}}}", "ping {{target}}"),
                ),
                "Redis answering, and how fast (AEP Incident 3).",
                "RedisDown",
                width=12,
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
                width=12,
            ),
        ),
    ),
    (
        "stackprobe itself",
        (
            Signal(
                9,
                "Failure reasons",
                ((f"stackprobe_probe_failure_reason{{{TARGET}}}", "{{target}} {{reason}}"),),
                "Why each failing target fails, from a small fixed set of reasons.",
                "StackprobeCannotMeasure",
                width=12,
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
                width=12,
            ),
        ),
    ),
)


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
                dashboard.DashboardLink("Runbook")
                .type(DashboardLinkType.LINK)
                .url(f"{RUNBOOK}#{signal.runbook.lower()}")
                .target_blank(True)
            ]
        )
    )
    for letter, (expr, legend) in zip("ABCD", signal.queries, strict=False):
        panel = panel.with_target(
            prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(letter)
        )
    return panel


FIRING = 'ALERTS{alertstate="firing"}'


def _firing_alerts(y: int) -> table.Panel:
    """What pages now, each row linked to its runbook section: the rules carry the link as
    a label too, because ALERTS has the rules' labels and not their annotations."""
    return (
        table.Panel()
        .id(30)
        .title("Firing alerts")
        .description(
            "Every firing alert with its priority; a row's runbook link opens the section "
            "that says what to do."
        )
        .datasource(DATASOURCE)
        .grid_pos(GridPos(h=6, w=24, x=0, y=y))
        .with_target(
            prometheus.Dataquery()
            .expr(f"max by (alertname, priority, runbook_url) ({FIRING})")
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


def overview() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("stackprobe overview")
        .uid("stackprobe-overview")
        .description("What broke, since when, and did a deploy cause it.")
        .tags(["stackprobe"])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
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
            "changes(aws_ecs_service_last_deployment_timestamp_seconds"
            '{cluster=~"$cluster", service=~"$service"}[2m]) > 0'
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
    board = board.with_panel(_firing_alerts(0))
    y = 6
    row_id = 100
    for title, signals in ROWS:
        board = board.with_row(
            dashboard.Row(title).id(row_id).grid_pos(GridPos(h=1, w=24, x=0, y=y))
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


DASHBOARDS = {"stackprobe-overview.json": overview}


def render(name: str) -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(DASHBOARDS[name]().build()) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name in DASHBOARDS:
        (OUT / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
