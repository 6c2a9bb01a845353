"""ECS task discovery for the http kind: probe every running task of a service directly.

When targets turn unhealthy, a runbook tells on-call to curl each task's IP. The ALB's view is
one number per target group; a task whose `/health/ready` fails while the balancer still
routes to it only shows when each task is asked itself.

Each run lists the service's running tasks (ListTasks, 100 a page, then DescribeTasks, 100 a
call), takes each task's private IPv4 address from its network interface attachment, and
runs the http probe against `scheme://address:port/path` for every task at once, at most
`max_tasks`. One series set per task, labelled by task ID: bounded by the service's task count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stackprobe.contract import MetricSpec, ProbeContext, ProbeResult, Sample
from stackprobe.probes._aws import batches, gather_all
from stackprobe.probes._aws_api import AWS, AwsAccess, AwsCallError

DESCRIBE_TASKS_MAX = 100
LIST_TASKS_MAX = 100


class EcsDiscovery(AwsAccess):
    cluster: str = Field(min_length=1)
    service: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    path: str = Field("/", pattern=r"^/")
    scheme: Literal["http", "https"] = "http"
    # Tasks probed per run; more are counted in stackprobe_ecs_tasks_discovered but not probed.
    max_tasks: int = Field(100, ge=1, le=1000)


class Discover(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ecs: EcsDiscovery


_T = ("task",)
TASKS = MetricSpec(
    "stackprobe_ecs_tasks_discovered", "Running tasks found for the service in the last run."
)
TASK_SUCCESS = MetricSpec(
    "stackprobe_ecs_task_probe_success",
    "1 if the task's own endpoint answered as expected, else 0.",
    (*_T, "address"),
)
TASK_STATUS = MetricSpec(
    "stackprobe_ecs_task_http_status_code",
    "HTTP status code the task answered, 0 when none arrived.",
    _T,
)
TASK_DURATION = MetricSpec(
    "stackprobe_ecs_task_probe_duration_seconds", "Seconds the task's probe took.", _T
)
TASK_FAILURE = MetricSpec(
    "stackprobe_ecs_task_failure_reason",
    "1 with the reason the task's probe failed (the http reasons); absent while it succeeds.",
    (*_T, "reason"),
)
TASK_COMPONENT = MetricSpec(
    "stackprobe_ecs_task_health_component_up",
    "1 if the task's readiness body reports the component healthy, 0 if unhealthy.",
    (*_T, "component"),
)

METRICS = (TASKS, TASK_SUCCESS, TASK_STATUS, TASK_DURATION, TASK_FAILURE, TASK_COMPONENT)

Check = Callable[[Any, ProbeContext], Awaitable[ProbeResult]]


def task_address(task: Mapping[str, Any]) -> str | None:
    """The private IPv4 address of an awsvpc task (every Fargate task is one)."""
    for attachment in task.get("attachments", ()):
        for detail in attachment.get("details", ()):
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                return str(detail["value"])
    for container in task.get("containers", ()):
        for interface in container.get("networkInterfaces", ()):
            if interface.get("privateIpv4Address"):
                return str(interface["privateIpv4Address"])
    return None


async def task_arns(
    ctx: ProbeContext, access: AwsAccess, cluster: str, **filters: Any
) -> list[str]:
    """ListTasks, every page of 100 (serviceName, desiredStatus as `filters`)."""
    pages = await ctx.use(AWS).pages(
        access,
        "ecs",
        "list_tasks",
        ctx.deadline,
        cluster=cluster,
        PaginationConfig={"PageSize": LIST_TASKS_MAX},
        **filters,
    )
    return [arn for page in pages for arn in page.get("taskArns", ())]


async def describe_tasks(
    ctx: ProbeContext, access: AwsAccess, cluster: str, arns: list[str]
) -> list[dict[str, Any]]:
    """DescribeTasks, 100 tasks a call, the calls side by side."""
    described = await gather_all(
        ctx.use(AWS).call(
            access, "ecs", "describe_tasks", ctx.deadline, cluster=cluster, tasks=list(batch)
        )
        for batch in batches(arns, DESCRIBE_TASKS_MAX)
    )
    return [task for page in described for task in page.get("tasks", ())]


async def running_tasks(discovery: EcsDiscovery, ctx: ProbeContext) -> list[tuple[str, str | None]]:
    """(task ID, address) of the service's running tasks, sorted by ID; the address is None
    for a task without a private IPv4 address (not awsvpc, or not attached yet)."""
    arns = await task_arns(
        ctx, discovery, discovery.cluster, serviceName=discovery.service, desiredStatus="RUNNING"
    )
    found: list[tuple[str, str | None]] = []
    for task in await describe_tasks(ctx, discovery, discovery.cluster, arns):
        if task.get("group") != f"service:{discovery.service}":
            continue  # what a serviceName filter should already have dropped
        if task.get("lastStatus") != "RUNNING":
            continue
        found.append((str(task["taskArn"]).rsplit("/", 1)[-1], task_address(task)))
    return sorted(found, key=lambda found: found[0])


async def probe_tasks(
    target: Any,
    ctx: ProbeContext,
    check: Check,
    reasons: tuple[Any, Any],
    component_spec: MetricSpec,
    status_spec: MetricSpec,
) -> ProbeResult:
    """Run `check` (the http probe) against every running task of the discovered service.

    `reasons` are the http kind's (discovery_failed, no_tasks); `component_spec` and
    `status_spec` are the http families whose values are carried over per task."""
    discovery_failed, no_tasks = reasons
    discovery: EcsDiscovery = target.discover.ecs
    try:
        tasks = await running_tasks(discovery, ctx)
    except AwsCallError as exc:
        return ProbeResult.failed(discovery_failed, f"ECS task discovery: {exc}")
    samples: list[Sample] = [TASKS(len(tasks))]
    if not tasks:
        return ProbeResult.failed(
            no_tasks,
            f"service {discovery.service} in cluster {discovery.cluster} has no running task",
            tuple(samples),
        )
    probed = [(task, address) for task, address in tasks if address is not None]
    if not probed:
        return ProbeResult.failed(
            no_tasks,
            f"{len(tasks)} running tasks of {discovery.service}, none with a private IPv4 "
            "address to probe (discovery needs awsvpc networking, which Fargate always has)",
            tuple(samples),
        )
    probed = probed[: discovery.max_tasks]

    async def one(address: str) -> tuple[ProbeResult, float]:
        url = f"{discovery.scheme}://{address}:{discovery.port}{discovery.path}"
        started = time.perf_counter()
        result = await check(target.model_copy(update={"url": url, "discover": None}), ctx)
        return result, time.perf_counter() - started

    results = await asyncio.gather(*(one(address) for _, address in probed))
    failures = []
    for (task, address), (result, duration) in zip(probed, results, strict=True):
        samples.append(TASK_SUCCESS(1 if result.success else 0, task, address))
        samples.append(TASK_DURATION(duration, task))
        for sample in result.samples:
            if sample.spec is status_spec:
                samples.append(TASK_STATUS(sample.value, task))
            elif sample.spec is component_spec:
                samples.append(TASK_COMPONENT(sample.value, task, *sample.label_values))
        if not result.success:
            samples.append(TASK_FAILURE(1, task, result.reason or "unknown"))
            failures.append((task, address, result))
    if failures:
        task, address, first = failures[0]
        return ProbeResult(
            False,
            tuple(samples),
            first.reason,
            f"{len(failures)} of {len(probed)} tasks failing; task {task} at {address}: "
            f"{first.detail}",
        )
    return ProbeResult.ok(tuple(samples))
