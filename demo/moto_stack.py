"""An ECS Fargate stack in moto, shared by `stackprobe demo` and the tests.

moto stands in for AWS but differs where stackprobe looks: it reports every registered ip
target healthy, fails on percentile statistics, matches GetMetricData's dimensions only in
the order PutMetricData gave them, walks a running task towards STOPPED each time it is
described, and its FilterLogEvents matches every event for any filter pattern
but a single term or phrase (`?a ?b` included), ignores `logStreamNamePrefix` and
`logGroupIdentifier`, and orders events stream by stream. `behave_like_aws()` closes those
gaps in this process (moto's server mode runs its backends in-process too), so what the demo
shows and what the tests assert is what AWS would answer.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from moto.cloudwatch.models import CloudWatchBackend, Dimension, MetricDatumBase, Statistics
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.elasticache.models import CacheCluster
from moto.elbv2.models import FakeTargetGroup
from moto.logs.exceptions import InvalidParameterException as LogsInvalidParameter
from moto.logs.exceptions import ResourceNotFoundException as LogsNotFound
from moto.logs.responses import LogsResponse
from moto.moto_api import state_manager

ACCOUNT = DEFAULT_ACCOUNT_ID  # MOTO_ACCOUNT_ID, when set
CONTAINER_PORT = 8787  # the port AEP's backend listens on, which its target groups reach

_health_for = FakeTargetGroup.health_for
_statistic = Statistics.get_statistics_for_type


def _patched_health_for(self: FakeTargetGroup, target: dict[str, Any], ec2: Any) -> Any:
    """moto reports every registered ip target healthy; `set_target_health` overrides it."""
    status = _health_for(self, target, ec2)
    override = getattr(self, "health_overrides", {}).get(target["Id"])
    if override is not None:
        status.status, status.reason, status.description = override
    return status


def _dimension_order(self: Dimension, other: Dimension) -> bool:
    """GetMetricData matches a query's dimensions to a metric's as a set, in any order, as
    AWS does; moto sorts both lists first, by a `<` that is not an order (it compares a
    value with a name), so a query listing them in another order than PutMetricData did
    found nothing."""
    return (self.name or "", self.value or "") < (other.name or "", other.value or "")


def _listed_metrics(
    self: CloudWatchBackend,
    metric_name: str,
    namespace: str,
    dimensions: list[dict[str, str]],
) -> list[MetricDatumBase]:
    """ListMetrics' metrics, each once: moto compares every datapoint it holds with every
    metric found so far, seconds of work once a demo has run an hour; this is one pass. A
    metric without dimensions is listed once too, as AWS lists it."""
    found: dict[tuple[str, str, frozenset[tuple[str, str]]], MetricDatumBase] = {}
    for datum in self.get_all_metrics():
        if datum.filter(namespace=namespace, name=metric_name, dimensions=dimensions):
            names = frozenset((str(d.name), str(d.value)) for d in datum.dimensions)
            found.setdefault((datum.namespace, datum.name, names), datum)
    return list(found.values())


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


# FilterLogEvents as the API reference describes it: one log group, named by logGroupName or
# logGroupIdentifier (never both); logStreamNames or logStreamNamePrefix (never both);
# startTime and endTime both inclusive; events of every stream interleaved by timestamp; a
# page holds at most `limit` events (1-10,000, 10,000 by default) and at most 1 MB; a
# nextToken while more remain. CloudWatch's filter-pattern syntax for unstructured events is
# evaluated (terms, "exact phrases", ?any-of, -excluded, case-sensitive); a JSON,
# space-delimited or %regex% pattern is refused rather than matching everything as moto does.
FILTER_PAGE_EVENTS = 10_000
FILTER_PAGE_BYTES = 1_048_576
_EVENT_OVERHEAD = 26  # bytes AWS counts per event beside its message (PutLogEvents' rule)
_FILTER_TERM = re.compile(r'([?-]?)(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))(?=\s|$)')


def filter_pattern_matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a message matches a CloudWatch Logs filter pattern for unstructured events:
    every plain term, none of the `-` terms, and one of the `?` terms when there are any."""
    text = pattern.strip()
    if not text or text == '""':
        return lambda message: True
    if text[0] in "{[":
        raise ValueError(f"JSON and space-delimited patterns are not evaluated here: {text}")
    required: list[str] = []
    excluded: list[str] = []
    any_of: list[str] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        match = _FILTER_TERM.match(text, position)
        if match is None:
            raise ValueError(f"cannot parse the filter pattern {text!r} at {position}")
        prefix, phrase, word = match.groups()
        if word is not None and word.startswith("%"):
            raise ValueError(f"regular-expression patterns are not evaluated here: {text}")
        term = re.sub(r"\\(.)", r"\1", phrase) if phrase is not None else word
        {"?": any_of, "-": excluded, "": required}[prefix].append(term)
        position = match.end()

    def matches(message: str) -> bool:
        return (
            all(term in message for term in required)
            and not any(term in message for term in excluded)
            and (not any_of or any(term in message for term in any_of))
        )

    return matches


def _filter_log_events(self: LogsResponse) -> str:
    name = self._get_param("logGroupName")
    identifier = self._get_param("logGroupIdentifier")
    if (name is None) == (identifier is None):
        raise LogsInvalidParameter(
            "You must include either logGroupIdentifier or logGroupName, but not both."
        )
    if identifier is not None:  # a name, or an ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME)
        name = identifier.split(":log-group:", 1)[-1].removesuffix(":*")
    streams_named = self._get_param("logStreamNames")
    stream_prefix = self._get_param("logStreamNamePrefix")
    if streams_named and stream_prefix is not None:
        raise LogsInvalidParameter(
            "logStreamNames and logStreamNamePrefix cannot both be specified."
        )
    limit = self._get_param("limit")
    if limit is not None and not 1 <= int(limit) <= FILTER_PAGE_EVENTS:
        raise LogsInvalidParameter(
            constraint=f"Member must have value between 1 and {FILTER_PAGE_EVENTS}",
            parameter="limit",
            value=limit,
        )
    start, end = self._get_param("startTime"), self._get_param("endTime")
    try:
        matches = filter_pattern_matcher(self._get_param("filterPattern") or "")
    except ValueError as exc:
        raise LogsInvalidParameter(str(exc)) from None
    group = self.logs_backend.groups.get(name)
    if group is None:
        raise LogsNotFound("The specified log group does not exist.")
    streams = {
        stream_name: stream
        for stream_name, stream in group.streams.items()
        if (not streams_named or stream_name in streams_named)
        and stream_name.startswith(stream_prefix or "")
    }
    found = sorted(
        (
            (event.timestamp, event.ingestion_time, int(event.event_id), stream_name, event)
            for stream_name, stream in streams.items()
            for event in stream.events
            if (start is None or event.timestamp >= start)
            and (end is None or event.timestamp <= end)
            and matches(event.message)
        ),
        key=lambda found: found[:3],
    )
    token = self._get_param("nextToken")
    if token:
        try:
            token_group, *after = json.loads(base64.b64decode(token))
        except ValueError:
            raise LogsInvalidParameter("The specified nextToken is invalid.") from None
        if token_group != name:
            raise LogsInvalidParameter("The specified nextToken is invalid.")
        found = [f for f in found if list(f[:3]) > after]
    page: list[tuple[int, int, int, str, Any]] = []
    size = 0
    for timestamp, ingested, event_id, stream_name, event in found:
        size += len(event.message.encode()) + _EVENT_OVERHEAD
        if len(page) >= int(limit or FILTER_PAGE_EVENTS) or (page and size > FILTER_PAGE_BYTES):
            break
        page.append((timestamp, ingested, event_id, stream_name, event))
    answer: dict[str, Any] = {
        "events": [
            {
                "logStreamName": stream_name,
                "timestamp": timestamp,
                "message": event.message,
                "ingestionTime": ingested,
                "eventId": str(event_id),
            }
            for timestamp, ingested, event_id, stream_name, event in page
        ],
        "searchedLogStreams": [
            {"logStreamName": stream_name, "searchedCompletely": True} for stream_name in streams
        ],
    }
    if len(page) < len(found):
        last = list(page[-1][:3])
        answer["nextToken"] = base64.b64encode(json.dumps([name, *last]).encode()).decode()
    return json.dumps(answer)


def _cache_nodes(self: CacheCluster) -> list[dict[str, Any]]:
    """DescribeCacheClusters' CacheNodes, which AWS gives with ShowCacheNodeInfo and moto
    never: a Redis cluster's one node is 0001, a Memcached cluster's are numbered on."""
    return [
        {"CacheNodeId": f"{n:04d}", "CacheNodeStatus": "available"}
        for n in range(1, (self.num_cache_nodes or 1) + 1)
    ]


def create_cache_group(client: Any, group: str, members: Sequence[str]) -> None:
    """A Redis replication group's member clusters, of one node each: AWS creates them with
    the group, moto does not."""
    for member in members:
        client.create_cache_cluster(
            CacheClusterId=member,
            ReplicationGroupId=group,
            Engine="redis",
            EngineVersion="7.1",
            CacheNodeType="cache.t4g.small",
            NumCacheNodes=1,
        )


@contextmanager
def behave_like_aws() -> Iterator[None]:
    """Target health that can fail, percentiles, running tasks that stay RUNNING,
    FilterLogEvents as CloudWatch Logs answers it, and cache clusters with their nodes."""
    with ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(CacheCluster, "cache_nodes", property(_cache_nodes), create=True)
        )
        stack.enter_context(mock.patch.object(FakeTargetGroup, "health_for", _patched_health_for))
        stack.enter_context(
            mock.patch.object(Statistics, "get_statistics_for_type", _with_percentiles)
        )
        stack.enter_context(mock.patch.object(Dimension, "__lt__", _dimension_order))
        stack.enter_context(
            mock.patch.object(CloudWatchBackend, "get_filtered_metrics", _listed_metrics)
        )
        stack.enter_context(
            mock.patch.object(LogsResponse, "filter_log_events", _filter_log_events)
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
        self.security_group, self.balancer_group, self.database_group, self.cache_group = (
            ec2.create_security_group(GroupName=f"{cluster}-{role}", Description=role, VpcId=vpc)[
                "GroupId"
            ]
            for role in ("tasks", "alb", "postgres", "redis")
        )
        # The paths AEP's runbook checks by hand (Incidents 2 and 6): the ALB's group into the
        # tasks' on the container port, the tasks' into PostgreSQL's and Redis'; egress is
        # AWS's default, all of it.
        for into, port, source in (
            (self.security_group, CONTAINER_PORT, self.balancer_group),
            (self.database_group, 5432, self.security_group),
            (self.cache_group, 6379, self.security_group),
        ):
            ec2.authorize_security_group_ingress(
                GroupId=into,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": port,
                        "ToPort": port,
                        "UserIdGroupPairs": [{"GroupId": source}],
                    }
                ],
            )
        # per-task CPU and memory (Container Insights) need enhanced observability
        self.ecs.create_cluster(
            clusterName=cluster, settings=[{"name": "containerInsights", "value": "enhanced"}]
        )

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
            [
                {
                    "targetGroupArn": target_group,
                    "containerName": name,
                    "containerPort": CONTAINER_PORT,
                }
            ]
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
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [self.subnet],
                    "securityGroups": [self.security_group],
                }
            },
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

    def roll_back(self, name: str, failed_tasks: int = 3) -> None:
        """The deployment circuit breaker gives up on the newest deployment and rolls back, as
        DescribeServices shows it while it does (moto has no circuit breaker): the failed
        deployment ACTIVE with rolloutState FAILED, and a new PRIMARY deployment of the last
        completed one's task definition "rolling back to deploymentId" it."""
        from moto.core.utils import utcnow

        service = self.backend_service(name)
        failed, *older = service.deployments
        stable = next(d for d in older if d.get("rolloutState") == "COMPLETED")
        now = utcnow()
        failed.update(
            status="ACTIVE",
            rolloutState="FAILED",
            rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.",
            failedTasks=failed_tasks,
            runningCount=0,
            updatedAt=now,
        )
        back = {
            **stable,
            "id": f"ecs-svc/{uuid.uuid4().int % 10**19:019d}",
            "status": "PRIMARY",
            "createdAt": now,
            "updatedAt": now,
            "failedTasks": 0,
            "rolloutState": "IN_PROGRESS",
            "rolloutStateReason": (
                f"ECS deployment circuit breaker: rolling back to deploymentId {stable['id']}."
            ),
        }
        service.task_definition = stable["taskDefinition"]
        service.deployments = [back, failed]

    def set_address(self, task_arn: str, address: str) -> None:
        """Point a task's network interface at an address that is served (moto picks a
        random 10.x one)."""
        task = ecs_backend(self.region).tasks[self.cluster][task_arn]
        for attachment in task.attachments:
            for detail in attachment["details"]:
                if detail["name"] == "privateIPv4Address":
                    detail["value"] = address
