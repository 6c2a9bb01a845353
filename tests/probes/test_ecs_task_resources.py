"""kind: ecs_service's `task_resources`: each task's CPU and memory from Container Insights,
against moto's ECS and CloudWatch with AWS's page limits enforced (tests/support/aws.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import boto3
import pytest

from stackprobe.contract import Health
from stackprobe.probes._aws_api import AwsClients
from stackprobe.probes._ecs_task_resources import Task, task_dimensions
from tests.support.aws import REGION, EcsStack, inject, put_metrics
from tests.support.probing import ProbeRunner, aws_calls, make_target, samples_by_name

CPU = "aws_ecs_containerinsights_task_cpu_utilization_average"
MEMORY = "aws_ecs_containerinsights_task_memory_utilization_average"


@pytest.fixture
def stack(moto: None) -> EcsStack:
    return EcsStack(boto3.Session(region_name=REGION))


def ecs_target(**extra: Any) -> Any:
    return make_target(
        {
            "name": "aep-ecs",
            "kind": "ecs_service",
            "cluster": "aep",
            "stopped_tasks": False,
            "task_resources": {},
            **extra,
        }
    )


def publish(task: str, cpu: float, memory: float, ago: float = 200, **dims: str) -> None:
    """What Container Insights writes for one task: its two utilizations, `ago` seconds back
    (a closed minute by the default 2m delay), under `dims` beside ClusterName and TaskId."""
    put_metrics(
        boto3.client("cloudwatch", region_name=REGION),
        "ECS/ContainerInsights",
        {"ClusterName": "aep", "TaskId": task, **dims},
        {"TaskCpuUtilization": cpu, "TaskMemoryUtilization": memory},
        time.time() - ago,
    )


def ids(arns: list[str]) -> list[str]:
    return [arn.rsplit("/", 1)[-1] for arn in arns]


async def test_each_running_task_of_the_services_and_the_one_at_its_limit(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=2)
    stack.service("aep-worker", desired=1)
    stack.service("other-service", desired=1)
    hot, cool = sorted(ids(stack.run_tasks("aep-api", 2)))
    (worker,) = ids(stack.run_tasks("aep-worker"))
    (other,) = ids(stack.run_tasks("other-service"))
    publish(hot, 35, 97.4, ServiceName="aep-api")
    publish(cool, 40, 51, ServiceName="aep-api")
    publish(worker, 12, 30, ServiceName="aep-worker")
    publish(other, 99, 99, ServiceName="other-service")  # not a service of the target
    publish("stopped1", 90, 99, ServiceName="aep-api")  # listed, but no longer running

    target = ecs_target(services=["aep-api", "aep-worker"])
    asked: list[int] = []
    aws.client(target, "cloudwatch").meta.events.register(
        "before-parameter-build.cloudwatch.GetMetricData",
        lambda params, **_: asked.append(len(params["MetricDataQueries"])),
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found[MEMORY] == {
        ("aep", "aep-api", hot): 97.4,
        ("aep", "aep-api", cool): 51.0,
        ("aep", "aep-worker", worker): 30.0,
    }
    assert found[CPU][("aep", "aep-api", hot)] == 35.0
    assert found["stackprobe_ecs_container_insights"] == {("aep", "enhanced"): 1.0}
    health = result.health()
    assert (health.health, health.alert) == (Health.DEGRADED, "EcsTaskResourcesSaturated")
    assert health.why == f"aep-api: task {hot} at 97 % of its memory"
    calls = aws_calls(result, timed=False)
    assert sum("ListMetrics" in c for c in calls) == 1
    assert sum("GetMetricData" in c for c in calls) == 1
    # 3 running tasks, 2 metrics each: nothing asked of the stopped or the other service's
    assert asked == [6]


async def test_healthy_tasks_say_how_many_were_read(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=2)
    first, second = ids(stack.run_tasks("aep-api", 2))
    publish(first, 35, 60, ServiceName="aep-api")
    publish(second, 40, 51, ServiceName="aep-api")

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    health = result.health()
    assert health.health is Health.OK
    assert health.why.endswith("; 2 of 2 running tasks' CPU and memory read")


async def test_a_task_newer_than_the_listing_is_read_by_its_siblings_dimensions(
    stack: EcsStack, aws: AwsClients
) -> None:
    """ListMetrics lists a new metric only minutes later: a task a deploy just started is
    read by the dimension names its siblings are listed under, with its own values."""
    stack.service("aep-api", desired=2)
    old, new = ids(stack.run_tasks("aep-api", 2))
    publish(old, 35, 60, ServiceName="aep-api")
    publish(new, 41, 88, ServiceName="aep-api")
    target = ecs_target()
    client = aws.client(target, "cloudwatch")

    def behind(parsed: dict[str, Any], **_: Any) -> None:
        """What a ListMetrics minutes behind answers: the old task only."""
        parsed["Metrics"] = [
            m for m in parsed.get("Metrics", ()) if all(d["Value"] != new for d in m["Dimensions"])
        ]

    client.meta.events.register("after-call.cloudwatch.ListMetrics", behind)

    result = await ProbeRunner.once(target, aws=aws)

    assert samples_by_name(result)[MEMORY] == {
        ("aep", "aep-api", old): 60.0,
        ("aep", "aep-api", new): 88.0,
    }


async def test_a_target_probed_more_often_than_the_period_reads_once_a_period(
    stack: EcsStack, aws: AwsClients
) -> None:
    """CloudWatch has one datapoint a period: a 15 s target reading a 1m period each run
    would pay four times for the same figures."""
    stack.service("aep-api", desired=1)
    (task,) = ids(stack.run_tasks("aep-api"))
    publish(task, 35, 60, ServiceName="aep-api")
    runner = ProbeRunner(ecs_target(interval="15s", task_resources={"period": "1m"}), aws=aws)

    first = await runner.run()
    again = await runner.run()

    assert samples_by_name(again)[MEMORY] == samples_by_name(first)[MEMORY]
    assert [c for c in aws_calls(first, timed=False) if "GetMetricData" in c]
    assert not [c for c in aws_calls(again, timed=False) if "cloudwatch:" in c]
    assert again.health().why == first.health().why


async def test_a_cluster_given_by_arn_reads_by_its_name(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=1)
    (task,) = ids(stack.run_tasks("aep-api"))
    publish(task, 35, 60, ServiceName="aep-api")
    arn = boto3.client("ecs", region_name=REGION).describe_clusters(clusters=["aep"])["clusters"][
        0
    ]["clusterArn"]

    result = await ProbeRunner.once(ecs_target(cluster=arn), aws=aws)

    assert samples_by_name(result)[MEMORY] == {("aep", "aep-api", task): 60.0}


@pytest.mark.parametrize("mode", ["enabled", "disabled"])
async def test_without_enhanced_insights_the_reason_says_how_to_turn_it_on(
    stack: EcsStack, aws: AwsClients, mode: str
) -> None:
    boto3.client("ecs", region_name=REGION).update_cluster(
        cluster="aep", settings=[{"name": "containerInsights", "value": mode}]
    )
    stack.service("aep-api", desired=1, running=1)
    (task,) = ids(stack.run_tasks("aep-api"))
    publish(task, 35, 97, ServiceName="aep-api")  # never read: the cluster publishes none

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    assert result.success, result.detail  # the services themselves are measured
    found = samples_by_name(result)
    assert found["stackprobe_ecs_container_insights"] == {("aep", mode): 1.0}
    assert CPU not in found and MEMORY not in found
    health = result.health()
    assert health.health is Health.DEGRADED and health.alert == ""
    assert f"Container Insights is {mode} on cluster aep" in health.why
    assert "--settings name=containerInsights,value=enhanced" in health.why
    calls = aws_calls(result, timed=False)
    assert not [c for c in calls if "ListMetrics" in c or "GetMetricData" in c]


async def test_running_tasks_with_no_task_metric_at_all_are_degraded(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=2)
    stack.run_tasks("aep-api", 2)

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    health = result.health()
    assert health.health is Health.DEGRADED and health.alert == ""
    assert "no Container Insights task metric for cluster aep" in health.why
    assert "2 tasks run" in health.why


async def test_max_tasks_bounds_the_series_per_service_and_says_so(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=5)
    tasks = sorted(ids(stack.run_tasks("aep-api", 5)))
    for task in tasks:
        publish(task, 30, 40, ServiceName="aep-api")

    result = await ProbeRunner.once(ecs_target(task_resources={"max_tasks": 3}), aws=aws)

    assert {labels[2] for labels in samples_by_name(result)[CPU]} == set(tasks[:3])
    assert result.health().why.endswith(
        "3 of 3 running tasks' CPU and memory read; aep-api: 3 of 5 running tasks read (max_tasks)"
    )


async def test_a_denied_listing_keeps_the_services_and_names_the_action(
    stack: EcsStack, aws: AwsClients
) -> None:
    """An old policy without cloudwatch:ListMetrics: the services' own series stay, so their
    alerts keep working, and the run fails with the action to grant."""
    stack.service("aep-api", desired=1)
    stack.run_tasks("aep-api")
    target = ecs_target()
    inject(aws.client(target, "cloudwatch"), "ListMetrics", "AccessDenied", status=403, times=5)

    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "access_denied"
    assert "cloudwatch:ListMetrics" in result.detail
    found = samples_by_name(result)
    assert found["aws_ecs_service_running_tasks"] == {("aep", "aep-api"): 1.0}
    health = result.health()
    assert health.alert == "StackprobeAwsAccessDenied"
    assert health.why.startswith("per-task CPU and memory unknown:")


async def test_a_throttled_listing_keeps_the_last_good_run(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=1)
    (task,) = ids(stack.run_tasks("aep-api"))
    publish(task, 35, 60, ago=192.5, ServiceName="aep-api")
    # a 1 s period, so the second run reads again; its window 190-195 s back
    target = ecs_target(task_resources={"period": "1s", "delay": "190s"})
    runner = ProbeRunner(target, aws=aws)
    first = await runner.run()
    inject(aws.client(target, "cloudwatch"), "ListMetrics", "Throttling", times=10)
    await asyncio.sleep(1.1)

    second = await runner.run()

    assert first.success and second.reason == "throttled"
    assert samples_by_name(second)[MEMORY] == {("aep", "aep-api", task): 60.0}


def _listed(*dims: dict[str, str]) -> list[dict[str, Any]]:
    return [{"Dimensions": [{"Name": k, "Value": v} for k, v in d.items()]} for d in dims]


def test_the_listed_set_names_the_service_and_a_new_task_takes_the_clusters_names() -> None:
    tasks = [Task("a1", "api", "api-td"), Task("a2", "api", "api-td"), Task("n1", "api", "api-td")]
    listed = _listed(
        # both sets for one task: the one that names the service is read
        {"ClusterName": "aep", "TaskDefinitionFamily": "api-td", "TaskId": "a1"},
        {"ClusterName": "aep", "ServiceName": "api", "TaskId": "a1"},
        # only a family set for another
        {"ClusterName": "aep", "TaskDefinitionFamily": "api-td", "TaskId": "a2"},
        # a task of another service, one of another cluster, a service-level set
        {"ClusterName": "aep", "ServiceName": "worker", "TaskId": "w1"},
        {"ClusterName": "other", "ServiceName": "api", "TaskId": "x1"},
        {"ClusterName": "aep", "ServiceName": "api"},
        # a set naming a task under another service than the one it runs in: not its own
        {"ClusterName": "aep", "ServiceName": "worker", "TaskId": "a2"},
    )

    found = task_dimensions(listed, "aep", tasks)

    assert found == {
        "a1": (("ClusterName", "aep"), ("ServiceName", "api"), ("TaskId", "a1")),
        "a2": (("ClusterName", "aep"), ("TaskDefinitionFamily", "api-td"), ("TaskId", "a2")),
        # n1 is not listed yet: the names the cluster's sets have that name a service
        "n1": (("ClusterName", "aep"), ("ServiceName", "api"), ("TaskId", "n1")),
    }


def test_no_task_metric_for_the_cluster_reads_nothing() -> None:
    tasks = [Task("a1", "api", "api-td")]
    listed = _listed({"ClusterName": "aep", "ServiceName": "api"})

    assert task_dimensions(listed, "aep", tasks) == {}
