"""The demo's AWS: moto's server on loopback, seeded like a small ECS Fargate stack, with the
traffic that keeps its queue and CloudWatch figures moving, and the AWS side of each fault.

The stack is AEP's, shrunk: cluster `aep-demo` with backend, frontend and worker services, an
ALB with a target group per web service, a jobs queue with its dead-letter queue, and a
rasters bucket with a lifecycle rule and S3's daily storage metrics. Every 10 seconds the
site "serves" requests and the worker takes jobs, and what AWS would record of it goes to
CloudWatch, so the demo's dashboards move as a live stack's do: a fault that takes the
backend off the balancer shows as the balancer's own 5xx, as an outage does there. Each
running task writes to its service's log group in CloudWatch Logs, and while a fault is on,
the error lines the runbooks grep for (`APP_ERRORS`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from stackprobe.demo.moto_stack import (
    ACCOUNT,
    EcsStack,
    behave_like_aws,
    create_cache_group,
    set_target_health,
)

REGION = "eu-west-1"
CLUSTER = "aep-demo"
BACKEND, FRONTEND, WORKER = "aep-backend", "aep-frontend", "aep-worker"
SERVICES = {BACKEND: 2, FRONTEND: 2, WORKER: 1}  # desired tasks
LOAD_BALANCER = "aep-demo-alb"
TARGET_GROUPS = {BACKEND: "aep-backend-tg", FRONTEND: "aep-frontend-tg"}
QUEUE, DEAD_LETTER_QUEUE = "aep-jobs", "aep-jobs-dlq"
CANARY_QUEUE = "aep-demo-stackprobe-canary"  # the sqs target's write canary's own queue
BUCKET = "aep-demo-rasters"
# The RDS instance behind the backend (PostgreSQL, gp2, burstable) and its read replica.
DATABASE, DATABASE_REPLICA = "aep-demo-db", "aep-demo-db-replica"
DATABASE_GIB = 100
# The Redis replication group (a primary and a replica) the demo's jobs would queue in.
CACHE = "aep-demo-cache"
CACHE_MEMBERS = (f"{CACHE}-001", f"{CACHE}-002")
# What the backend must run with (AEP Incident 5: budget enforcement off after a deploy).
EXPECTED_ENV = {"BUDGET_ENFORCEMENT_MODE": "strict"}
GIB = 1024**3
BUCKET_BYTES = 42 * GIB  # yesterday's BucketSizeBytes; the day before held 40 GiB
TICK = 10.0  # seconds between the traffic's CloudWatch datapoints (at most)
KEPT_SECONDS = 3600.0  # how long datapoints and stopped tasks are kept
# The services' log groups, named as the awslogs driver's are in AEP's task definitions
# (`/ecs/aep-backend-staging`); each task writes to its own stream, `ecs/<service>/<task id>`.
LOG_GROUPS = {BACKEND: "/ecs/aep-backend-demo", WORKER: "/ecs/aep-worker-demo"}
# Log lines older than the logs kind ever reads (its `max_catch_up`, 15m) are forgotten.
LOGS_KEPT_SECONDS = 1200.0
# Error lines a service writes per tick while their fault is on: every threshold of
# alert_rules/logs.rules.yml is met within one tick, as a failing app's lines would.
ERROR_LINES = (10, 16)


# What the services log while a fault is on: (service, line), the lines as the runbooks quote
# them (AEP "Common Log Errors", VivaCampo's greps). Each matches one signal of probes/logs.py.
APP_ERRORS: dict[str, tuple[str, str]] = {
    "transport_closed": (
        BACKEND,
        "ERROR app.api GET /api/v1/projects/7/runs failed: RuntimeError: transport closed",
    ),
    "queuepool": (
        BACKEND,
        "ERROR app.api GET /api/v1/projects failed: sqlalchemy.exc.TimeoutError: QueuePool "
        "limit of size 5 overflow 0 reached, connection timed out, timeout 30.00",
    ),
    "code_error": (
        BACKEND,
        "ERROR app.api POST /api/v1/chat failed: KeyError: 'budget_mode'",
    ),
    "rate_limited": (
        BACKEND,
        "WARNING app.llm openai.RateLimitError: Error code: 429 - Rate limit reached for "
        "requests; retrying in 2s",
    ),
    # a job opens its own connection (no pool), so the worker is the first to be refused
    "too_many_clients": (
        WORKER,
        "ERROR worker.db connection failed: FATAL:  sorry, too many clients already",
    ),
    "s3_upload_failed": (
        WORKER,
        "ERROR worker.rasters S3 upload failed for rasters/2026/tile-042.tif: An error "
        "occurred (AccessDenied) when calling the PutObject operation: Access Denied",
    ),
}

BROKEN_HEALTH_CHECK_PATH = "/health"
OOM_REASON = "Essential container in task exited"
SCALE_IN_REASON = "Scaling activity initiated by (deployment ecs-svc/1)"
PULL_REASON = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"


class World:
    """moto's server with the stack in it. Blocking (boto3): the demo calls it from a thread."""

    def __init__(self, task_address: str) -> None:
        self.task_address = task_address  # where the backend's tasks answer health checks
        # port 0: the kernel picks a free one as moto binds, so no other process can take it
        # between a choice and the bind (a failed bind would leave moto's start() waiting)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self._started = False
        self.lock = threading.Lock()  # one change to the stack at a time
        self.jobs_stuck = False
        self.crash_looping = False
        self.cannot_start = False  # the backend's image cannot be pulled
        self.bucket_grown = False
        self.disk_full = False  # the RDS instance's storage is used up
        self.error_ratio = 0.0  # share of requests the targets answer with 5xx
        self._stopped_at: dict[str, float] = {}  # task ARN -> when the demo saw it stopped
        # (fault, APP_ERRORS key) -> when its lines begin
        self._app_errors: dict[tuple[str, str], float] = {}
        self._streams: set[tuple[str, str]] = set()  # (log group, stream) created
        self._oldest_job: float | None = None

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )

    def start(self) -> None:
        # moto's server (werkzeug) logs every request at info, setting its logger's level
        # itself unless one is set: only its warnings, or the demo's own lines drown
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._patches = ExitStack()
        self._patches.enter_context(behave_like_aws())
        self.server.start()
        self._started = True
        self.endpoint = f"http://127.0.0.1:{self.server.get_host_and_port()[1]}"
        self.ecs = EcsStack(self.client, CLUSTER, REGION)
        self.elb = self.client("elbv2")
        self.sqs = self.client("sqs")
        self.s3 = self.client("s3")
        self.cloudwatch = self.client("cloudwatch")
        self.logs = self.client("logs")
        self.rds = self.client("rds")
        self.elasticache = self.client("elasticache")
        self._seed_alb()
        self._seed_ecs()
        self._seed_sqs()
        self._seed_s3()
        self._seed_rds()
        self._seed_elasticache()
        for group in LOG_GROUPS.values():
            self.logs.create_log_group(logGroupName=group)

    def stop(self) -> None:
        if self._started:
            self.server.stop()
            self._patches.close()
            self._started = False

    # -- the stack ---------------------------------------------------------------------------

    def _seed_ecs(self) -> None:
        for name, desired in SERVICES.items():
            self._create_service(name, desired)

    def _create_service(self, name: str, desired: int) -> None:
        definition = self.ecs.task_definition(name, {**EXPECTED_ENV, "ENVIRONMENT": "demo"})
        group = self.target_groups.get(name, "")
        self.ecs.service(name, desired=desired, task_definition=definition, target_group=group)
        self._start_tasks(name, desired)

    def _start_tasks(self, service: str, count: int) -> None:
        for arn in self.ecs.run_tasks(service, count):
            if service == BACKEND:  # so stackprobe's per-task checks reach the demo app
                self.ecs.set_address(arn, self.task_address)

    def _seed_alb(self) -> None:
        ec2 = self.client("ec2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
        vpc_id = vpc["Vpcs"][0]["VpcId"]
        subnets = [
            ec2.create_subnet(
                VpcId=vpc_id, CidrBlock=f"172.31.{200 + i}.0/24", AvailabilityZone=f"{REGION}{z}"
            )["Subnet"]["SubnetId"]
            for i, z in enumerate("ab")
        ]
        lb = self.elb.create_load_balancer(
            Name=LOAD_BALANCER, Subnets=subnets, SecurityGroups=[self.ecs.balancer_group]
        )["LoadBalancers"][0]
        self.load_balancer_arn = lb["LoadBalancerArn"]
        # CloudWatch's LoadBalancer dimension: app/<name>/<id>
        self.load_balancer_dimension = self.load_balancer_arn.split(":loadbalancer/")[1]
        self.elb.modify_load_balancer_attributes(
            LoadBalancerArn=self.load_balancer_arn,
            Attributes=[
                {"Key": "access_logs.s3.enabled", "Value": "true"},
                {"Key": "access_logs.s3.bucket", "Value": BUCKET},
            ],
        )
        self.target_groups: dict[str, str] = {}
        for port, (service, name) in enumerate(TARGET_GROUPS.items(), start=8000):
            arn = self.elb.create_target_group(
                Name=name,
                Protocol="HTTP",
                Port=port,
                VpcId=vpc_id,
                TargetType="ip",
                HealthCheckPath="/health/live",
            )["TargetGroups"][0]["TargetGroupArn"]
            self.target_groups[service] = arn
            self.elb.create_listener(
                LoadBalancerArn=self.load_balancer_arn,
                Protocol="HTTP",
                Port=port,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}],
            )
            self._register(service)

    def _target_ids(self, service: str) -> list[str]:
        base = 10 if service == BACKEND else 20
        return [f"172.31.200.{base + i}" for i in range(SERVICES[service])]

    def _register(self, service: str) -> None:
        self.elb.register_targets(
            TargetGroupArn=self.target_groups[service],
            Targets=[{"Id": ip} for ip in self._target_ids(service)],
        )

    def _seed_sqs(self) -> None:
        dlq = self.sqs.create_queue(QueueName=DEAD_LETTER_QUEUE)["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
        policy = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
        self.queue_url = self.sqs.create_queue(
            QueueName=QUEUE, Attributes={"RedrivePolicy": json.dumps(policy)}
        )["QueueUrl"]
        self.sqs.create_queue(QueueName=CANARY_QUEUE)

    def _seed_s3(self) -> None:
        self.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        for i in range(12):
            self.s3.put_object(Bucket=BUCKET, Key=f"rasters/2026/tile-{i:03}.tif", Body=b"x" * 4096)
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=BUCKET,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "expire-old-rasters",
                        "Status": "Enabled",
                        "Filter": {"Prefix": "rasters/"},
                        "Expiration": {"Days": 90},
                    }
                ]
            },
        )
        self._storage_day = 0.0
        self._daily_storage()

    def _seed_rds(self) -> None:
        self.rds.create_db_instance(
            DBInstanceIdentifier=DATABASE,
            DBInstanceClass="db.t3.medium",
            Engine="postgres",
            AllocatedStorage=DATABASE_GIB,
            StorageType="gp2",
            MasterUsername="aep",
            MasterUserPassword="moto-demo-only",
        )
        self.rds.create_db_instance_read_replica(
            DBInstanceIdentifier=DATABASE_REPLICA, SourceDBInstanceIdentifier=DATABASE
        )

    def _seed_elasticache(self) -> None:
        create_cache_group(self.elasticache, CACHE, CACHE_MEMBERS)

    def _daily_storage(self) -> None:
        """S3's daily storage figures for the two days before today, once a day: after
        midnight UTC, yesterday is a new day with its own datapoint."""
        today = math.floor(time.time() / 86400) * 86400
        if today == self._storage_day:
            return
        self._storage_day = today
        for days_ago, size in ((2, 40 * GIB), (1, self._bucket_bytes())):
            at = datetime.fromtimestamp(today - 86400 * days_ago, UTC)
            self._put(
                "AWS/S3",
                [
                    ("BucketSizeBytes", {"StorageType": "StandardStorage"}, size),
                    ("NumberOfObjects", {"StorageType": "AllStorageTypes"}, size / (3 * 2**20)),
                ],
                {"BucketName": BUCKET},
                at,
            )

    def _bucket_bytes(self) -> float:
        return BUCKET_BYTES * 1.5 if self.bucket_grown else BUCKET_BYTES

    def _put(
        self,
        namespace: str,
        metrics: list[tuple[str, dict[str, str], float]],
        dimensions: dict[str, str],
        at: datetime,
    ) -> None:
        self.cloudwatch.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [
                        {"Name": k, "Value": v} for k, v in {**dimensions, **extra}.items()
                    ],
                    "Timestamp": at,
                    "Value": value,
                }
                for name, extra, value in metrics
            ],
        )

    # -- traffic -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Ten seconds of a working day: requests on the ALB, jobs in and (unless the workers
        are stuck) out of the queue, CPU and memory on each service, all as CloudWatch has it."""
        with self.lock:
            now = datetime.now(UTC)
            self._traffic(now)
            self._jobs(now)
            self._databases(now)
            self._caches(now)
            if self.crash_looping:
                self._crash()
            if self.cannot_start:
                self._fail_to_start()
            self._daily_storage()
            self._logs(now)
            self._forget(now.timestamp() - KEPT_SECONDS)

    def _forget(self, before: float) -> None:
        """What AWS would no longer show: datapoints older than the probes ever read (S3's
        daily ones aside) and stopped tasks past ECS's hour; a demo left running for days
        stays small."""
        from moto.cloudwatch.models import cloudwatch_backends

        from stackprobe.demo.moto_stack import ecs_backend

        backend = cloudwatch_backends[ACCOUNT][REGION]
        backend.metric_data = [
            d
            for d in backend.metric_data
            if d.namespace == "AWS/S3" or _timestamp(d.timestamp) >= before
        ]
        tasks = ecs_backend(REGION).tasks.get(CLUSTER, {})
        stopped = self._stopped_at
        for arn, task in list(tasks.items()):
            if task.last_status == "STOPPED" and stopped.setdefault(arn, time.time()) < before:
                del tasks[arn]
                del stopped[arn]
        self._forget_logs()

    def _forget_logs(self) -> None:
        from moto.logs.models import logs_backends

        oldest = (time.time() - LOGS_KEPT_SECONDS) * 1000
        groups = logs_backends[ACCOUNT][REGION].groups
        for name in LOG_GROUPS.values():
            streams = groups[name].streams
            for stream_name, stream in list(streams.items()):
                stream.events = [e for e in stream.events if e.timestamp >= oldest]
                if not stream.events:  # a stopped task's, long ago: a crash loop's are many
                    del streams[stream_name]
                    self._streams.discard((name, stream_name))

    # -- the services' logs ------------------------------------------------------------------

    def app_errors(self, fault: str, error: str, on: bool, after: float = 0.0) -> None:
        """Start (`after` seconds from now) or stop `fault`'s lines of APP_ERRORS[error]."""
        if error not in APP_ERRORS:
            raise KeyError(f"no app error {error!r}; the errors are: {', '.join(APP_ERRORS)}")
        # no lock: called on the demo's event loop, which a tick holding it would stall; the
        # tick reads a copy
        if on:
            self._app_errors[fault, error] = time.time() + after
        else:
            self._app_errors.pop((fault, error), None)

    def _logs(self, now: datetime) -> None:
        """What each running task logged this tick: a line of the requests or jobs it
        served, and the error lines of the faults that are on. A service with no running
        task writes nothing, as on ECS."""
        at = int(now.timestamp() * 1000)
        for service, group in LOG_GROUPS.items():
            tasks = [arn.rsplit("/", 1)[-1] for arn in self.ecs.running_tasks(service)]
            if not tasks:
                continue
            lines: dict[str, list[str]] = {
                task: [f"INFO app served {random.randint(100, 180)} requests"] for task in tasks
            }
            for (_, error), since in list(self._app_errors.items()):
                where, line = APP_ERRORS[error]
                if where == service and since <= now.timestamp():
                    for _ in range(random.randint(*ERROR_LINES)):
                        lines[random.choice(tasks)].append(line)
            for task, messages in lines.items():
                stream = f"ecs/{service}/{task}"
                if (group, stream) not in self._streams:
                    self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
                    self._streams.add((group, stream))
                self.logs.put_log_events(
                    logGroupName=group,
                    logStreamName=stream,
                    logEvents=[{"timestamp": at, "message": m} for m in messages],
                )

    def _traffic(self, now: datetime) -> None:
        requests = random.randint(250, 350)
        lb = {"LoadBalancer": self.load_balancer_dimension}
        if self._backend_serves():
            failed = round(requests * self.error_ratio) or random.choice((0, 0, 1))
            refused = 0
        else:  # the balancer answers every request with a 5xx of its own; no target answers
            failed, refused = 0, requests
        self._put(
            "AWS/ApplicationELB",
            [
                ("RequestCount", {}, requests),
                ("HTTPCode_Target_5XX_Count", {}, failed),
                ("HTTPCode_ELB_5XX_Count", {}, refused),
            ],
            lb,
            now,
        )
        if not refused:
            self._response_times(lb, now)
        for service in SERVICES:
            dims = {"ClusterName": CLUSTER, "ServiceName": service}
            self._put(
                "AWS/ECS",
                [
                    ("CPUUtilization", {}, random.uniform(20, 45)),
                    ("MemoryUtilization", {}, random.uniform(45, 65)),
                ],
                dims,
                now,
            )
            # Container Insights (enhanced) per running task, under the dimension set the
            # ecs_service target finds with ListMetrics
            for arn in self.ecs.running_tasks(service):
                self._put(
                    "ECS/ContainerInsights",
                    [
                        ("TaskCpuUtilization", {}, random.uniform(20, 45)),
                        ("TaskMemoryUtilization", {}, random.uniform(45, 65)),
                    ],
                    {**dims, "TaskId": arn.rsplit("/", 1)[-1]},
                    now,
                )

    def _databases(self, now: datetime) -> None:
        """The RDS instance and its replica as CloudWatch has them: a quiet database with
        half its disk free, or (rds-disk-full) a full one."""
        for name in (DATABASE, DATABASE_REPLICA):
            free = 0.012 if self.disk_full and name == DATABASE else random.uniform(0.55, 0.56)
            figures: list[tuple[str, dict[str, str], float]] = [
                ("FreeStorageSpace", {}, free * DATABASE_GIB * GIB),
                ("CPUUtilization", {}, random.uniform(12, 30)),
                ("CPUCreditBalance", {}, random.uniform(500, 576)),
                ("BurstBalance", {}, 100.0),
                ("FreeableMemory", {}, random.uniform(1.1, 1.3) * GIB),
                ("ReadLatency", {}, random.uniform(0.0006, 0.0012)),
                ("WriteLatency", {}, random.uniform(0.0010, 0.0020)),
                ("DiskQueueDepth", {}, random.uniform(0.0, 0.3)),
                ("DatabaseConnections", {}, float(random.randint(14, 22))),
            ]
            if name == DATABASE_REPLICA:
                figures.append(("ReplicaLag", {}, random.uniform(0.5, 2.0)))
            self._put("AWS/RDS", figures, {"DBInstanceIdentifier": name}, now)

    def _caches(self, now: datetime) -> None:
        """The cache's two nodes as CloudWatch has them: a quiet primary and its replica."""
        for member in CACHE_MEMBERS:
            figures: list[tuple[str, dict[str, str], float]] = [
                ("EngineCPUUtilization", {}, random.uniform(3, 9)),
                ("DatabaseMemoryUsagePercentage", {}, random.uniform(18, 20)),
                ("SwapUsage", {}, 0.0),
                ("CurrConnections", {}, float(random.randint(20, 30))),
                ("Evictions", {}, 0.0),
            ]
            if member != CACHE_MEMBERS[0]:
                figures.append(("ReplicationLag", {}, random.uniform(0.0, 0.2)))
            dims = {"CacheClusterId": member, "CacheNodeId": "0001"}
            self._put("AWS/ElastiCache", figures, dims, now)

    def _backend_serves(self) -> bool:
        """Whether the balancer sends the site's requests to the backend's targets (every
        request of the demo's traffic is the backend's: the frontend's pages call its API).
        Not when it is not active (AEP Incident 6, "ALB offline"), nor when its target group
        has no healthy target: none registered (scaled to zero, every task failing to start)
        or only ones still registering. With every target unhealthy it fails open, as AWS
        does, and the targets answer (AEP Incident 2's path mismatch: the app is fine)."""
        balancer = self.elb.describe_load_balancers(LoadBalancerArns=[self.load_balancer_arn])
        if balancer["LoadBalancers"][0]["State"]["Code"] != "active":
            return False
        health = self.elb.describe_target_health(TargetGroupArn=self.target_groups[BACKEND])
        states = [t["TargetHealth"]["State"] for t in health["TargetHealthDescriptions"]]
        return "healthy" in states or (bool(states) and set(states) == {"unhealthy"})

    def _response_times(self, lb: dict[str, str], now: datetime) -> None:
        self.cloudwatch.put_metric_data(
            Namespace="AWS/ApplicationELB",
            MetricData=[
                {
                    "MetricName": "TargetResponseTime",
                    "Dimensions": [{"Name": "LoadBalancer", "Value": lb["LoadBalancer"]}],
                    "Timestamp": now,
                    "Values": [0.04, 0.06, 0.08, 0.12, 0.2, 0.35],
                    "Counts": [40, 30, 15, 8, 5, 2],
                }
            ],
        )

    def _jobs(self, now: datetime) -> None:
        sent = random.randint(2, 4)
        self.sqs.send_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": str(i), "MessageBody": f'{{"job": {i}}}'} for i in range(sent)],
        )
        deleted = 0
        if not self.jobs_stuck:
            for _ in range(10):  # the workers catch up with a backlog within a tick
                answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
                messages = answer.get("Messages", [])
                if not messages:
                    break
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
                deleted += len(messages)
            self._oldest_job = None
        elif self._oldest_job is None:
            self._oldest_job = time.time()
        age = time.time() - self._oldest_job if self._oldest_job else TICK
        metrics: list[tuple[str, dict[str, str], float]] = [
            ("NumberOfMessagesSent", {}, float(sent)),
            ("NumberOfMessagesDeleted", {}, float(deleted)),  # 0 too, on an active queue
            ("ApproximateAgeOfOldestMessage", {}, age),
        ]
        self._put("AWS/SQS", metrics, {"QueueName": QUEUE}, now)

    # -- the AWS side of the faults ------------------------------------------------------------

    def scale_backend_to_zero(self) -> None:
        """The desired count first, as the API takes it; the tasks go in `drain_backend`."""
        with self.lock:
            self.ecs.ecs.update_service(cluster=CLUSTER, service=BACKEND, desiredCount=0)
            service = self.ecs.backend_service(BACKEND)
            service.desired_count = 0
            service.pending_count = 0

    def drain_backend(self) -> None:
        """ECS stops the tasks and takes them out of the target group."""
        with self.lock:
            for arn in self.ecs.running_tasks(BACKEND):
                self.ecs.stop(arn, SCALE_IN_REASON)
            self.elb.deregister_targets(
                TargetGroupArn=self.target_groups[BACKEND],
                Targets=[{"Id": ip} for ip in self._target_ids(BACKEND)],
            )
            self.ecs.set_counts(BACKEND, 0, desired=0)

    def restore_backend(self) -> None:
        with self.lock:
            desired = SERVICES[BACKEND]
            self.ecs.ecs.update_service(cluster=CLUSTER, service=BACKEND, desiredCount=desired)
            running = self.ecs.running_tasks(BACKEND)
            self._start_tasks(BACKEND, max(0, desired - len(running)))
            self._register(BACKEND)
            self.ecs.set_counts(BACKEND, desired, desired=desired)
            for ip in self._target_ids(BACKEND):  # until their first checks pass
                set_target_health(
                    self.target_groups[BACKEND], ip, "initial", "Elb.RegistrationInProgress"
                )

    def backend_targets_registered(self) -> None:
        with self.lock:
            for ip in self._target_ids(BACKEND):
                set_target_health(self.target_groups[BACKEND], ip, None)

    def backend_targets_unhealthy(self, unhealthy: bool) -> None:
        """The target group's health check moved to a path the app does not serve (a
        Terraform change: /health instead of /health/live): every check gets a 404, while
        the app itself, asked at its own path, is fine."""
        with self.lock:
            self.elb.modify_target_group(
                TargetGroupArn=self.target_groups[BACKEND],
                HealthCheckPath=BROKEN_HEALTH_CHECK_PATH if unhealthy else "/health/live",
            )
            for ip in self._target_ids(BACKEND):
                state = "unhealthy" if unhealthy else None
                set_target_health(
                    self.target_groups[BACKEND], ip, state, "Target.ResponseCodeMismatch"
                )

    def crash_loop(self, on: bool) -> None:
        """A backend task runs out of memory; while on, each replacement does too."""
        with self.lock:
            self.crash_looping = on
            if on:
                self._crash()
            else:
                desired = self.ecs.backend_service(BACKEND).desired_count
                running = self.ecs.running_tasks(BACKEND)
                self._start_tasks(BACKEND, max(0, desired - len(running)))
                self.ecs.set_counts(BACKEND, desired)

    def _crash(self) -> None:
        desired = self.ecs.backend_service(BACKEND).desired_count
        if desired == 0:  # scaled to zero: nothing runs that could crash
            return
        running = self.ecs.running_tasks(BACKEND)
        # at full strength a running task dies; below it, ECS's replacement dies the same way
        full = len(running) >= desired
        victim = running[0] if full else self.ecs.run_tasks(BACKEND)[0]
        self.ecs.stop(victim, OOM_REASON, "OutOfMemoryError: Container killed due to memory usage")
        self.ecs.set_counts(BACKEND, desired - 1)

    def deploy_backend(self, drifted: bool = False) -> None:
        """A deployment of the backend, without the expected environment when `drifted`."""
        with self.lock:
            env = {"ENVIRONMENT": "demo"} if drifted else {**EXPECTED_ENV, "ENVIRONMENT": "demo"}
            definition = self.ecs.task_definition(BACKEND, env)
            self.ecs.deploy(BACKEND, definition)
            self.ecs.complete_deployment(BACKEND)

    def backend_cannot_start(self, on: bool) -> None:
        """A deployment whose image cannot be pulled: ECS stops the old tasks as it rolls,
        every new task fails to start, and the circuit breaker marks the rollout FAILED.
        Off: a rollback that starts."""
        with self.lock:
            self.cannot_start = on
            desired = SERVICES[BACKEND]
            env = {**EXPECTED_ENV, "ENVIRONMENT": "demo"}
            self.ecs.deploy(BACKEND, self.ecs.task_definition(BACKEND, env))
            if on:
                for arn in self.ecs.running_tasks(BACKEND):
                    self.ecs.stop(arn, SCALE_IN_REASON)
                self.elb.deregister_targets(
                    TargetGroupArn=self.target_groups[BACKEND],
                    Targets=[{"Id": ip} for ip in self._target_ids(BACKEND)],
                )
                self.ecs.set_counts(BACKEND, 0, desired=desired)
                self._fail_to_start()
                service = self.ecs.backend_service(BACKEND)
                service.deployments[0].update(
                    rolloutState="FAILED",
                    rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.",
                )
                return
            self.ecs.complete_deployment(BACKEND)
            self._start_tasks(BACKEND, desired)
            self._register(BACKEND)
            self.ecs.set_counts(BACKEND, desired, desired=desired)

    def _fail_to_start(self) -> None:
        """ECS tries to start a backend task, and the task stops: its image cannot be
        pulled."""
        for arn in self.ecs.run_tasks(BACKEND, 2):
            self.ecs.stop(arn, "Task failed to start", PULL_REASON)
        self.ecs.set_counts(BACKEND, 0)

    def worker_rolled_back(self, on: bool) -> None:
        """A worker deployment whose tasks fail to start, which ECS's deployment circuit
        breaker rolls back to the revision it replaced. Off: the rollback completes."""
        with self.lock:
            if not on:
                self.ecs.complete_deployment(WORKER)
                return
            self.ecs.deploy(WORKER, self.ecs.task_definition(WORKER, {"ENVIRONMENT": "demo"}))
            self.ecs.roll_back(WORKER)

    def load_balancer_failed(self, failed: bool) -> None:
        """The load balancer leaves `active` (AEP Incident 6: "ALB offline")."""
        from moto.elbv2.models import elbv2_backends

        with self.lock:
            balancer = elbv2_backends[ACCOUNT][REGION].load_balancers[self.load_balancer_arn]
            balancer.state = "failed" if failed else "active"

    def access_logs(self, enabled: bool) -> None:
        with self.lock:
            self.elb.modify_load_balancer_attributes(
                LoadBalancerArn=self.load_balancer_arn,
                Attributes=[{"Key": "access_logs.s3.enabled", "Value": str(enabled).lower()}],
            )

    def worker_deleted(self, deleted: bool) -> None:
        """The worker service deleted by accident, and created again."""
        with self.lock:
            if deleted:
                self.ecs.ecs.update_service(cluster=CLUSTER, service=WORKER, desiredCount=0)
                for arn in self.ecs.running_tasks(WORKER):
                    self.ecs.stop(arn, SCALE_IN_REASON)
                self.ecs.ecs.delete_service(cluster=CLUSTER, service=WORKER, force=True)
            else:
                self._create_service(WORKER, SERVICES[WORKER])

    def bucket_grew(self, grew: bool) -> None:
        """Yesterday's BucketSizeBytes as S3 reports it: +50 % when something stopped
        cleaning up (VivaCampo Scenario 2)."""
        from moto.cloudwatch.models import MetricDatum, cloudwatch_backends

        self.bucket_grown = grew
        size = self._bucket_bytes()
        yesterday = datetime.fromtimestamp(math.floor(time.time() / 86400 - 1) * 86400, UTC)
        with self.lock:
            for datum in cloudwatch_backends[ACCOUNT][REGION].metric_data:
                if (
                    isinstance(datum, MetricDatum)
                    and datum.namespace == "AWS/S3"
                    and datum.name == "BucketSizeBytes"
                    and _timestamp(datum.timestamp) >= yesterday.timestamp()
                ):
                    datum.value = size

    def storage_full(self, full: bool) -> None:
        """The RDS instance's disk used up: RDS sets its status to storage-full, and
        CloudWatch's FreeStorageSpace falls to about 1 % from the next tick."""
        from moto.rds.models import rds_backends

        with self.lock:
            self.disk_full = full
            instance = rds_backends[ACCOUNT][REGION].databases[DATABASE]
            instance.status = "storage-full" if full else "available"


def _timestamp(stamp: Any) -> float:
    if stamp is None:
        return 0.0
    if stamp.tzinfo is None:  # moto keeps naive UTC
        stamp = stamp.replace(tzinfo=UTC)
    return float(stamp.timestamp())
