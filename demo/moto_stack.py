"""An ECS Fargate stack in moto, shared by `stackprobe demo` and the tests.

moto stands in for AWS but differs where stackprobe looks: it reports every registered ip
target healthy, fails on percentile statistics, and walks a running task towards STOPPED
each time it is described. `behave_like_aws()` closes those gaps in this process (moto's
server mode runs its backends in-process too), so what the demo shows and what the tests
assert is what AWS would answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from moto.cloudwatch.models import Statistics
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.elbv2.models import FakeTargetGroup
from moto.moto_api import state_manager

ACCOUNT = DEFAULT_ACCOUNT_ID  # MOTO_ACCOUNT_ID, when set

_health_for = FakeTargetGroup.health_for
_statistic = Statistics.get_statistics_for_type


def _patched_health_for(self: FakeTargetGroup, target: dict[str, Any], ec2: Any) -> Any:
    """moto reports every registered ip target healthy; `set_target_health` overrides it."""
    status = _health_for(self, target, ec2)
    override = getattr(self, "health_overrides", {}).get(target["Id"])
    if override is not None:
        status.status, status.reason, status.description = override
    return status


def _with_percentiles(self: Statistics, stat: str) -> Any:
    """moto 5.2 answers a percentile statistic with a server error; CloudWatch computes it
    over the period's values (nearest rank here, which is what a test can check)."""
    if re.fullmatch(r"p\d+(\.\d+)?", stat):
        values = sorted(float(v) for v in self.metric_single_values_list)
        if not values:
            return None
        rank = max(1, math.ceil(float(stat[1:]) / 100 * len(values)))
        return values[rank - 1]
    return _statistic(self, stat)


@contextmanager
def behave_like_aws() -> Iterator[None]:
    """Target health that can fail, percentiles, and running tasks that stay RUNNING."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(FakeTargetGroup, "health_for", _patched_health_for))
        stack.enter_context(
            mock.patch.object(Statistics, "get_statistics_for_type", _with_percentiles)
        )
        # on AWS a running task stays RUNNING until something stops it
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
        stack.callback(state_manager.unset_transition, "ecs::task")
        yield


def set_target_health(
    group_arn: str, target_id: str, state: str | None, reason: str = "", region: str = ""
) -> None:
    """What the load balancer's health checks say of one target; None: moto's own answer."""
    from moto.elbv2.models import elbv2_backends

    region = region or group_arn.split(":")[3]
    group = elbv2_backends[ACCOUNT][region].target_groups[group_arn]
    overrides = group.__dict__.setdefault("health_overrides", {})
    if state is None:
        overrides.pop(target_id, None)
    else:
        overrides[target_id] = (state, reason, f"Health checks failed ({reason})")


def ecs_backend(region: str) -> Any:
    from moto.ecs.models import ecs_backends

    return ecs_backends[ACCOUNT][region]


class EcsStack:
    """A Fargate cluster in moto: task definitions, services, and tasks with private IPs.
    `client` makes a boto3 client for a service name (pointed at moto however it runs)."""

    def __init__(self, client: Callable[[str], Any], cluster: str, region: str) -> None:
        self.cluster = cluster
        self.region = region
        self.ecs = client("ecs")
        ec2 = client("ec2")
        # Task addresses on loopback (moto takes any range): a task nobody pointed at a
        # server (`set_address`) refuses a probe instead of sending it into a private network.
        vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
        # awsvpc tasks need DNS hostnames on their VPC, as in AWS
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        self.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.1.0/24")["Subnet"]["SubnetId"]
        self.security_group = ec2.create_security_group(
            GroupName=f"{cluster}-tasks", Description="tasks", VpcId=vpc
        )["GroupId"]
        self.ecs.create_cluster(clusterName=cluster)

    def backend_service(self, name: str) -> Any:
        return ecs_backend(self.region).services[f"{self.cluster}:{name}"]

    def task_definition(self, family: str, env: dict[str, str] | None = None) -> str:
        answer = self.ecs.register_task_definition(
            family=family,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": family,
                    "image": f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{family}:1",
                    "memory": 512,  # moto's run_task needs a container-level memory
                    "essential": True,
                    "environment": [{"name": k, "value": v} for k, v in (env or {}).items()],
                    "secrets": [
                        {
                            "name": "DATABASE_URL",
                            "valueFrom": f"arn:aws:ssm:{self.region}:{ACCOUNT}:parameter/db",
                        }
                    ],
                }
            ],
        )
        arn: str = answer["taskDefinition"]["taskDefinitionArn"]
        return arn

    def service(
        self,
        name: str,
        desired: int,
        running: int | None = None,
        task_definition: str = "",
        target_group: str = "",
    ) -> None:
        """A service whose running count is set in moto's backend (moto reads it from
        MOTO_ECS_SERVICE_RUNNING at creation otherwise), registering its tasks in
        `target_group` (an ARN) when given."""
        balancers = (
            [{"targetGroupArn": target_group, "containerName": name, "containerPort": 8787}]
            if target_group
            else []
        )
        self.ecs.create_service(
            cluster=self.cluster,
            serviceName=name,
            taskDefinition=task_definition or self.task_definition(name),
            desiredCount=desired,
            launchType="FARGATE",
            loadBalancers=balancers,
        )
        self.set_counts(name, desired if running is None else running)

    def set_counts(self, name: str, running: int, desired: int | None = None) -> None:
        service = self.backend_service(name)
        if desired is not None:
            service.desired_count = desired
        service.running_count = running
        service.pending_count = max(0, service.desired_count - running)
        for deployment in service.deployments:
            deployment["runningCount"] = running
            deployment["desiredCount"] = service.desired_count
            if deployment.get("rolloutState") != "FAILED":  # ECS gave up on it for good
                deployment["rolloutState"] = (
                    "COMPLETED" if running >= service.desired_count else "IN_PROGRESS"
                )

    def run_tasks(self, service: str, count: int = 1) -> list[str]:
        answer = self.ecs.run_task(
            cluster=self.cluster,
            taskDefinition=self.backend_service(service).task_definition,
            count=count,
            launchType="FARGATE",
            group=f"service:{service}",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [self.subnet],
                    "securityGroups": [self.security_group],
                }
            },
        )
        return [t["taskArn"] for t in answer["tasks"]]

    def running_tasks(self, service: str) -> list[str]:
        return [
            arn
            for arn, task in ecs_backend(self.region).tasks.get(self.cluster, {}).items()
            if task.group == f"service:{service}" and task.last_status == "RUNNING"
        ]

    def stop(self, task_arn: str, reason: str, container_reason: str = "") -> None:
        self.ecs.stop_task(cluster=self.cluster, task=task_arn, reason=reason)
        if container_reason:
            task = ecs_backend(self.region).tasks[self.cluster][task_arn]
            for container in task.containers:
                container.reason = container_reason

    def deploy(self, name: str, task_definition: str, running_new: int = 0) -> None:
        """A rolling deployment as ECS shows it mid-way (moto only swaps the task definition):
        a new PRIMARY deployment in progress, the previous one ACTIVE and still serving."""
        from moto.core.utils import utcnow

        self.ecs.update_service(cluster=self.cluster, service=name, taskDefinition=task_definition)
        service = self.backend_service(name)
        old = service.deployments[0]
        now = utcnow()
        new = {
            **old,
            "id": f"ecs-svc/{len(service.deployments) + 1}",
            "taskDefinition": task_definition,
            "createdAt": now,
            "updatedAt": now,
            "runningCount": running_new,
            "rolloutState": "IN_PROGRESS",
            "rolloutStateReason": "ECS deployment in progress.",
        }
        old["status"] = "ACTIVE"
        old["runningCount"] = service.running_count - running_new
        service.deployments = [new, *service.deployments]

    def complete_deployment(self, name: str) -> None:
        """The newest deployment finished: it serves every task, the older ones are gone."""
        service = self.backend_service(name)
        newest = service.deployments[0]
        newest.update(
            status="PRIMARY",
            rolloutState="COMPLETED",
            rolloutStateReason="ECS deployment completed.",
            runningCount=service.running_count,
        )
        service.deployments = [newest]

    def set_address(self, task_arn: str, address: str) -> None:
        """Point a task's network interface at an address that is served (moto picks a
        random 10.x one)."""
        task = ecs_backend(self.region).tasks[self.cluster][task_arn]
        for attachment in task.attachments:
            for detail in attachment["details"]:
                if detail["name"] == "privateIPv4Address":
                    detail["value"] = address
