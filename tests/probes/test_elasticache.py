"""kind: elasticache: Redis and Valkey cache clusters found by DescribeCacheClusters in moto
(paged 100 at a time and refusing other page sizes, as AWS does, `faithful_aws`; with their
nodes, which moto leaves out and demo/moto_stack.py puts back), each node's CloudWatch
metrics from moto's GetMetricData, and the verdicts the rules' thresholds give."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from stackprobe.contract import Health
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from stackprobe.probes.cloudwatch import window
from stackprobe.probes.elasticache import MIB, Cluster, queries
from tests.support.aws import REGION, api_calls, by_operation, inject, put_metrics
from tests.support.probing import ProbeRunner, make_target, samples_by_name, value, verdict


@pytest.fixture
def elasticache(moto: None) -> Any:
    return boto3.client("elasticache", region_name=REGION)


@pytest.fixture
def cloudwatch(moto: None) -> Any:
    return boto3.client("cloudwatch", region_name=REGION)


def create(client: Any, name: str, group: str | None = None, engine: str = "redis") -> None:
    extra = {"ReplicationGroupId": group} if group else {}
    client.create_cache_cluster(
        CacheClusterId=name,
        Engine=engine,
        EngineVersion="7.1",
        CacheNodeType="cache.t4g.small",
        NumCacheNodes=1,
        **extra,
    )


def publish(cloudwatch: Any, cluster: str, metrics: dict[str, float], node: str = "0001") -> None:
    """Datapoints in the newest closed period the probe reads."""
    _, end = window(60, 120, time.time())
    dims = {"CacheClusterId": cluster, "CacheNodeId": node}
    put_metrics(cloudwatch, "AWS/ElastiCache", dims, metrics, end - 60)


def target(**extra: Any) -> Any:
    return make_target(
        {"name": "caches", "kind": "elasticache", "interval": "1m", "timeout": "20s", **extra}
    )


async def test_a_pinned_engine_thread_pages_with_each_nodes_figures(
    elasticache: Any, cloudwatch: Any, aws: AwsClients
) -> None:
    create(elasticache, "aep-cache-001", "aep-cache")
    create(elasticache, "aep-cache-002", "aep-cache")
    publish(
        cloudwatch,
        "aep-cache-001",
        {"EngineCPUUtilization": 97.0, "DatabaseMemoryUsagePercentage": 41.0, "Evictions": 0},
    )
    publish(cloudwatch, "aep-cache-002", {"EngineCPUUtilization": 12.0, "ReplicationLag": 0.4})

    result = await ProbeRunner.once(target(clusters=["aep-cache"]), aws=aws)

    assert result.success, result.detail
    assert (
        value(result, "aws_elasticache_engine_cpuutilization_average", "aep-cache-001", "0001")
        == 97.0
    )
    assert value(
        result, "aws_elasticache_database_memory_usage_percentage_average", "aep-cache-001", "0001"
    ) == (41.0)
    assert value(result, "aws_elasticache_replication_lag_average", "aep-cache-002", "0001") == 0.4
    assert value(result, "aws_elasticache_cluster_status", "aep-cache-001", "available") == 1
    assert samples_by_name(result)["aws_elasticache_info"] == {
        (name, "redis", "7.1", "cache.t4g.small", "aep-cache"): 1
        for name in ("aep-cache-001", "aep-cache-002")
    }
    assert value(result, "stackprobe_elasticache_evicts") == 0
    assert verdict(result) == (
        Health.FAILING,
        "aep-cache-001/0001: engine thread at 97 %: every command queues",
        "ElastiCacheEngineCpuSaturated",
    )


async def test_a_store_that_evicts_is_full_and_a_cache_that_evicts_is_fine(
    elasticache: Any, cloudwatch: Any, aws: AwsClients
) -> None:
    create(elasticache, "jobs")
    publish(cloudwatch, "jobs", {"DatabaseMemoryUsagePercentage": 62.0, "Evictions": 12.0})

    store = await ProbeRunner.once(target(clusters=["jobs"]), aws=aws)
    lru = await ProbeRunner.once(target(clusters=["jobs"], evicts=True), aws=aws)

    assert verdict(store) == (
        Health.FAILING,
        "jobs/0001: memory 62 % of maxmemory, 12 keys evicted in a minute",
        "ElastiCacheMemoryFull",
    )
    assert value(lru, "stackprobe_elasticache_evicts") == 1
    assert verdict(lru)[0] is Health.OK


async def test_swap_pages_even_a_cache_meant_to_evict(
    elasticache: Any, cloudwatch: Any, aws: AwsClients
) -> None:
    create(elasticache, "lru")
    publish(cloudwatch, "lru", {"DatabaseMemoryUsagePercentage": 100.0, "SwapUsage": 80 * MIB})

    result = await ProbeRunner.once(target(evicts=True), aws=aws)

    assert verdict(result) == (
        Health.DEGRADED,
        "lru/0001: memory 100 % of maxmemory, 80 MiB swapped",
        "ElastiCacheMemoryHigh",
    )


def test_each_node_is_asked_what_elasticache_publishes_for_it() -> None:
    def asked(group: str) -> list[str]:
        cluster = Cluster("c-001", "available", "redis", "7.1", "cache.m7g.large", group, ("0001",))
        return [q.metric for q in queries(cluster, 60)]

    alone = asked("")
    assert alone == [
        "EngineCPUUtilization",
        "EngineCPUUtilization",
        "DatabaseMemoryUsagePercentage",
        "SwapUsage",
        "CurrConnections",
        "Evictions",
    ]
    assert asked("c") == [*alone, "ReplicationLag"]  # only a group's replicas publish it


async def test_hundreds_of_clusters_are_paged_and_memcached_is_left_out(
    elasticache: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    for n in range(130):
        create(elasticache, f"c-{n:03d}")
    create(elasticache, "sessions", engine="memcached")

    result = await ProbeRunner.once(target(), aws=aws)

    assert result.success, result.detail
    clusters = {labels[0] for labels in samples_by_name(result)["aws_elasticache_info"]}
    assert len(clusters) == 130 and "sessions" not in clusters
    calls = by_operation(api_calls(aws_metrics.registry))
    # two pages of 100 (AWS's most), and 130 nodes x 6 queries in two calls of at most 500
    assert calls["DescribeCacheClusters"] == 2
    assert calls["GetMetricData"] == 2
    (line,) = [v for _, v in result.evidence if v.startswith("elasticache:")]
    assert line.startswith("elasticache:DescribeCacheClusters ok in") and line.endswith(", 2 pages")


def test_moto_refuses_a_page_size_aws_refuses(elasticache: Any) -> None:
    """What keeps the probe's PageSize honest: AWS takes 20 to 100."""
    with pytest.raises(ClientError, match="MaxRecords"):
        elasticache.describe_cache_clusters(MaxRecords=500)


async def test_a_group_member_or_a_missing_name(elasticache: Any, aws: AwsClients) -> None:
    create(elasticache, "aep-cache-001", "aep-cache")
    create(elasticache, "other")

    member = await ProbeRunner.once(target(clusters=["AEP-CACHE-001"]), aws=aws)
    missing = await ProbeRunner.once(target(clusters=["aep-cache", "gone"]), aws=aws)

    assert member.success, member.detail
    assert {k[0] for k in samples_by_name(member)["aws_elasticache_info"]} == {"aep-cache-001"}
    assert not missing.success and missing.reason == "not_found"
    assert missing.detail == (
        "no Redis or Valkey cache cluster or replication group gone in this region and account"
    )
    # what was found is still measured
    assert {k[0] for k in samples_by_name(missing)["aws_elasticache_info"]} == {"aep-cache-001"}


async def test_access_denied_names_the_action(elasticache: Any, aws: AwsClients) -> None:
    create(elasticache, "aep-cache-001")
    caches = target()
    inject(
        aws.client(caches, "elasticache"),
        "DescribeCacheClusters",
        "AccessDenied",
        status=403,
        times=3,
    )

    result = await ProbeRunner.once(caches, aws=aws)

    assert not result.success and result.reason == "access_denied"
    assert verdict(result)[2] == "StackprobeAwsAccessDenied"
    assert "grant the IAM action elasticache:DescribeCacheClusters" in result.detail
