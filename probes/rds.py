"""RDS DB instances: storage left, CPU and its credits, I/O burst, memory, latency, replica lag.

A full RDS disk stops every write (the instance goes to `storage-full`), and a CPU-pinned or
credit-starved instance slows every request behind it: both take a site down while the
database's own protocol still answers. The postgres kind sees the server from inside; this
kind sees the instance AWS runs it on.

Per run: one DescribeDBInstances (paginated, 100 a page) for the instances the config names,
or every instance in the region, filtered by engine: nothing to tag, and an instance created
later is found by the next run. Its answer gives each instance's status, engine, class and
allocated storage, which CloudWatch lacks and storage % free needs. Then one GetMetricData
for every instance's metrics (500 queries a call), read as the cloudwatch kind reads them:
only closed periods, each series' newest datapoint within five periods, its time beside it.
Names are YACE's (`aws_rds_<metric>_<statistic>`, `dimension_DBInstanceIdentifier`), so its
dashboards keep working.

A metric is asked for only where RDS publishes it: no FreeStorageSpace for Aurora (its
cluster volume grows by itself), BurstBalance for gp2 volumes, CPUCreditBalance
for burstable (db.t*) classes, ReplicaLag for read replicas.

The verdict mirrors alert_rules/rds.rules.yml with its thresholds, from the newest period.
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

GIB = 1024**3
PAGE_SIZE = 100  # DescribeDBInstances' MaxRecords: 20 to 100

# The rules' thresholds (alert_rules/rds.rules.yml), so console and pager agree.
STORAGE_FULL = 0.02  # RdsStorageFull: free / allocated < 0.02, or status storage-full
STORAGE_LOW = 0.10  # RdsStorageLow: free / allocated < 0.10 with no autoscaling headroom
CPU_SATURATED = 90.0  # RdsCpuSaturated: cpuutilization_average > 90
CREDITS_EXHAUSTED = 1.0  # RdsBurstExhausted: cpucredit_balance_average < 1, on a db.t2
# The classes RDS runs in standard credit mode, held to their baseline once credits are spent
# (db.t3 and db.t4g run unlimited: they bill surplus credits instead).
STANDARD_CREDITS = "db.t2."
BURST_EXHAUSTED = 5.0  # RdsBurstExhausted: burst_balance_average < 5 (%)
REPLICA_LAG = 300.0  # RdsReplicaLagging: replica_lag_average > 300 (seconds), or < 0
# RdsStorageLow: autoscaling headroom is a limit at least this much above the allocation (RDS
# grows storage by 10 % at least; a limit 1 GiB above it is none).
HEADROOM = 1.1
# The volume type that spends an I/O burst balance on RDS (gp3, io1, io2 and magnetic do not).
BURSTING_STORAGE = frozenset({"gp2"})
# Engines DescribeDBInstances also lists whose metrics are not in AWS/RDS.
OTHER_SERVICES = ("docdb", "neptune")


class RdsTarget(AwsTarget):
    kind: Literal["rds"] = "rds"
    # DB instance identifiers (or ARNs); none: every instance in the region.
    identifiers: LowercaseIds = Field(default=(), max_length=100)
    # Only instances of these engines (postgres, mysql, aurora-postgresql, ...); none: all.
    engines: tuple[str, ...] = ()
    # Period of each datapoint; RDS publishes every 60 s.
    period: CloudWatchPeriod = 60.0
    # How long CloudWatch may take to close a period before it is read.
    delay: Duration = 120.0

    def describe(self) -> str:
        which = ", ".join(self.identifiers) if self.identifiers else "every instance"
        return f"rds {which}" + (f" ({', '.join(self.engines)})" if self.engines else "")


_DB = ("dimension_DBInstanceIdentifier",)


def _cw(name: str, help_: str) -> MetricSpec:
    """A CloudWatch series, under YACE's name for it."""
    return MetricSpec(name, help_, _DB)


INFO = MetricSpec(
    "aws_rds_info",
    "1 per DB instance, with its engine, engine version, class and storage type.",
    (*_DB, "engine", "engine_version", "instance_class", "storage_type"),
)
STATUS = MetricSpec(
    "aws_rds_instance_status",
    "1 with the instance's status (available, storage-full, modifying, ...) as a label.",
    (*_DB, "status"),
)
ALLOCATED = MetricSpec(
    "aws_rds_allocated_storage_bytes",
    "Storage allocated to the instance (not for Aurora, whose volume grows by itself).",
    _DB,
)
MAX_ALLOCATED = MetricSpec(
    "aws_rds_max_allocated_storage_bytes",
    "The storage autoscaling limit, where autoscaling is on.",
    _DB,
)
FREE_STORAGE = _cw("aws_rds_free_storage_space_average", "RDS FreeStorageSpace in bytes, Average.")
CPU_AVG = _cw("aws_rds_cpuutilization_average", "RDS CPUUtilization %, Average.")
CPU_MAX = _cw("aws_rds_cpuutilization_maximum", "RDS CPUUtilization %, Maximum.")
CPU_CREDITS = _cw(
    "aws_rds_cpucredit_balance_average", "RDS CPUCreditBalance of a burstable class, Average."
)
BURST_BALANCE = _cw(
    "aws_rds_burst_balance_average",
    "RDS BurstBalance: % of a gp2 volume's I/O credits left.",
)
FREEABLE_MEMORY = _cw("aws_rds_freeable_memory_average", "RDS FreeableMemory in bytes, Average.")
READ_LATENCY = _cw("aws_rds_read_latency_average", "RDS ReadLatency in seconds per I/O, Average.")
WRITE_LATENCY = _cw(
    "aws_rds_write_latency_average", "RDS WriteLatency in seconds per I/O, Average."
)
DISK_QUEUE = _cw("aws_rds_disk_queue_depth_average", "RDS DiskQueueDepth: I/Os waiting, Average.")
CONNECTIONS = _cw(
    "aws_rds_database_connections_maximum", "RDS DatabaseConnections, Maximum over the period."
)
REPLICA_LAG_SECONDS = _cw(
    "aws_rds_replica_lag_average", "RDS ReplicaLag of a read replica in seconds, Average."
)

METRICS = (
    INFO,
    STATUS,
    ALLOCATED,
    MAX_ALLOCATED,
    FREE_STORAGE,
    CPU_AVG,
    CPU_MAX,
    CPU_CREDITS,
    BURST_BALANCE,
    FREEABLE_MEMORY,
    READ_LATENCY,
    WRITE_LATENCY,
    DISK_QUEUE,
    CONNECTIONS,
    REPLICA_LAG_SECONDS,
    DATAPOINT_TIME,
)


@dataclass(frozen=True, slots=True)
class Instance:
    """What a run keeps of one DescribeDBInstances entry."""

    identifier: str
    status: str
    engine: str
    engine_version: str
    instance_class: str
    storage_type: str
    allocated_gib: int
    max_allocated_gib: int | None
    replica_of: str | None

    @property
    def aurora(self) -> bool:
        return self.engine.startswith("aurora")


def _instance(found: dict[str, Any]) -> Instance:
    return Instance(
        identifier=str(found["DBInstanceIdentifier"]),
        status=str(found.get("DBInstanceStatus", "")),
        engine=str(found.get("Engine", "")),
        engine_version=str(found.get("EngineVersion") or ""),
        instance_class=str(found.get("DBInstanceClass", "")),
        storage_type=str(found.get("StorageType") or ""),
        allocated_gib=int(found.get("AllocatedStorage") or 0),
        max_allocated_gib=found.get("MaxAllocatedStorage"),
        replica_of=found.get("ReadReplicaSourceDBInstanceIdentifier"),
    )


def queries(instance: Instance, period: float) -> list[Query]:
    """The metrics RDS publishes for this instance."""
    wanted = [
        (CPU_AVG, "CPUUtilization", "Average"),
        (CPU_MAX, "CPUUtilization", "Maximum"),
        (FREEABLE_MEMORY, "FreeableMemory", "Average"),
        (READ_LATENCY, "ReadLatency", "Average"),
        (WRITE_LATENCY, "WriteLatency", "Average"),
        (DISK_QUEUE, "DiskQueueDepth", "Average"),
        (CONNECTIONS, "DatabaseConnections", "Maximum"),
    ]
    if not instance.aurora:
        wanted.append((FREE_STORAGE, "FreeStorageSpace", "Average"))
        if instance.storage_type in BURSTING_STORAGE:
            wanted.append((BURST_BALANCE, "BurstBalance", "Average"))
    if instance.instance_class.startswith("db.t"):
        wanted.append((CPU_CREDITS, "CPUCreditBalance", "Average"))
    if instance.replica_of:
        wanted.append((REPLICA_LAG_SECONDS, "ReplicaLag", "Average"))
    dims = (("DBInstanceIdentifier", instance.identifier),)
    return [
        Query(spec, (instance.identifier,), "AWS/RDS", metric, dims, stat, period)
        for spec, metric, stat in wanted
    ]


async def probe(target: RdsTarget, ctx: ProbeContext) -> ProbeResult:
    return await measured(ctx, lambda: _measure(target, ctx))


async def _describe(target: RdsTarget, ctx: ProbeContext) -> list[Instance]:
    filters = [
        {"Name": name, "Values": list(values)}
        for name, values in (("db-instance-id", target.identifiers), ("engine", target.engines))
        if values
    ]
    pages = await ctx.use(AWS).pages(
        target,
        "rds",
        "describe_db_instances",
        ctx.deadline,
        keep=lambda page: [_instance(i) for i in page.get("DBInstances", ())],
        Filters=filters,
        PaginationConfig={"PageSize": PAGE_SIZE},
    )
    return [
        instance
        for page in pages
        for instance in page
        if not instance.engine.startswith(OTHER_SERVICES)  # DocumentDB, Neptune
    ]


def _missing(target: RdsTarget, instances: Sequence[Instance]) -> str:
    """The identifiers the config names that DescribeDBInstances did not return (an ARN
    names an instance by its last part), said as the run's failure; "" when none is."""
    found = {i.identifier for i in instances}
    gone = [name for name in target.identifiers if name.rsplit(":", 1)[-1] not in found]
    if not gone:
        return ""
    if target.engines:
        return (
            f"no DB instance {', '.join(gone)} of engine {', '.join(target.engines)} in this "
            "region and account"
        )
    return f"no DB instance {', '.join(gone)} in this region and account"


async def _measure(target: RdsTarget, ctx: ProbeContext) -> ProbeResult:
    instances = await _describe(target, ctx)
    samples: list[Sample] = []
    for i in instances:
        samples.append(
            INFO(1, i.identifier, i.engine, i.engine_version, i.instance_class, i.storage_type)
        )
        samples.append(STATUS(1, i.identifier, i.status))
        if not i.aurora and i.allocated_gib:
            samples.append(ALLOCATED(i.allocated_gib * GIB, i.identifier))
        if i.max_allocated_gib:
            samples.append(MAX_ALLOCATED(i.max_allocated_gib * GIB, i.identifier))
    wanted = [q for i in instances for q in queries(i, target.period)]
    samples.extend(await read(ctx, target, wanted, target.delay))
    verdict, evidence = judged(
        _findings(instances, samples),
        f"{len(instances)} DB instances; {_lowest_storage(instances, samples)}",
    )
    return measured_result(samples, verdict, evidence, _missing(target, instances))


def _values(samples: Iterable[Sample], spec: MetricSpec) -> dict[str, float]:
    return {s.label_values[0]: s.value for s in samples if s.spec is spec}


def _free_shares(instances: Sequence[Instance], samples: Sequence[Sample]) -> dict[str, float]:
    free = _values(samples, FREE_STORAGE)
    return {
        i.identifier: free[i.identifier] / (i.allocated_gib * GIB)
        for i in instances
        if i.identifier in free and i.allocated_gib and not i.aurora
    }


def _lowest_storage(instances: Sequence[Instance], samples: Sequence[Sample]) -> str:
    shares = _free_shares(instances, samples)
    if not shares:
        return "no storage figure yet"
    name = min(shares, key=lambda n: shares[n])
    return f"least storage free: {name}, {shares[name] * 100:.3g} %"


def _findings(instances: Sequence[Instance], samples: Sequence[Sample]) -> list[Finding]:
    """What the rules read, a full disk first."""
    shares = _free_shares(instances, samples)
    cpu = _values(samples, CPU_AVG)
    credits = _values(samples, CPU_CREDITS)
    burst = _values(samples, BURST_BALANCE)
    lag = _values(samples, REPLICA_LAG_SECONDS)
    failing: list[Finding] = []
    degraded: list[Finding] = []
    for i in instances:
        name = i.identifier
        share = shares.get(name)
        if i.status == "storage-full" or (share is not None and share < STORAGE_FULL):
            left = f"{share * 100:.2g} % free" if share is not None else "no figure"
            why = f"{name}: storage full ({i.status}, {left} of {i.allocated_gib} GiB)"
            failing.append(Finding(Health.FAILING, why, "RdsStorageFull"))
        elif share is not None and share < STORAGE_LOW:
            headroom = (i.max_allocated_gib or 0) >= HEADROOM * i.allocated_gib
            if not headroom:
                why = f"{name}: {share * 100:.2g} % of {i.allocated_gib} GiB storage free"
                degraded.append(Finding(Health.DEGRADED, why, "RdsStorageLow"))
        if cpu.get(name, 0.0) > CPU_SATURATED:
            why = f"{name}: CPU at {cpu[name]:.0f} % (average)"
            degraded.append(Finding(Health.DEGRADED, why, "RdsCpuSaturated"))
        standard = i.instance_class.startswith(STANDARD_CREDITS)
        if standard and name in credits and credits[name] < CREDITS_EXHAUSTED:
            why = f"{name}: CPU credits spent ({credits[name]:.2g}): held to its baseline"
            degraded.append(Finding(Health.DEGRADED, why, "RdsBurstExhausted"))
        if name in burst and burst[name] < BURST_EXHAUSTED:
            why = f"{name}: I/O burst balance at {burst[name]:.2g} %: held to its baseline IOPS"
            degraded.append(Finding(Health.DEGRADED, why, "RdsBurstExhausted"))
        if lag.get(name, 0.0) > REPLICA_LAG:
            why = f"{name}: replica {lag[name]:.0f} s behind {i.replica_of}"
            degraded.append(Finding(Health.DEGRADED, why, "RdsReplicaLagging"))
        elif lag.get(name, 0.0) < 0:  # RDS's -1: replication is not running
            why = f"{name}: not replicating from {i.replica_of} (ReplicaLag -1)"
            degraded.append(Finding(Health.DEGRADED, why, "RdsReplicaLagging"))
    return failing + degraded


KIND = ProbeKind(
    "rds",
    RdsTarget,
    probe,
    METRICS,
    Reason,
    "RDS DB instances: storage, CPU and credits, I/O burst, memory, latency, replica lag",
    state=AwsState,
    resources=(AWS,),
    area=Area.DATABASES,
)
