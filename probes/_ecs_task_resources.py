"""Per-task CPU and memory for the ecs_service kind, from Container Insights.

AWS/ECS publishes a service's CPU and memory as its average and maximum: neither says which
task is at its limit, and one task at 100 % of its memory among four at 30 % is the "random
502/504" a runbook asks to "check task CPU/memory" for. Container Insights with enhanced
observability publishes TaskCpuUtilization and TaskMemoryUtilization per TaskId, as a
percentage of what the task definition gives the task.

Per run: DescribeClusters (its containerInsights setting: per-task metrics exist only when it
is `enhanced`, and the reason says so otherwise; and the cluster's name, which the metrics
carry, for a target that gives an ARN), the cluster's running tasks (ListTasks, 100 a page,
and DescribeTasks, 100 a call: each task's service from its `service:NAME` group and its task
definition family), one ListMetrics (paginated) for the task metrics CloudWatch holds for the
cluster, and the two metrics of each running task of the target's services through the
cloudwatch kind's GetMetricData reader. Only running tasks are read: a task that stopped an
hour ago costs nothing, a standalone task of the same family is never taken for a service's.

ListMetrics gives the dimension sets exactly as CloudWatch keeps them, but shows a new
metric only after up to 15 minutes: a task it lists is read by its own set; a task started
since (a deploy's) by the same set of dimension names the cluster's other tasks have, filled
from the task itself, so its figures are there when its health check fails. Series are
YACE's (`aws_ecs_containerinsights_<metric>_average`, `dimension_ClusterName`,
`dimension_ServiceName`, `dimension_TaskId`); the TaskId is the `task` label the http kind's
discovered per-task series carry, which the alert rules join on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stackprobe.contract import Health, MetricSpec, ProbeContext, Sample
from stackprobe.durations import Duration
from stackprobe.probes._aws import AwsState, Finding
from stackprobe.probes._aws_api import AWS, AwsTarget
from stackprobe.probes._ecs_tasks import describe_tasks, task_arns
from stackprobe.probes.cloudwatch import DATAPOINT_TIME, CloudWatchPeriod, Query, read

NAMESPACE = "ECS/ContainerInsights"
RECENTLY_ACTIVE = "PT3H"  # ListMetrics' only window: metrics published in the last 3 hours
SATURATED = 90.0  # EcsTaskResourcesSaturated: task cpu or memory utilization > 90
# The dimensions a task's own metrics carry, which DescribeTasks gives values for.
FILLABLE = frozenset({"ClusterName", "ServiceName", "TaskDefinitionFamily", "TaskId"})


class TaskResources(BaseModel):
    """`task_resources:` of an ecs_service target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Period of each datapoint; Container Insights publishes every 60 s.
    period: CloudWatchPeriod = 60.0
    # How long CloudWatch may take to close a period before it is read.
    delay: Duration = 120.0
    # Running tasks read per service, by task id; CloudWatch charges per metric read (2 a task).
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


@dataclass(frozen=True, slots=True)
class Task:
    """A running task of one of the target's services, as DescribeTasks has it."""

    id: str
    service: str
    family: str


def task_dimensions(
    listed: Iterable[Mapping[str, Any]], cluster: str, tasks: Sequence[Task]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """task id -> the dimension set to read it by: the set ListMetrics lists for it (one that
    names its service before one that names its family), else the cluster's own set of names
    filled from the task (ListMetrics is minutes behind a new task); none when CloudWatch has
    no task metric for the cluster at all."""
    values = {
        t.id: {
            "ClusterName": cluster,
            "ServiceName": t.service,
            "TaskDefinitionFamily": t.family,
            "TaskId": t.id,
        }
        for t in tasks
    }
    own: dict[str, tuple[tuple[str, str], ...]] = {}
    shapes: set[tuple[str, ...]] = set()
    for metric in listed:
        dims = tuple((str(d["Name"]), str(d["Value"])) for d in metric.get("Dimensions", ()))
        named = dict(dims)
        if named.get("ClusterName") != cluster or "TaskId" not in named:
            continue
        shape = tuple(sorted(named))
        if not {"ServiceName", "TaskDefinitionFamily"} & set(shape) or set(shape) - FILLABLE:
            continue  # a set this kind cannot fill from a task (a container's, say)
        shapes.add(shape)
        task = values.get(named["TaskId"])
        if task is None or any(task[k] != v for k, v in dims):
            continue  # not a running task of these services, or another service's
        if named["TaskId"] not in own or _rank(dims) < _rank(own[named["TaskId"]]):
            own[named["TaskId"]] = dims
    if not shapes:
        return {}
    shape = min(shapes, key=lambda names: (("ServiceName" not in names), len(names)))
    return {
        t.id: own.get(t.id) or tuple((name, values[t.id][name]) for name in shape) for t in tasks
    }


def _rank(dims: tuple[tuple[str, str], ...]) -> tuple[bool, int]:
    """A set that names the service first, then the shortest."""
    return ("ServiceName" not in dict(dims), len(dims))


async def running(
    target: AwsTarget, ctx: ProbeContext, cluster: str, services: Iterable[str], max_tasks: int
) -> tuple[list[Task], list[str]]:
    """The running tasks of `services` (by their `service:NAME` group), at most `max_tasks` a
    service by task id; and what was left out."""
    wanted = set(services)
    arns = await task_arns(ctx, target, cluster, desiredStatus="RUNNING")
    by_service: dict[str, list[Task]] = {}
    for task in await describe_tasks(ctx, target, cluster, arns):
        group = str(task.get("group", ""))
        service = group.removeprefix("service:")
        if group.startswith("service:") and service in wanted:
            found = Task(
                str(task["taskArn"]).rsplit("/", 1)[-1],
                service,
                _family(str(task.get("taskDefinitionArn", ""))),
            )
            by_service.setdefault(service, []).append(found)
    kept: list[Task] = []
    left: list[str] = []
    for service, tasks in sorted(by_service.items()):
        tasks.sort(key=lambda t: t.id)
        kept.extend(tasks[:max_tasks])
        if len(tasks) > max_tasks:
            left.append(f"{service}: {max_tasks} of {len(tasks)} running tasks read (max_tasks)")
    return kept, left


Read = tuple[list[Sample], list[Finding], str]


async def task_resources(
    target: AwsTarget,
    ctx: ProbeContext,
    state: AwsState,
    cluster: str,
    settings: TaskResources,
    services: Sequence[Mapping[str, Any]],
) -> Read:
    """The samples, the findings (tasks past the rule's line, or why none can be read) and a
    summary for the healthy verdict, for the services DescribeServices returned; `cluster`
    as the config names it (a name or an ARN). Read once a `period`: a target probed more
    often shows the same read again, as CloudWatch has nothing newer, and would pay for
    every metric each time."""
    now = time.monotonic()
    kept: tuple[float, tuple[str, ...], Read] | None = state.cache.get("task_resources")
    names = tuple(sorted(str(s.get("serviceName", "")) for s in services))
    if kept is not None and now - kept[0] < settings.period and kept[1] == names:
        return kept[2]
    found = await _read(target, ctx, cluster, settings, services)
    state.cache["task_resources"] = (now, names, found)
    return found


async def _read(
    target: AwsTarget,
    ctx: ProbeContext,
    cluster: str,
    settings: TaskResources,
    services: Sequence[Mapping[str, Any]],
) -> Read:
    aws = ctx.use(AWS)
    answer = await aws.call(
        target, "ecs", "describe_clusters", ctx.deadline, clusters=[cluster], include=["SETTINGS"]
    )
    described = (answer.get("clusters") or [{}])[0]
    name = str(described.get("clusterName") or cluster.rsplit("/", 1)[-1])
    mode = next(
        (
            str(s.get("value", "")).lower()
            for s in described.get("settings", ())
            if s.get("name") == "containerInsights"
        ),
        "disabled",
    )
    samples: list[Sample] = [INSIGHTS(1, name, mode)]
    if mode != "enhanced":
        why = (
            f"per-task CPU and memory: Container Insights is {mode} on cluster {name}; "
            f"they need enhanced observability (aws ecs update-cluster-settings --cluster "
            f"{name} --settings name=containerInsights,value=enhanced)"
        )
        return samples, [Finding(Health.DEGRADED, why)], ""
    tasks, left = await running(
        target, ctx, cluster, (str(s.get("serviceName", "")) for s in services), settings.max_tasks
    )
    if not tasks:
        return samples, [], "no running task to read"
    pages = await aws.pages(
        target,
        "cloudwatch",
        "list_metrics",
        ctx.deadline,
        Namespace=NAMESPACE,
        MetricName="TaskMemoryUtilization",
        Dimensions=[{"Name": "ClusterName", "Value": name}, {"Name": "TaskId"}],
        RecentlyActive=RECENTLY_ACTIVE,
    )
    dimensions = task_dimensions((m for p in pages for m in p.get("Metrics", ())), name, tasks)
    if not dimensions:
        why = (
            f"per-task CPU and memory: CloudWatch has no Container Insights task metric for "
            f"cluster {name} in the last 3 hours, though {len(tasks)} tasks run (it takes up "
            "to 15 minutes to list the first)"
        )
        return samples, [Finding(Health.DEGRADED, why)], ""
    period = settings.period
    wanted = [
        Query(spec, (name, t.service, t.id), NAMESPACE, metric, dimensions[t.id], "Average", period)
        for t in tasks
        for spec, metric in ((CPU, "TaskCpuUtilization"), (MEMORY, "TaskMemoryUtilization"))
    ]
    read_samples = await read(ctx, target, wanted, settings.delay)
    samples.extend(read_samples)
    findings = list(_saturated(read_samples))
    read_tasks = {s.label_values[2] for s in read_samples if s.spec is not DATAPOINT_TIME}
    said = f"{len(read_tasks)} of {len(tasks)} running tasks' CPU and memory read"
    return samples, findings, "; ".join([said, *left])


def _saturated(samples: Sequence[Sample]) -> Iterable[Finding]:
    """EcsTaskResourcesSaturated: a task's CPU or memory above SATURATED %, worst first. The
    rule stays silent while its whole service is past the line in the same resource
    (EcsServiceResourcesSaturated names it), which the service's cloudwatch target knows, not
    this one."""
    hot = sorted(
        (s for s in samples if s.spec in (CPU, MEMORY) and s.value > SATURATED),
        key=lambda s: -s.value,
    )
    for sample in hot:
        _, service, task = sample.label_values
        what = "CPU" if sample.spec is CPU else "memory"
        why = f"{service}: task {task} at {sample.value:.0f} % of its {what}"
        yield Finding(Health.DEGRADED, why, "EcsTaskResourcesSaturated")
