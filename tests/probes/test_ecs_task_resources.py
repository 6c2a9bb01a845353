"""kind: ecs_service's `task_resources`: each task's CPU and memory from Container Insights,
against moto's ECS and CloudWatch with AWS's page limits enforced (tests/support/aws.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from stackprobe.contract import Health
from stackprobe.probes._aws_api import AwsClients
from stackprobe.probes._ecs_task_resources import task_dimensions
from tests.support.aws import REGION, EcsStack, inject
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
    dimensions = [{"Name": "ClusterName", "Value": "aep"}, {"Name": "TaskId", "Value": task}]
    dimensions += [{"Name": k, "Value": v} for k, v in dims.items()]
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="ECS/ContainerInsights",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": dimensions,
                "Timestamp": datetime.fromtimestamp(time.time() - ago, UTC),
                "Value": figure,
            }
            for name, figure in (("TaskCpuUtilization", cpu), ("TaskMemoryUtilization", memory))
        ],
    )


async def test_each_task_of_the_services_and_the_one_at_its_limit(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=2)
    stack.service("aep-worker", desired=1)
    publish("0f3a", 35, 97.4, ServiceName="aep-api")
    publish("9c1b", 40, 51, ServiceName="aep-api")
    publish("77aa", 12, 30, ServiceName="aep-worker")
    publish("5e5e", 99, 99, ServiceName="other-service")  # not a service of the target
    boto3.client("ecs", region_name=REGION).create_service(
        cluster="aep", serviceName="other-service", taskDefinition=stack.task_definition("x")
    )

    result = await ProbeRunner.once(ecs_target(services=["aep-api", "aep-worker"]), aws=aws)

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found[MEMORY] == {
        ("aep", "aep-api", "0f3a"): 97.4,
        ("aep", "aep-api", "9c1b"): 51.0,
        ("aep", "aep-worker", "77aa"): 30.0,
    }
    assert found[CPU][("aep", "aep-api", "0f3a")] == 35.0
    assert found["stackprobe_ecs_container_insights"] == {("aep", "enhanced"): 1.0}
    health = result.health()
    assert (health.health, health.alert) == (Health.DEGRADED, "EcsTaskResourcesSaturated")
    assert health.why == "aep-api: task 0f3a at 97 % of its memory"
    calls = aws_calls(result, timed=False)
    assert sum("ListMetrics" in c for c in calls) == 1
    assert sum("GetMetricData" in c for c in calls) == 1


async def test_healthy_tasks_say_how_many_were_read(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=2)
    publish("0f3a", 35, 60, ServiceName="aep-api")
    publish("9c1b", 40, 51, ServiceName="aep-api")

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    health = result.health()
    assert health.health is Health.OK
    assert health.why.endswith("; 2 tasks' CPU and memory read")


@pytest.mark.parametrize("mode", ["enabled", "disabled"])
async def test_without_enhanced_insights_the_reason_says_how_to_turn_it_on(
    stack: EcsStack, aws: AwsClients, mode: str
) -> None:
    boto3.client("ecs", region_name=REGION).update_cluster(
        cluster="aep", settings=[{"name": "containerInsights", "value": mode}]
    )
    stack.service("aep-api", desired=1, running=1)
    publish("0f3a", 35, 97, ServiceName="aep-api")  # never read: the cluster publishes none

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


async def test_a_task_that_stopped_hours_ago_has_no_series(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=1)
    publish("0f3a", 35, 60, ServiceName="aep-api")
    publish("dead", 90, 99, ago=2 * 3600, ServiceName="aep-api")  # listed, nothing recent

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    assert set(samples_by_name(result)[MEMORY]) == {("aep", "aep-api", "0f3a")}
    assert result.health().health is Health.OK


async def test_max_tasks_bounds_the_series_per_service(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=5)
    for n in range(5):
        publish(f"task{n}", 30, 40, ServiceName="aep-api")

    result = await ProbeRunner.once(ecs_target(task_resources={"max_tasks": 3}), aws=aws)

    assert {labels[2] for labels in samples_by_name(result)[CPU]} == {"task0", "task1", "task2"}


async def test_access_denied_on_list_metrics_names_the_action(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=1)
    target = ecs_target()
    inject(aws.client(target, "cloudwatch"), "ListMetrics", "AccessDenied", status=403, times=5)

    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "access_denied"
    assert "cloudwatch:ListMetrics" in result.detail


def _listed(*dims: dict[str, str]) -> list[dict[str, Any]]:
    return [{"Dimensions": [{"Name": k, "Value": v} for k, v in d.items()]} for d in dims]


def _service(family: str) -> dict[str, Any]:
    arn = f"arn:aws:ecs:{REGION}:123456789012:task-definition/{family}:7"
    return {"deployments": [{"taskDefinition": arn}]}


def test_a_family_only_dimension_set_is_attributed_by_the_services_deployments() -> None:
    services = {
        "api": _service("api-td"),
        "worker": _service("jobs-td"),
        "cron": _service("jobs-td"),
    }
    listed = _listed(
        {"ClusterName": "aep", "TaskDefinitionFamily": "api-td", "TaskId": "a1"},
        # both sets for one task: the one that names the service is read
        {"ClusterName": "aep", "TaskDefinitionFamily": "api-td", "TaskId": "a2"},
        {"ClusterName": "aep", "ServiceName": "api", "TaskId": "a2"},
        # a family two services run says nothing of which one: left out
        {"ClusterName": "aep", "TaskDefinitionFamily": "jobs-td", "TaskId": "j1"},
        # another cluster's task, and a service-level set without a task
        {"ClusterName": "other", "ServiceName": "api", "TaskId": "x1"},
        {"ClusterName": "aep", "ServiceName": "api"},
    )

    found = task_dimensions(listed, "aep", services, max_tasks=10)

    assert found == {
        "api": [
            ("a1", (("ClusterName", "aep"), ("TaskDefinitionFamily", "api-td"), ("TaskId", "a1"))),
            ("a2", (("ClusterName", "aep"), ("ServiceName", "api"), ("TaskId", "a2"))),
        ]
    }
