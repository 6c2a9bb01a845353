"""Per-task CPU and memory for the ecs_service kind, from Container Insights.

AWS/ECS publishes a service's CPU and memory as its average and maximum: neither says which
task is at its limit, and one task at 100 % of its memory among four at 30 % is the "random
502/504" a runbook asks to "check task CPU/memory" for. Container Insights with enhanced
observability publishes TaskCpuUtilization and TaskMemoryUtilization per TaskId, as a
percentage of what the task definition gives the task.

Per run: one DescribeClusters (its containerInsights setting: per-task metrics exist only
when it is `enhanced`, and the reason says so otherwise), one ListMetrics (paginated) for
the cluster's task metrics recently published, which gives each task's dimension set exactly
as CloudWatch keeps it, and the two metrics per task of the target's services through the
cloudwatch kind's GetMetricData reader. A task is attributed to its service by the
ServiceName dimension, or, where the set carries TaskDefinitionFamily instead, by the family
of the service's deployments. Series are YACE's (`aws_ecs_containerinsights_<metric>_average`,
`dimension_ClusterName`, `dimension_ServiceName`, `dimension_TaskId`); the TaskId is the
`task` label the http kind's discovered per-task series carry, which the alert rules join on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stackprobe.contract import Health, MetricSpec, ProbeContext, Sample
from stackprobe.durations import Duration
from stackprobe.probes._aws import Finding
from stackprobe.probes._aws_api import AWS, AwsTarget
from stackprobe.probes.cloudwatch import DATAPOINT_TIME, CloudWatchPeriod, Query, read

NAMESPACE = "ECS/ContainerInsights"
RECENTLY_ACTIVE = "PT3H"  # ListMetrics' only window: metrics published in the last 3 hours
SATURATED = 90.0  # EcsTaskResourcesSaturated: task cpu or memory utilization > 90


class TaskResources(BaseModel):
    """`task_resources:` of an ecs_service target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Period of each datapoint; Container Insights publishes every 60 s.
    period: CloudWatchPeriod = 60.0
    # How long CloudWatch may take to close a period before it is read.
    delay: Duration = 120.0
    # Tasks read per service; CloudWatch charges per metric read (2 a task).
    max_tasks: int = Field(50, ge=1, le=500)


_TASK = ("dimension_ClusterName", "dimension_ServiceName", "dimension_TaskId")
INSIGHTS = MetricSpec(
    "stackprobe_ecs_container_insights",
    "1 with the cluster's containerInsights setting (disabled, enabled, enhanced) as a label; "
    "per-task CPU and memory need enhanced.",
    ("cluster", "mode"),
)
CPU = MetricSpec(
    "aws_ecs_containerinsights_task_cpu_utilization_average",
    "Container Insights TaskCpuUtilization: % of the task's CPU, Average.",
    _TASK,
)
MEMORY = MetricSpec(
    "aws_ecs_containerinsights_task_memory_utilization_average",
    "Container Insights TaskMemoryUtilization: % of the task's memory limit, Average.",
    _TASK,
)
METRICS = (INSIGHTS, CPU, MEMORY)


def _family(task_definition_arn: str) -> str:
    return task_definition_arn.rsplit("/", 1)[-1].rpartition(":")[0]


def task_dimensions(
    listed: Iterable[Mapping[str, Any]],
    cluster: str,
    services: Mapping[str, Mapping[str, Any]],
    max_tasks: int,
) -> dict[str, list[tuple[str, tuple[tuple[str, str], ...]]]]:
    """service -> [(task id, the dimension set to read it by)], at most `max_tasks` each, from
    ListMetrics' metrics. A set naming the service beats one naming only the family."""
    by_family: dict[str, list[str]] = {}
    for name, described in services.items():
        families = {
            _family(str(d.get("taskDefinition", ""))) for d in described.get("deployments", ())
        }
        for family in families - {""}:
            by_family.setdefault(family, []).append(name)
    chosen: dict[tuple[str, str], tuple[int, tuple[tuple[str, str], ...]]] = {}
    for metric in listed:
        dims = tuple((str(d["Name"]), str(d["Value"])) for d in metric.get("Dimensions", ()))
        named = dict(dims)
        if named.get("ClusterName") != cluster or not named.get("TaskId"):
            continue
        if named.get("ServiceName") in services:
            service, rank = named["ServiceName"], 0
        elif (
            "ServiceName" not in named
            and len(by_family.get(named.get("TaskDefinitionFamily", ""), ())) == 1
        ):
            service, rank = by_family[named["TaskDefinitionFamily"]][0], 1
        else:
            continue  # another service's task, a standalone task, or a family two services run
        key = (service, named["TaskId"])
        if key not in chosen or (rank, len(dims)) < (chosen[key][0], len(chosen[key][1])):
            chosen[key] = (rank, dims)
    found: dict[str, list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for (service, task), (_, dims) in sorted(chosen.items()):
        if len(found.setdefault(service, [])) < max_tasks:
            found[service].append((task, dims))
    return found


async def task_resources(
    target: AwsTarget,
    ctx: ProbeContext,
    cluster: str,
    settings: TaskResources,
    services: Mapping[str, Mapping[str, Any]],
) -> tuple[list[Sample], list[Finding], str]:
    """The samples, the findings (tasks past the rule's line, or why none can be read) and a
    summary for the healthy verdict, for the `services` DescribeServices returned."""
    aws = ctx.use(AWS)
    answer = await aws.call(
        target, "ecs", "describe_clusters", ctx.deadline, clusters=[cluster], include=["SETTINGS"]
    )
    found = answer.get("clusters", ())
    mode = next(
        (
            str(s.get("value", "")).lower()
            for c in found[:1]
            for s in c.get("settings", ())
            if s.get("name") == "containerInsights"
        ),
        "disabled",
    )
    samples: list[Sample] = [INSIGHTS(1, cluster, mode)]
    if mode != "enhanced":
        why = (
            f"per-task CPU and memory: Container Insights is {mode} on cluster {cluster}; "
            f"they need enhanced observability (aws ecs update-cluster-settings --cluster "
            f"{cluster} --settings name=containerInsights,value=enhanced)"
        )
        return samples, [Finding(Health.DEGRADED, why)], ""
    pages = await aws.pages(
        target,
        "cloudwatch",
        "list_metrics",
        ctx.deadline,
        Namespace=NAMESPACE,
        MetricName="TaskMemoryUtilization",
        Dimensions=[{"Name": "ClusterName", "Value": cluster}, {"Name": "TaskId"}],
        RecentlyActive=RECENTLY_ACTIVE,
    )
    tasks = task_dimensions(
        (m for page in pages for m in page.get("Metrics", ())),
        cluster,
        services,
        settings.max_tasks,
    )
    wanted = [
        Query(spec, (cluster, service, task), NAMESPACE, metric, dims, "Average", settings.period)
        for service, listed in tasks.items()
        for task, dims in listed
        for spec, metric in ((CPU, "TaskCpuUtilization"), (MEMORY, "TaskMemoryUtilization"))
    ]
    read_samples = await read(ctx, target, wanted, settings.delay) if wanted else []
    samples.extend(read_samples)
    findings = list(_saturated(read_samples))
    read_tasks = {s.label_values[2] for s in read_samples if s.spec is not DATAPOINT_TIME}
    return samples, findings, f"{len(read_tasks)} tasks' CPU and memory read"


def _saturated(samples: Sequence[Sample]) -> Iterable[Finding]:
    """EcsTaskResourcesSaturated: a task's CPU or memory above SATURATED %, worst first. The
    rule stays silent while its whole service is past the line (EcsServiceResourcesSaturated
    names it), which the service's cloudwatch target knows, not this one."""
    hot = sorted(
        (s for s in samples if s.spec in (CPU, MEMORY) and s.value > SATURATED),
        key=lambda s: -s.value,
    )
    for sample in hot:
        _, service, task = sample.label_values
        what = "CPU" if sample.spec is CPU else "memory"
        why = f"{service}: task {task} at {sample.value:.0f} % of its {what}"
        yield Finding(Health.DEGRADED, why, "EcsTaskResourcesSaturated")
