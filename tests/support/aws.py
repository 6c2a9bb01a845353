"""moto, made to behave like AWS where the probes depend on it (DESIGN.md lists the gaps).

moto 5 answers ListServices and ListTasks in one page whatever maxResults says, ignores
ListTasks' serviceName, and accepts DescribeServices with more than 10 names and
DescribeTasks with more than 100 and GetMetricData with more than 500 queries and
DescribeDBInstances pages of any size, answers DescribeSecurityGroups and DescribeSubnets in
one page whatever MaxResults says (AWS: 5 to 1,000) and takes any number of filter values
(AWS: 200), fails on
percentile statistics, and moves a running task towards STOPPED every time it is
described. Real AWS pages, rejects and keeps it RUNNING; so does moto once
`faithful_aws()` is entered, so a probe that forgets to batch or paginate fails here too.
CloudWatch Logs' FilterLogEvents (filter patterns, stream prefixes, its 10,000-event pages and
their tokens) is made faithful by demo/moto_stack.py's `behave_like_aws()`, which this enters
too, so `stackprobe demo` counts what the tests count.

Errors are injected on the wire: `inject()` answers an operation with the status and error
body AWS would send, in the protocol the client speaks, so botocore parses it, retries it with
its retry mode and counts it through the same hooks as in production.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.cloudwatch.exceptions import ValidationError as CloudWatchValidationError
from moto.cloudwatch.models import CloudWatchBackend
from moto.core.botocore_stubber import MockRawResponse
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidNextToken
from moto.ec2.responses.security_groups import SecurityGroups as Ec2SecurityGroupsResponse
from moto.ec2.responses.subnets import Subnets as Ec2SubnetsResponse
from moto.ecs.exceptions import InvalidParameterException
from moto.ecs.responses import EC2ContainerServiceResponse
from moto.elasticache.exceptions import (
    InvalidParameterValueException as ElastiCacheInvalidParameterValue,
)
from moto.elasticache.responses import ElastiCacheResponse
from moto.rds.exceptions import InvalidParameterValue as RdsInvalidParameterValue
from moto.rds.responses import RDSResponse
from prometheus_client import CollectorRegistry

from stackprobe.demo import moto_stack
from stackprobe.demo.moto_stack import behave_like_aws, create_cache_group
from stackprobe.demo.moto_stack import set_target_health as set_target_health
from stackprobe.probes.logs import SIGNALS as LOG_SIGNALS

REGION = "eu-west-1"
# Planted as the credentials every AWS test runs with: none may ever appear in any output.
CANARY_KEY_ID = "AKIACANARY7Q2W9E4R1T"
CANARY_SECRET = "canary-secret-aws-Zq8vN3xR5tL0pW2yK7mB"


def _page(items: list[str], max_results: Any, token: Any, default: int) -> tuple[list[str], str]:
    size = int(max_results or default)
    if not 1 <= size <= 100:
        raise InvalidParameterException("maxResults must be between 1 and 100.")
    start = int(token or 0)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


def _list_services(self: EC2ContainerServiceResponse) -> ActionResult:
    arns = self.ecs_backend.list_services(
        self._get_param("cluster", "default"),
        self._get_param("schedulingStrategy"),
        launch_type=self._get_param("launchType"),
    )
    # AWS's default page is 10 services, its largest 100
    page, token = _page(arns, self._get_param("maxResults"), self._get_param("nextToken"), 10)
    return ActionResult({"serviceArns": page, **({"nextToken": token} if token else {})})


def _list_tasks(self: EC2ContainerServiceResponse) -> ActionResult:
    tasks = self.ecs_backend.list_tasks(
        self._get_param("cluster", "default"),
        self._get_param("containerInstance"),
        self._get_param("family"),
        self._get_param("startedBy"),
        None,
        self._get_param("desiredStatus"),
    )
    service = self._get_param("serviceName")
    if service:  # what AWS does and moto does not
        tasks = [t for t in tasks if t.group == f"service:{service.rsplit('/', 1)[-1]}"]
    arns = [t.task_arn for t in tasks]
    page, token = _page(arns, self._get_param("maxResults"), self._get_param("nextToken"), 100)
    return ActionResult({"taskArns": page, **({"nextToken": token} if token else {})})


_describe_services = EC2ContainerServiceResponse.describe_services
_describe_tasks = EC2ContainerServiceResponse.describe_tasks


def _limited_describe_services(self: EC2ContainerServiceResponse) -> Any:
    if len(self._get_param("services", [])) > 10:
        raise InvalidParameterException("services can have at most 10 items.")
    return _describe_services(self)


def _limited_describe_tasks(self: EC2ContainerServiceResponse) -> Any:
    if len(self._get_param("tasks", [])) > 100:
        raise InvalidParameterException("tasks can have at most 100 items.")
    return _describe_tasks(self)


_describe_db_instances = RDSResponse.describe_db_instances


def _limited_describe_db_instances(self: RDSResponse) -> Any:
    size = self.params.get("MaxRecords")
    if size is not None and not 20 <= int(size) <= 100:
        raise RdsInvalidParameterValue("MaxRecords must be between 20 and 100.")
    return _describe_db_instances(self)


_describe_cache_clusters = ElastiCacheResponse.describe_cache_clusters


def _limited_describe_cache_clusters(self: ElastiCacheResponse) -> Any:
    size = self._get_param("MaxRecords")
    if size is not None and not 20 <= int(size) <= 100:
        raise ElastiCacheInvalidParameterValue("MaxRecords must be between 20 and 100.")
    return _describe_cache_clusters(self)


_get_metric_data = CloudWatchBackend.get_metric_data


def _limited_get_metric_data(self: CloudWatchBackend, queries: list[Any], *a: Any, **k: Any) -> Any:
    if len(queries) > 500:
        raise CloudWatchValidationError(
            "The collection MetricDataQueries must not have a size greater than 500."
        )
    return _get_metric_data(self, queries, *a, **k)


def _ec2_page(response: Any, items: list[Any], key: str) -> ActionResult:
    """One page of an EC2 Describe answer as AWS pages it: MaxResults 5 to 1,000 (all when
    absent), NextToken, at most 200 values in a request's filters."""
    values = sum(len(v) for v in response._filters_from_querystring().values())
    if values > 200:
        raise EC2ClientError(
            "FilterLimitExceeded",
            "The maximum number of filter values specified on a single call is 200",
        )
    size = response._get_param("MaxResults")
    if size is not None and not 5 <= int(size) <= 1000:
        raise EC2ClientError("InvalidParameterValue", "MaxResults must be between 5 and 1000.")
    token = response._get_param("NextToken")
    if token is not None and not str(token).isdigit():
        raise InvalidNextToken(str(token))
    start = int(token or 0)
    end = start + int(size) if size is not None else len(items)
    page = {key: items[start:end]}
    return ActionResult({**page, **({"NextToken": str(end)} if end < len(items) else {})})


def _describe_security_groups(self: Ec2SecurityGroupsResponse) -> ActionResult:
    groups = self.ec2_backend.describe_security_groups(
        group_ids=self._get_param("GroupIds", []),
        groupnames=self._get_param("GroupNames", []),
        filters=self._filters_from_querystring(),
    )
    return _ec2_page(self, list(groups), "SecurityGroups")


def _describe_subnets(self: Ec2SubnetsResponse) -> ActionResult:
    subnets = self.ec2_backend.describe_subnets(
        self._get_param("SubnetIds"), self._filters_from_querystring()
    )
    return _ec2_page(self, list(subnets), "Subnets")


@contextmanager
def faithful_aws() -> Iterator[None]:
    """moto for every AWS service, with AWS's paging and batch limits."""
    with mock_aws(), faithful_responses():
        yield


@contextmanager
def faithful_responses() -> Iterator[None]:
    """AWS's paging and batch limits in moto's backends, for the in-process mock
    (`faithful_aws`) and for a moto server in this process alike."""
    with ExitStack() as stack:
        for name, replacement in (
            ("list_services", _list_services),
            ("list_tasks", _list_tasks),
            ("describe_services", _limited_describe_services),
            ("describe_tasks", _limited_describe_tasks),
        ):
            stack.enter_context(mock.patch.object(EC2ContainerServiceResponse, name, replacement))
        stack.enter_context(behave_like_aws())
        stack.enter_context(
            mock.patch.object(
                Ec2SecurityGroupsResponse, "describe_security_groups", _describe_security_groups
            )
        )
        stack.enter_context(
            mock.patch.object(Ec2SubnetsResponse, "describe_subnets", _describe_subnets)
        )
        stack.enter_context(
            mock.patch.object(CloudWatchBackend, "get_metric_data", _limited_get_metric_data)
        )
        stack.enter_context(
            mock.patch.object(RDSResponse, "describe_db_instances", _limited_describe_db_instances)
        )
        stack.enter_context(
            mock.patch.object(
                ElastiCacheResponse, "describe_cache_clusters", _limited_describe_cache_clusters
            )
        )
        yield


def _error_body(request: Any, service: str, code: str, message: str) -> tuple[bytes, str]:
    content_type = request.headers.get("Content-Type", b"")
    if isinstance(content_type, bytes):
        content_type = content_type.decode()
    if "amz-json" in content_type:
        return json.dumps({"__type": code, "message": message}).encode(), content_type
    if service == "s3":
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        return body.encode(), "application/xml"
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    )
    return body.encode(), "text/xml"


class Injected:
    """How many attempts an injection still answers, and how many it answered."""

    def __init__(self, times: int) -> None:
        self.remaining = times
        self.answered = 0


def put_metrics(
    cloudwatch: Any,
    namespace: str,
    dimensions: dict[str, str],
    figures: dict[str, float],
    at: float,
) -> None:
    """One datapoint of each of `figures` (metric name -> value) at unix time `at`, under the
    same dimensions, as a service publishes them to CloudWatch."""
    cloudwatch.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "Timestamp": datetime.fromtimestamp(at, UTC),
                "Value": value,
            }
            for metric, value in figures.items()
        ],
    )


def inject(
    client: Any, operation: str | None, code: str, *, times: int = 1, status: int = 400
) -> Injected:
    """AWS answers the next `times` attempts of `operation` (e.g. DescribeServices; None for
    every operation) on this client with the error `code`, as it would on the wire."""
    service_id = client.meta.service_model.service_id.hyphenize()
    service = client.meta.service_model.service_name
    state = Injected(times)

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        if state.remaining <= 0:
            return None
        state.remaining -= 1
        state.answered += 1
        body, content_type = _error_body(request, service, code, f"injected {code}")
        headers = {"Content-Type": content_type, "x-amzn-RequestId": "r-1"}
        return AWSResponse(request.url, status, headers, MockRawResponse(body))

    # First, so it answers before moto's own before-send handler does.
    event = f"before-send.{service_id}" + (f".{operation}" if operation else "")
    client.meta.events.register_first(event, answer)
    return state


def api_calls(registry: CollectorRegistry) -> Counter[tuple[str, str, str]]:
    """stackprobe_aws_api_calls_total as (service, operation, outcome) -> count."""
    found: Counter[tuple[str, str, str]] = Counter()
    for family in registry.collect():
        if family.name == "stackprobe_aws_api_calls":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    key = (labels["service"], labels["operation"], labels["outcome"])
                    found[key] += int(sample.value)
    return found


def by_operation(calls: Counter[tuple[str, str, str]]) -> Counter[str]:
    found: Counter[str] = Counter()
    for (_, operation, _), count in calls.items():
        found[operation] += count
    return found


def ecs_backend() -> Any:
    return moto_stack.ecs_backend(REGION)


class EcsStack(moto_stack.EcsStack):
    """The demo's Fargate cluster, in the region and account the tests use."""

    def __init__(self, session: Any, cluster: str = "aep") -> None:
        super().__init__(
            lambda service: session.client(service, region_name=REGION), cluster, REGION
        )


class Inventory:
    """A whole stack in moto, sized as asked: clusters of services with stopped and running
    tasks, load balancers with target groups, queues with dead-letter queues, buckets with
    objects and daily storage metrics, log groups with a few application lines, RDS instances
    (a burstable PostgreSQL on gp2, and a read replica of it when there are two), and Redis
    replication groups of a primary and a replica each. `targets()` is a config probing all
    of it."""

    def __init__(
        self,
        clusters: int = 1,
        services: int = 3,
        target_groups: int = 2,
        queues: int = 2,
        buckets: int = 1,
        log_groups: int = 2,
        databases: int = 1,
        caches: int = 1,
    ) -> None:
        import time

        session = boto3_session()
        self.clusters = [EcsStack(session, f"cluster-{c}") for c in range(clusters)]
        self.services = [f"svc-{s}" for s in range(services)]
        elb = session.client("elbv2", region_name=REGION)
        ec2 = session.client("ec2", region_name=REGION)
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
        vpc = vpcs["Vpcs"][0]["VpcId"]  # moto's default VPC, 172.31.0.0/16
        subnets = [
            ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"172.31.{200 + i}.0/24", AvailabilityZone=f"{REGION}{z}"
            )["Subnet"]["SubnetId"]
            for i, z in enumerate("ab")
        ]
        self.load_balancers: list[tuple[str, str]] = []  # (name, LoadBalancer dimension)
        self.target_groups: list[tuple[int, str]] = []  # (balancer index, TargetGroup dim)
        self.target_group_arns: list[str] = []
        per_lb = 10
        for b in range(max(1, math.ceil(target_groups / per_lb))):
            lb = elb.create_load_balancer(
                Name=f"alb-{b}",
                Subnets=subnets,
                SecurityGroups=[self.clusters[0].balancer_group] if self.clusters else [],
            )["LoadBalancers"][0]
            arn = lb["LoadBalancerArn"]
            self.load_balancers.append((f"alb-{b}", arn.split(":loadbalancer/")[1]))
            for g in range(b * per_lb, min(target_groups, (b + 1) * per_lb)):
                tg = elb.create_target_group(
                    Name=f"tg-{g}",
                    Protocol="HTTP",
                    Port=8787,
                    VpcId=vpc,
                    TargetType="ip",
                    HealthCheckPath="/health/live",
                )["TargetGroups"][0]["TargetGroupArn"]
                elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": "10.0.1.10"}])
                elb.create_listener(
                    LoadBalancerArn=arn,
                    Protocol="HTTP",
                    Port=8000 + g,
                    DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
                )
                self.target_groups.append((b, tg.split(":")[-1]))
                self.target_group_arns.append(tg)
        for c, stack in enumerate(self.clusters):
            definition = stack.task_definition("app", {"BUDGET_ENFORCEMENT_MODE": "strict"})
            for s, name in enumerate(self.services):
                # the first cluster's first service behind the first target group
                group = self.target_group_arns[0] if c == s == 0 and self.target_group_arns else ""
                stack.service(name, desired=2, task_definition=definition, target_group=group)
            first = self.services[0]
            running, stopped = stack.run_tasks(first, 2)
            stack.stop(stopped, "Essential container in task exited", "OutOfMemoryError")
            stack.set_address(running, "127.0.0.1")  # port 9 there refuses at once
            self.discoverable = (stack.cluster, first)
            # Container Insights (enhanced) for the running task, in a closed minute
            put_metrics(
                session.client("cloudwatch", region_name=REGION),
                "ECS/ContainerInsights",
                {
                    "ClusterName": stack.cluster,
                    "ServiceName": first,
                    "TaskId": running.rsplit("/", 1)[-1],
                },
                {"TaskCpuUtilization": 31.0, "TaskMemoryUtilization": 57.0},
                time.time() - 200,
            )
        sqs = session.client("sqs", region_name=REGION)
        self.queues = [f"jobs-{q}" for q in range(queues)]
        for name in self.queues:
            dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
            policy = json.dumps(
                {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
            )
            url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})
            sqs.send_message(QueueUrl=url["QueueUrl"], MessageBody="job")
        cwlogs = session.client("logs", region_name=REGION)
        self.log_groups = [f"/ecs/app-{g}" for g in range(log_groups)]
        for name in self.log_groups:
            cwlogs.create_log_group(logGroupName=name)
            cwlogs.create_log_stream(logGroupName=name, logStreamName="app/app/1")
            at = int(time.time() * 1000) - 120_000
            lines = ["GET /health/live 200", "redis: transport closed", "KeyError: 'id'"]
            cwlogs.put_log_events(
                logGroupName=name,
                logStreamName="app/app/1",
                logEvents=[{"timestamp": at + i, "message": m} for i, m in enumerate(lines)],
            )
        s3 = session.client("s3", region_name=REGION)
        cloudwatch = session.client("cloudwatch", region_name=REGION)
        self.buckets = [f"bucket-{b}" for b in range(buckets)]
        yesterday = math.floor(time.time() / 86400 - 1) * 86400
        for name in self.buckets:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
            s3.put_object(Bucket=name, Key="a.tif", Body=b"x")
            for metric, storage in (
                ("BucketSizeBytes", "StandardStorage"),
                ("NumberOfObjects", "AllStorageTypes"),
            ):
                dims = {"BucketName": name, "StorageType": storage}
                put_metrics(cloudwatch, "AWS/S3", dims, {metric: 1.0}, yesterday)

        rds = session.client("rds", region_name=REGION)
        self.databases = [f"db-{d}" for d in range(databases)]
        for d, name in enumerate(self.databases):
            if d == 1:
                rds.create_db_instance_read_replica(
                    DBInstanceIdentifier=name, SourceDBInstanceIdentifier=self.databases[0]
                )
                continue
            rds.create_db_instance(
                DBInstanceIdentifier=name,
                DBInstanceClass="db.t3.micro",
                Engine="postgres",
                AllocatedStorage=20,
                StorageType="gp2",
                MasterUsername="app",
                MasterUserPassword="not-a-secret-moto-only",
            )

        elasticache = session.client("elasticache", region_name=REGION)
        self.caches = [f"cache-{c}" for c in range(caches)]
        for group in self.caches:
            create_cache_group(elasticache, group, (f"{group}-001", f"{group}-002"))

    def targets(
        self, *, percentiles: bool = False, security_groups: bool = False
    ) -> list[dict[str, Any]]:
        """Every AWS kind over the whole inventory. moto 5.2 fails on percentile statistics,
        so ALB latency queries are left out unless `percentiles`; the ecs_service targets
        check security-group paths (ALB -> tasks, tasks -> PostgreSQL and Redis) when
        `security_groups`."""
        aws = {"interval": "1m", "timeout": "20s"}
        targets: list[dict[str, Any]] = [
            {
                "name": f"ecs-{s.cluster}",
                "kind": "ecs_service",
                "cluster": s.cluster,
                "expect_env": {"BUDGET_ENFORCEMENT_MODE": "strict"},
                "task_resources": {},
                **(
                    {
                        "security_groups": True,
                        "reaches": [
                            {
                                "name": "postgres",
                                "port": 5432,
                                "security_groups": [s.database_group],
                            },
                            {"name": "redis", "port": 6379, "security_groups": [s.cache_group]},
                        ],
                    }
                    if security_groups
                    else {}
                ),
                **aws,
            }
            for s in self.clusters
        ]
        targets.append(
            {
                "name": "albs",
                "kind": "alb",
                "load_balancers": [n for n, _ in self.load_balancers],
                "expect_health_check_path": "/health/live",
                **aws,
            }
        )
        targets.append({"name": "queues", "kind": "sqs", "queues": self.queues, **aws})
        targets.append({"name": "buckets", "kind": "s3", "buckets": self.buckets, **aws})
        targets.append(
            {
                "name": "buckets-listed",
                "kind": "s3",
                "buckets": self.buckets[:1],
                "mode": "list",
                **aws,
            }
        )
        cluster, service = self.discoverable
        targets.append(
            {
                "name": "tasks",
                "kind": "http",
                "interval": "1m",
                "timeout": "5s",
                "discover": {"ecs": {"cluster": cluster, "service": service, "port": 9}},
            }
        )
        cloudwatch: dict[str, Any] = {
            "name": "cloudwatch",
            "kind": "cloudwatch",
            "ecs_services": [
                {"cluster": s.cluster, "service": name}
                for s in self.clusters
                for name in self.services
            ],
            "sqs_queues": self.queues,
            **aws,
        }
        if percentiles:
            cloudwatch["albs"] = [
                {
                    "load_balancer": dim,
                    "target_groups": [tg for b, tg in self.target_groups if b == i],
                }
                for i, (_, dim) in enumerate(self.load_balancers)
            ]
        targets.append(cloudwatch)
        if self.databases:
            targets.append({"name": "databases", "kind": "rds", **aws})
        if self.caches:
            targets.append({"name": "caches", "kind": "elasticache", **aws})
        if self.log_groups:
            targets.append(
                {
                    "name": "logs",
                    "kind": "logs",
                    "log_group_prefix": "/ecs/app-",
                    "signals": list(LOG_SIGNALS),
                    **aws,
                }
            )
        return targets


def boto3_session() -> Any:
    import boto3

    return boto3.Session(region_name=REGION)
