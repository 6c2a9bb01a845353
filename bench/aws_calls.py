"""AWS API calls per cycle for a fixed inventory, against the batched minimum, and what the
CloudWatch part costs.

Inventory (issue floors): 3 clusters x 10 services, 20 target groups on 2 ALBs, 10 queues with
10 dead-letter queues, 5 buckets, 3 log groups, 2 RDS instances (a burstable PostgreSQL on gp2
and its read replica), 2 ElastiCache replication groups of 2 nodes each, all in moto
(in-process, made faithful by tests/support/aws.py: AWS's page and batch limits,
percentiles, FilterLogEvents). Every AWS kind probes all of it: three ecs_service targets,
one alb, one sqs, one s3 (cloudwatch mode), one cloudwatch target with the ALBs, the 30
services and the 10 queues, one logs target counting the 7 built-in signals in the log groups
a prefix names, one rds target over every instance in the region, and one elasticache target
over every cache cluster. The ecs_service targets read each running task's CPU and memory
(`task_resources`, Container Insights) and check their security-group paths (ALB -> tasks,
tasks -> PostgreSQL and Redis).

Cycle 1 is cold (queue URLs and task definitions are fetched once, stopped tasks described
once); cycle 2 is the steady state every later cycle repeats. Cycle 3 has every AWS request
throttled, cycle 4 must recover. Printed: calls per cycle by operation next to the minimum the
script computes from the inventory, calls repeated within a cycle, GetMetricData metrics per
cycle and their monthly cost at AWS's list price, wall time per cycle, and attempts per call
in the throttled cycle.

No anchor runs beside it: YACE and cloudwatch_exporter are not packaged by Debian, and YACE
cannot be built here (proxy.golang.org is unreachable; Debian's Go is 1.19), so the figures
stand against the computed minimum.

    .venv/bin/python bench/aws_calls.py
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from stackprobe.config import parse_config  # noqa: E402
from stackprobe.probes import KINDS  # noqa: E402
from stackprobe.probes._aws_api import AwsClients, AwsMetrics, AwsSettings  # noqa: E402
from stackprobe.probes.logs import SIGNALS as LOG_SIGNALS  # noqa: E402
from tests.support.aws import REGION, Inventory, api_calls, faithful_aws, inject  # noqa: E402
from tests.support.probing import ProbeRunner  # noqa: E402

CLUSTERS, SERVICES, TARGET_GROUPS, QUEUES, BUCKETS = 3, 10, 20, 10, 5
LOG_GROUPS = 3
DATABASES = 2
CACHES = 2  # replication groups, each of a primary and a replica cluster of one node
STOPPED_PER_CLUSTER = 1  # Inventory stops one task per cluster
RUNNING_PER_CLUSTER = 1  # ...and leaves one running, with its Container Insights metrics
PRICE_PER_1000_METRICS = 0.01  # GetMetricData, USD, AWS's list price (us-east-1)
SECONDS_PER_MONTH = 30 * 86400


def minimum(
    cold: bool, queries: int, daily_queries: int, rds_queries: int, cache_queries: int
) -> Counter[str]:
    """The fewest calls that read this inventory, given each API's batch and page limits."""
    need: Counter[str] = Counter()
    for _ in range(CLUSTERS):
        need["ListServices"] += math.ceil(SERVICES / 100)
        need["DescribeServices"] += math.ceil(SERVICES / 10)
        need["ListTasks"] += max(1, math.ceil(STOPPED_PER_CLUSTER / 100))
        if cold:
            need["DescribeTasks"] += math.ceil(STOPPED_PER_CLUSTER / 100)
            need["DescribeTaskDefinition"] += 1  # one task definition per cluster
        # task_resources: the cluster's Container Insights setting, its running tasks (100
        # a page, 100 described a call), its task metrics listed (500 a page), then each
        # running task's two metrics in the target's own call
        need["DescribeClusters"] += 1
        need["ListTasks"] += math.ceil(RUNNING_PER_CLUSTER / 100)
        need["DescribeTasks"] += math.ceil(RUNNING_PER_CLUSTER / 100)
        need["ListMetrics"] += math.ceil(RUNNING_PER_CLUSTER / 500)
        need["GetMetricData"] += math.ceil(2 * RUNNING_PER_CLUSTER / 500)
        # security_groups and reaches: the groups and subnets of every path, one listing
        # each (200 ids a filter, 1,000 a page)
        need["DescribeSecurityGroups"] += 1
        need["DescribeSubnets"] += 1
    # ALB -> tasks: the account's target groups and balancers (400 a page), for the one
    # cluster with a service behind a target group
    need["DescribeTargetGroups"] += math.ceil(TARGET_GROUPS / 400)
    need["DescribeLoadBalancers"] += math.ceil(math.ceil(TARGET_GROUPS / 10) / 400)
    balancers = math.ceil(TARGET_GROUPS / 10)
    need["DescribeLoadBalancers"] += math.ceil(balancers / 400)
    need["DescribeTargetGroups"] += math.ceil(TARGET_GROUPS / 400)
    need["DescribeTargetHealth"] += TARGET_GROUPS  # no batch form
    need["DescribeLoadBalancerAttributes"] += balancers  # no batch form
    need["GetQueueAttributes"] += 2 * QUEUES  # queues and their dead-letter queues
    if cold:
        need["GetQueueUrl"] += 2 * QUEUES
    need["GetBucketLifecycleConfiguration"] += BUCKETS
    need["GetMetricData"] += math.ceil(queries / 500) + math.ceil(daily_queries / 500)
    # the rds target: its instances (100 a page), then their metrics in its own call
    need["DescribeDBInstances"] += math.ceil(DATABASES / 100)
    need["GetMetricData"] += math.ceil(rds_queries / 500)
    # the elasticache target: its clusters with their nodes (100 a page), then their metrics
    need["DescribeCacheClusters"] += math.ceil(2 * CACHES / 100)
    need["GetMetricData"] += math.ceil(cache_queries / 500)
    # FilterLogEvents reads one log group a call: one per (pattern, group) while a window's
    # matches fit one page (10,000 events); the prefix is resolved once a run
    need["DescribeLogGroups"] += 1
    need["FilterLogEvents"] += len(LOG_SIGNALS) * LOG_GROUPS
    return need


class Recorder:
    """Every API call a cycle makes (botocore's before-parameter-build event: once per call,
    not per retry), with its parameters, to find a call made twice for the same data."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model: Any, params: Any, **_: Any) -> None:
        self.calls.append((model.name, json.dumps(params, default=str, sort_keys=True)))


@contextmanager
def credentials() -> Iterator[None]:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    yield


async def cycle(runners: list[ProbeRunner]) -> tuple[float, list[Any]]:
    """One run of every target at once, as the scheduler would when their slots coincide."""
    started = time.perf_counter()
    results = await asyncio.gather(*(r.run() for r in runners))
    return time.perf_counter() - started, results


async def main() -> None:
    with credentials(), faithful_aws():
        print(
            f"seeding moto: {CLUSTERS} clusters x {SERVICES} services, {TARGET_GROUPS} "
            f"target groups, {QUEUES} queues + DLQs, {BUCKETS} buckets, {LOG_GROUPS} log "
            f"groups, {DATABASES} RDS instances, {CACHES} cache replication groups ...",
            flush=True,
        )
        inventory = Inventory(
            CLUSTERS, SERVICES, TARGET_GROUPS, QUEUES, BUCKETS, LOG_GROUPS, DATABASES, CACHES
        )
        raw = [
            t
            for t in inventory.targets(percentiles=True, security_groups=True)
            if t["name"] not in ("tasks", "buckets-listed")
        ]
        for target in raw:
            if "task_resources" in target:
                # the cycles run back to back: a 1 s period reads every cycle, as a target
                # probed once a period does (a faster one repeats its last read between)
                target["task_resources"] = {"period": "1s", "delay": "0s"}
        config = parse_config(json.dumps({"targets": raw}), "<bench>", KINDS, {})
        metrics = AwsMetrics(CollectorRegistry())
        clients = AwsClients(AwsSettings(region=REGION), metrics)
        recorder = Recorder()
        # every target shares one region and role, so one client per service serves them all
        for service in (
            "ecs",
            "elbv2",
            "sqs",
            "s3",
            "cloudwatch",
            "logs",
            "rds",
            "elasticache",
            "ec2",
        ):
            client = clients.client(config.targets[0], service)  # type: ignore[arg-type]
            client.meta.events.register("before-parameter-build", recorder)
        runners = [ProbeRunner(t, aws=clients) for t in config.targets]
        cloudwatch = next(t for t in config.targets if t.kind == "cloudwatch")
        from stackprobe.probes.cloudwatch import queries as cloudwatch_queries

        queries = len(cloudwatch_queries(cloudwatch))  # type: ignore[arg-type]
        daily = 2 * BUCKETS
        # a db.t3 on gp2: 7 metrics, FreeStorageSpace, BurstBalance, CPUCreditBalance; its
        # replica the same and ReplicaLag
        rds = 10 + 11
        # each node: engine CPU twice, memory, swap, connections, evictions; in a replication
        # group, ReplicationLag too
        caches = 2 * CACHES * 7
        # each running task: TaskCpuUtilization and TaskMemoryUtilization
        tasks = 2 * RUNNING_PER_CLUSTER * CLUSTERS

        rows = []
        before = Counter()
        for label, cold in (("cold", True), ("steady", False)):
            if not cold:
                await asyncio.sleep(1.1)  # a period later: the tasks are read again
            recorder.calls.clear()
            wall, results = await cycle(runners)
            failed = [f"{r.reason}" for r in results if not r.success]
            now = Counter()
            for (_, op, _), n in api_calls(metrics.registry).items():
                now[op] += n
            made = now - before
            before = now
            repeated = [c for c, n in Counter(recorder.calls).items() if n > 1]
            metrics_requested = sum(
                len(json.loads(params).get("MetricDataQueries", []))
                for op, params in recorder.calls
                if op == "GetMetricData"
            )
            rows.append(
                (
                    label,
                    made,
                    minimum(cold, queries, daily, rds, caches),
                    wall,
                    failed,
                    repeated,
                    metrics_requested,
                )
            )

        print()
        for label, made, need, wall, failed, repeated, requested in rows:
            print(
                f"cycle {label}: {sum(made.values())} calls, minimum {sum(need.values())}, "
                f"wall {wall * 1000:.0f} ms, failed targets {failed or 'none'}"
            )
            print(f"  {'operation':34} {'calls':>6} {'minimum':>8}")
            for op in sorted(set(made) | set(need)):
                flag = "" if made[op] == need[op] else "  <-- differs"
                print(f"  {op:34} {made[op]:6d} {need[op]:8d}{flag}")
            print(f"  calls repeated within the cycle for the same data: {len(repeated)}")
            print(f"  GetMetricData metrics requested: {requested}")
            logs_calls = made["FilterLogEvents"] + made["DescribeLogGroups"]
            print(
                f"  logs target: {logs_calls} calls ({made['FilterLogEvents']} FilterLogEvents "
                f"= {len(LOG_SIGNALS)} patterns x {LOG_GROUPS} log groups, "
                f"{made['DescribeLogGroups']} DescribeLogGroups for its prefix); at a 1m "
                f"interval {made['FilterLogEvents'] / 60:.2f} FilterLogEvents/s of the "
                "account's 5/s"
            )

        steady = rows[1]
        print()
        print("GetMetricData cost at $0.01 per 1,000 metrics requested:")
        # (what reads them, metrics a cycle, [(interval in seconds, how it is said)], a note)
        costs = (
            ("cloudwatch target", queries, ((60, "every 1m"), (300, "every 5m")), ""),
            ("s3 target", daily, ((60, "every 1m"), (3600, "every 1h")), ""),
            ("rds target", rds, ((60, "every 1m"), (300, "every 5m")), ""),
            ("elasticache target", caches, ((60, "every 1m"), (300, "every 5m")), ""),
            ("ecs task_resources", tasks, ((60, "every 1m"), (300, "every 5m")), "a task"),
        )
        for reader, metrics_per_cycle, intervals, per in costs:
            for interval, said in intervals:
                per_month = metrics_per_cycle * SECONDS_PER_MONTH / interval
                each = f" ({2 * SECONDS_PER_MONTH // interval} {per})" if per else ""
                print(
                    f"  {reader + ', ' + said:32} {metrics_per_cycle} metrics/cycle{each} -> "
                    f"${per_month / 1000 * PRICE_PER_1000_METRICS:,.2f}/month"
                )
        assert steady[6] == queries + daily + rds + caches + tasks, (
            "metrics requested differs from the queries"
        )

        # Throttled cycle: AWS throttles every attempt of every call.
        throttles = []
        for client in list(clients._clients.values()):
            code = (
                "Throttling"
                if client.meta.service_model.protocol == "query"
                else (
                    "SlowDown"
                    if client.meta.service_model.service_name == "s3"
                    else "ThrottlingException"
                )
            )
            status = 503 if code == "SlowDown" else 400
            throttles.append(inject(client, None, code, times=10**6, status=status))
        recorder.calls.clear()
        start = Counter()
        for (_, _, outcome), n in api_calls(metrics.registry).items():
            start[outcome] += n
        wall, results = await cycle(runners)
        end = Counter()
        for (_, _, outcome), n in api_calls(metrics.registry).items():
            end[outcome] += n
        attempts = sum((end - start).values())
        calls = len(recorder.calls)
        reasons = Counter(r.reason for r in results)
        print()
        print(
            f"cycle throttled: {calls} calls, {attempts} attempts "
            f"({attempts / max(calls, 1):.2f} per call, at most 2 = one retry), "
            f"wall {wall * 1000:.0f} ms, results {dict(reasons)}"
        )
        for throttle in throttles:  # AWS stops throttling; same clients, same states
            throttle.remaining = 0
        wall, results = await cycle(runners)
        print(
            f"cycle after: {sum(r.success for r in results)} of {len(results)} targets "
            f"succeed, wall {wall * 1000:.0f} ms"
        )
        for runner in runners:
            await runner.aclose()
        clients.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
