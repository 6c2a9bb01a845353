"""ElastiCache for Redis and Valkey: each node's engine CPU, memory, swap, connections,
evictions and replication lag.

Redis runs its commands on one thread: a node whose engine thread is pinned queues every
command behind it, and the site's requests with them, while PING from elsewhere still
answers in the end. A node out of memory either refuses writes (noeviction) or drops keys
the application wrote (a Celery queue, sessions). The redis kind sees the server from inside
and cannot see the host; this kind reads what ElastiCache publishes about each node.

Per run: one DescribeCacheClusters (paginated, 100 a page, with node information) for the
clusters or replication groups the config names, or every Redis and Valkey cluster in the
region: nothing to tag, and a node added later is found by the next run. Memcached clusters
are left out: their metrics are others. Then one GetMetricData for every node's metrics (500
queries a call), read as the cloudwatch kind reads them, under YACE's names
(`aws_elasticache_<metric>_<statistic>`, `dimension_CacheClusterId`, `dimension_CacheNodeId`).
ReplicationLag is asked only of nodes in a replication group; only its replicas publish it.

A cache the application refills (an LRU cache) is meant to be full and to evict: with
`evicts: true` neither pages. Without it, the data is taken to be a store (queues, sessions),
where an eviction is data lost.

The verdict mirrors alert_rules/elasticache.rules.yml with its thresholds, from the newest
period.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from stackprobe.contract import (
    Area,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
)
from stackprobe.durations import Duration
from stackprobe.probes._aws import (
    AwsState,
    Finding,
    LowercaseIds,
    Reason,
    judged,
    measured,
    measured_result,
)
from stackprobe.probes._aws_api import AWS, AwsTarget
from stackprobe.probes.cloudwatch import DATAPOINT_TIME, CloudWatchPeriod, Query, read

PAGE_SIZE = 100  # DescribeCacheClusters' MaxRecords: 20 to 100
ENGINES = frozenset({"redis", "valkey"})
MIB = 1024**2

# The rules' thresholds (alert_rules/elasticache.rules.yml), so console and pager agree.
CPU_SATURATED = 95.0  # ElastiCacheEngineCpuSaturated: engine_cpuutilization_average >= 95
CPU_HIGH = 80.0  # ElastiCacheEngineCpuHigh: engine_cpuutilization_average > 80
MEMORY_FULL = 99.0  # ElastiCacheMemoryFull: database_memory_usage_percentage_average >= 99
MEMORY_HIGH = 90.0  # ElastiCacheMemoryHigh: database_memory_usage_percentage_average > 90
SWAP_HIGH = 50 * MIB  # ElastiCacheMemoryHigh: swap_usage_average > 50 MiB (AWS's own figure)
REPLICATION_LAG = 30.0  # ElastiCacheReplicationLagging: replication_lag_average > 30 (s)


class ElastiCacheTarget(AwsTarget):
    kind: Literal["elasticache"] = "elasticache"
    # Cache cluster ids (aep-cache-001) or replication group ids (aep-cache, every member);
    # none: every Redis and Valkey cluster in the region.
    clusters: LowercaseIds = Field(default=(), max_length=100)
    # The data is a cache the application refills: full memory and evictions are its normal
    # state, and page no one.
    evicts: bool = False
    # Period of each datapoint; ElastiCache publishes every 60 s.
    period: CloudWatchPeriod = 60.0
    # How long CloudWatch may take to close a period before it is read.
    delay: Duration = 120.0

    def describe(self) -> str:
        return "elasticache " + (", ".join(self.clusters) if self.clusters else "every cluster")


_CLUSTER = ("dimension_CacheClusterId",)
_NODE = ("dimension_CacheClusterId", "dimension_CacheNodeId")


def _cw(name: str, help_: str) -> MetricSpec:
    """A CloudWatch series of one node, under YACE's name for it."""
    return MetricSpec(name, help_, _NODE)


INFO = MetricSpec(
    "aws_elasticache_info",
    "1 per cache cluster, with its engine, engine version, node type and replication group.",
    (*_CLUSTER, "engine", "engine_version", "node_type", "replication_group"),
)
STATUS = MetricSpec(
    "aws_elasticache_cluster_status",
    "1 with the cluster's status (available, modifying, snapshotting, ...) as a label.",
    (*_CLUSTER, "status"),
)
EVICTS = MetricSpec(
    "stackprobe_elasticache_evicts",
    "The target's `evicts`: 1 if its data is a cache meant to evict, so memory alerts stay silent.",
)
ENGINE_CPU_AVG = _cw(
    "aws_elasticache_engine_cpuutilization_average",
    "ElastiCache EngineCPUUtilization: % of the Redis engine thread, Average.",
)
ENGINE_CPU_MAX = _cw(
    "aws_elasticache_engine_cpuutilization_maximum",
    "ElastiCache EngineCPUUtilization, Maximum.",
)
MEMORY = _cw(
    "aws_elasticache_database_memory_usage_percentage_average",
    "ElastiCache DatabaseMemoryUsagePercentage: used memory over maxmemory, %, Average.",
)
SWAP = _cw("aws_elasticache_swap_usage_average", "ElastiCache SwapUsage in bytes, Average.")
CONNECTIONS = _cw(
    "aws_elasticache_curr_connections_maximum",
    "ElastiCache CurrConnections, Maximum over the period.",
)
EVICTIONS = _cw("aws_elasticache_evictions_sum", "ElastiCache Evictions in the period, Sum.")
REPLICATION_LAG_SECONDS = _cw(
    "aws_elasticache_replication_lag_average",
    "ElastiCache ReplicationLag of a replica node in seconds, Average.",
)

METRICS = (
    INFO,
    STATUS,
    EVICTS,
    ENGINE_CPU_AVG,
    ENGINE_CPU_MAX,
    MEMORY,
    SWAP,
    CONNECTIONS,
    EVICTIONS,
    REPLICATION_LAG_SECONDS,
    DATAPOINT_TIME,
)


@dataclass(frozen=True, slots=True)
class Cluster:
    """What a run keeps of one DescribeCacheClusters entry."""

    identifier: str
    status: str
    engine: str
    engine_version: str
    node_type: str
    replication_group: str
    nodes: tuple[str, ...]


def _cluster(found: dict[str, Any]) -> Cluster:
    return Cluster(
        identifier=str(found["CacheClusterId"]),
        status=str(found.get("CacheClusterStatus", "")),
        engine=str(found.get("Engine", "")),
        engine_version=str(found.get("EngineVersion") or ""),
        node_type=str(found.get("CacheNodeType", "")),
        replication_group=str(found.get("ReplicationGroupId") or ""),
        nodes=tuple(str(n["CacheNodeId"]) for n in found.get("CacheNodes") or ()),
    )


def queries(cluster: Cluster, period: float) -> list[Query]:
    """The metrics ElastiCache publishes for each node of this cluster."""
    wanted = [
        (ENGINE_CPU_AVG, "EngineCPUUtilization", "Average"),
        (ENGINE_CPU_MAX, "EngineCPUUtilization", "Maximum"),
        (MEMORY, "DatabaseMemoryUsagePercentage", "Average"),
        (SWAP, "SwapUsage", "Average"),
        (CONNECTIONS, "CurrConnections", "Maximum"),
        (EVICTIONS, "Evictions", "Sum"),
    ]
    if cluster.replication_group:
        wanted.append((REPLICATION_LAG_SECONDS, "ReplicationLag", "Average"))
    return [
        Query(
            spec,
            (cluster.identifier, node),
            "AWS/ElastiCache",
            metric,
            (("CacheClusterId", cluster.identifier), ("CacheNodeId", node)),
            stat,
            period,
        )
        for node in cluster.nodes
        for spec, metric, stat in wanted
    ]


async def probe(target: ElastiCacheTarget, ctx: ProbeContext) -> ProbeResult:
    return await measured(ctx, lambda: _measure(target, ctx))


def _named(target: ElastiCacheTarget, cluster: Cluster) -> bool:
    return not target.clusters or bool(
        {cluster.identifier, cluster.replication_group} & set(target.clusters)
    )


async def _describe(target: ElastiCacheTarget, ctx: ProbeContext) -> list[Cluster]:
    """Every cluster in one paginated call, filtered here: DescribeCacheClusters takes one
    id at most, so a call per name would cost more for any config naming two."""
    pages = await ctx.use(AWS).pages(
        target,
        "elasticache",
        "describe_cache_clusters",
        ctx.deadline,
        keep=lambda page: [_cluster(c) for c in page.get("CacheClusters", ())],
        ShowCacheNodeInfo=True,
        PaginationConfig={"PageSize": PAGE_SIZE},
    )
    return [
        cluster
        for page in pages
        for cluster in page
        if cluster.engine in ENGINES and _named(target, cluster)
    ]


def _missing(target: ElastiCacheTarget, clusters: Sequence[Cluster]) -> str:
    """The names the config gives that no Redis or Valkey cluster answers to, said as the
    run's failure; "" when none is."""
    found = {c.identifier for c in clusters} | {c.replication_group for c in clusters}
    gone = [name for name in target.clusters if name not in found]
    if not gone:
        return ""
    return (
        f"no Redis or Valkey cache cluster or replication group {', '.join(gone)} in this "
        "region and account"
    )


async def _measure(target: ElastiCacheTarget, ctx: ProbeContext) -> ProbeResult:
    clusters = await _describe(target, ctx)
    samples: list[Sample] = [EVICTS(1 if target.evicts else 0)]
    for c in clusters:
        samples.append(
            INFO(1, c.identifier, c.engine, c.engine_version, c.node_type, c.replication_group)
        )
        samples.append(STATUS(1, c.identifier, c.status))
    wanted = [q for c in clusters for q in queries(c, target.period)]
    samples.extend(await read(ctx, target, wanted, target.delay))
    nodes = sum(len(c.nodes) for c in clusters)
    verdict, evidence = judged(
        _findings(target, samples),
        f"{nodes} nodes in {len(clusters)} clusters; {_busiest(samples)}",
    )
    return measured_result(samples, verdict, evidence, _missing(target, clusters))


def _values(samples: Iterable[Sample], spec: MetricSpec) -> dict[str, float]:
    """A node's figure by `cluster/node`."""
    return {"/".join(s.label_values): s.value for s in samples if s.spec is spec}


def _busiest(samples: Sequence[Sample]) -> str:
    cpu = _values(samples, ENGINE_CPU_AVG)
    if not cpu:
        return "no engine CPU figure yet"
    node = max(cpu, key=lambda n: cpu[n])
    return f"busiest engine thread: {node}, {cpu[node]:.0f} %"


def _findings(target: ElastiCacheTarget, samples: Sequence[Sample]) -> list[Finding]:
    """What the rules read, the outages first."""
    cpu = _values(samples, ENGINE_CPU_AVG)
    memory = _values(samples, MEMORY)
    evictions = _values(samples, EVICTIONS)
    swap = _values(samples, SWAP)
    lag = _values(samples, REPLICATION_LAG_SECONDS)
    failing: list[Finding] = []
    degraded: list[Finding] = []
    for node in sorted(cpu.keys() | memory.keys() | evictions.keys() | swap.keys() | lag.keys()):
        if cpu.get(node, 0.0) >= CPU_SATURATED:
            why = f"{node}: engine thread at {cpu[node]:.0f} %: every command queues"
            failing.append(Finding(Health.FAILING, why, "ElastiCacheEngineCpuSaturated"))
        elif cpu.get(node, 0.0) > CPU_HIGH:
            why = f"{node}: engine thread at {cpu[node]:.0f} %"
            degraded.append(Finding(Health.DEGRADED, why, "ElastiCacheEngineCpuHigh"))
        if not target.evicts and (
            memory.get(node, 0.0) >= MEMORY_FULL or evictions.get(node, 0.0) > 0
        ):
            why = (
                f"{node}: memory {memory.get(node, 0.0):.0f} % of maxmemory, "
                f"{evictions.get(node, 0.0):.0f} keys evicted in a minute"
            )
            failing.append(Finding(Health.FAILING, why, "ElastiCacheMemoryFull"))
        elif (not target.evicts and memory.get(node, 0.0) > MEMORY_HIGH) or swap.get(
            node, 0.0
        ) > SWAP_HIGH:
            why = (
                f"{node}: memory {memory.get(node, 0.0):.0f} % of maxmemory, "
                f"{swap.get(node, 0.0) / MIB:.0f} MiB swapped"
            )
            degraded.append(Finding(Health.DEGRADED, why, "ElastiCacheMemoryHigh"))
        if lag.get(node, 0.0) > REPLICATION_LAG:
            why = f"{node}: replica {lag[node]:.0f} s behind its primary"
            degraded.append(Finding(Health.DEGRADED, why, "ElastiCacheReplicationLagging"))
    return failing + degraded


KIND = ProbeKind(
    "elasticache",
    ElastiCacheTarget,
    probe,
    METRICS,
    Reason,
    "ElastiCache Redis and Valkey nodes: engine CPU, memory, swap, evictions, replication lag",
    state=AwsState,
    resources=(AWS,),
    area=Area.DATABASES,
)
