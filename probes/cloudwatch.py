"""CloudWatch metrics the runbooks read: ALB 5xx and latency, ECS CPU and memory, SQS oldest
message, S3 storage; and any other metric a user names.

The figures a runbook reads from CloudWatch: the 5xx share of requests, task CPU and memory
when 502/504s come at random, a bucket's size, and how old the oldest queued job is.

Names are YACE's, `aws_<namespace>_<metric>_<statistic>` with `dimension_<Name>` labels, so
its dashboards and rules keep working. Other metrics go to `aws_cloudwatch_value`, labelled
by namespace, metric, statistic and dimensions: a user's list is bounded by their config.

The query window ends at a period boundary at least `delay` ago, so only closed periods are
read: a period CloudWatch is still filling is never exported as a drop to zero (the YACE
complaint). Counts of events that CloudWatch publishes only when some happened (ALB requests
and 5xx, SQS messages sent and deleted) are read from the last closed period alone, and are 0
when it has no datapoint, so a ratio never pairs this minute's requests with an older
minute's errors. Other statistics export their newest datapoint within the last five periods,
and nothing when there is none (an ALB with no requests has no latency). Each datapoint's own
time is in `stackprobe_cloudwatch_datapoint_timestamp_seconds`. One GetMetricData per period
length for every query of the target, 500 queries a call.

The verdict mirrors the rules that read these series (alert_rules/alb.rules.yml: 5xx share
and latency; ecs.rules.yml: saturation; sqs.rules.yml: the oldest message) with their
thresholds, from the newest period instead of the rules' averages over minutes. Metrics
listed under `metrics:` have no thresholds: their verdict is whether they could be read.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
    Reason,
    gather_all,
    judged,
    measured,
    metric_data,
)
from stackprobe.probes._aws_api import AWS, AwsTarget

DAY = 86400
LOOKBACK_PERIODS = 5  # sparse metrics (5xx counts) may skip periods; look this far back

MOST_5XX = 0.5  # AlbMostRequests5xx: aws_applicationelb:http_5xx:ratio2m >= 0.5
HIGH_5XX = 0.05  # AlbHigh5xxRate: aws_applicationelb:http_5xx:ratio5m > 0.05
MIN_REQUESTS = 20  # AlbMostRequests5xx, AlbHigh5xxRate: aws_applicationelb:requests:avg5m >= 20
SLOW_P95 = 1.0  # AlbHighLatency: target_response_time_p95 > 1 (seconds)
SATURATED = 90.0  # EcsServiceResourcesSaturated: cpuutilization_average > 90 or memory's
OLDEST_AGE = 1800.0  # SqsOldestMessageTooOld: approximate_age_of_oldest_message_maximum > 1800


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlbSelection(_Strict):
    # The LoadBalancer dimension: the ARN's tail, app/NAME/ID.
    load_balancer: str = Field(pattern=r"^app/[^/]+/[^/]+$")
    # TargetGroup dimensions (targetgroup/NAME/ID) for per-group 5xx and latency.
    target_groups: tuple[str, ...] = ()


class EcsSelection(_Strict):
    cluster: str
    service: str


_STAT = re.compile(r"^(SampleCount|Average|Sum|Minimum|Maximum|p\d{1,2}(\.\d+)?)$")


def cloudwatch_period(value: float) -> float:
    if value not in (1, 5, 10, 30) and (value < 60 or value % 60):
        raise PydanticCustomError(
            "period",
            "CloudWatch takes periods of 1s, 5s, 10s, 30s (high-resolution metrics) or a "
            "whole number of minutes, e.g. 1m or 1d",
            {},
        )
    return value


# A period CloudWatch takes, for every kind that reads it.
CloudWatchPeriod = Annotated[Duration, AfterValidator(cloudwatch_period)]


class CustomMetric(_Strict):
    namespace: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    dimensions: dict[str, str] = Field(default_factory=dict)
    statistics: tuple[str, ...] = ("Average",)
    # Its own period, e.g. 1d for daily metrics; the target's `period` otherwise.
    period: CloudWatchPeriod | None = None

    @field_validator("statistics")
    @classmethod
    def _known_statistics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for stat in value:
            if not _STAT.match(stat):
                raise PydanticCustomError(
                    "statistic",
                    "{found} is not a CloudWatch statistic; use Average, Sum, Minimum, Maximum, "
                    "SampleCount or a percentile such as p95",
                    {"found": repr(stat)},
                )
        return value


class CloudWatchTarget(AwsTarget):
    kind: Literal["cloudwatch"] = "cloudwatch"
    # Period of each datapoint; ALB and SQS publish every 60 s, ECS every 60 s. A
    # high-resolution period (1s, 5s, 10s, 30s) only has data for metrics published at high
    # resolution (the demo's are); AWS's own ALB, ECS and SQS metrics are not.
    period: CloudWatchPeriod = 60.0
    # How long CloudWatch may take to close a period before it is read.
    delay: Duration = 120.0
    albs: tuple[AlbSelection, ...] = ()
    ecs_services: tuple[EcsSelection, ...] = ()
    sqs_queues: tuple[str, ...] = ()
    s3_buckets: tuple[str, ...] = ()
    metrics: tuple[CustomMetric, ...] = ()

    @model_validator(mode="after")
    def _each_series_once(self) -> CloudWatchTarget:
        seen: set[tuple[str, ...]] = set()
        for query in queries(self):
            # the series itself, and the datapoint-time series beside it
            stamp = (query.namespace, query.metric, query.stat, query.dimensions_label())
            if (query.spec.name, *query.labels) in seen or ("@", *stamp) in seen:
                raise PydanticCustomError(
                    "duplicate_query",
                    "{metric} {labels} is asked for twice; list each ALB, service, queue, "
                    "bucket and metric once",
                    {"metric": query.spec.name, "labels": ", ".join(query.labels)},
                )
            seen.update({(query.spec.name, *query.labels), ("@", *stamp)})
        return self

    def describe(self) -> str:
        parts = [
            f"{len(self.albs)} ALBs" if self.albs else "",
            f"{len(self.ecs_services)} ECS services" if self.ecs_services else "",
            f"{len(self.sqs_queues)} queues" if self.sqs_queues else "",
            f"{len(self.s3_buckets)} buckets" if self.s3_buckets else "",
            f"{len(self.metrics)} metrics" if self.metrics else "",
        ]
        return "cloudwatch " + ", ".join(p for p in parts if p)


_ALB = ("dimension_LoadBalancer", "dimension_TargetGroup")
_ECS = ("dimension_ClusterName", "dimension_ServiceName")
_SQS = ("dimension_QueueName",)
_S3 = ("dimension_BucketName", "dimension_StorageType")


def _spec(name: str, help_: str, labels: tuple[str, ...]) -> MetricSpec:
    return MetricSpec(name, help_, labels)


ALB_REQUESTS = _spec(
    "aws_applicationelb_request_count_sum", "ALB RequestCount, Sum over the period.", _ALB
)
ALB_TARGET_5XX = _spec(
    "aws_applicationelb_httpcode_target_5xx_count_sum",
    "ALB HTTPCode_Target_5XX_Count, Sum: 5xx answered by the targets.",
    _ALB,
)
ALB_ELB_5XX = _spec(
    "aws_applicationelb_httpcode_elb_5xx_count_sum",
    "ALB HTTPCode_ELB_5XX_Count, Sum: 5xx the balancer made itself (502, 503, 504).",
    _ALB,
)
ALB_LATENCY_AVG = _spec(
    "aws_applicationelb_target_response_time_average",
    "ALB TargetResponseTime in seconds, Average.",
    _ALB,
)
ALB_LATENCY_P95 = _spec(
    "aws_applicationelb_target_response_time_p95", "ALB TargetResponseTime in seconds, p95.", _ALB
)
ALB_LATENCY_P99 = _spec(
    "aws_applicationelb_target_response_time_p99", "ALB TargetResponseTime in seconds, p99.", _ALB
)
ECS_CPU_AVG = _spec(
    "aws_ecs_cpuutilization_average", "ECS service CPUUtilization %, Average.", _ECS
)
ECS_CPU_MAX = _spec(
    "aws_ecs_cpuutilization_maximum", "ECS service CPUUtilization %, Maximum.", _ECS
)
ECS_MEM_AVG = _spec(
    "aws_ecs_memory_utilization_average", "ECS service MemoryUtilization %, Average.", _ECS
)
ECS_MEM_MAX = _spec(
    "aws_ecs_memory_utilization_maximum", "ECS service MemoryUtilization %, Maximum.", _ECS
)
SQS_OLDEST = _spec(
    "aws_sqs_approximate_age_of_oldest_message_maximum",
    "SQS ApproximateAgeOfOldestMessage in seconds, Maximum.",
    _SQS,
)
SQS_SENT = _spec(
    "aws_sqs_number_of_messages_sent_sum", "SQS NumberOfMessagesSent, Sum over the period.", _SQS
)
SQS_DELETED = _spec(
    "aws_sqs_number_of_messages_deleted_sum",
    "SQS NumberOfMessagesDeleted, Sum: jobs finished; 0 while the queue grows means stuck.",
    _SQS,
)
S3_SIZE = _spec("aws_s3_bucket_size_bytes_average", "S3 BucketSizeBytes, daily, Average.", _S3)
S3_OBJECTS = _spec("aws_s3_number_of_objects_average", "S3 NumberOfObjects, daily, Average.", _S3)
CUSTOM = MetricSpec(
    "aws_cloudwatch_value",
    "Newest closed datapoint of a metric listed under `metrics:`.",
    ("namespace", "metric_name", "statistic", "dimensions"),
)
DATAPOINT_TIME = MetricSpec(
    "stackprobe_cloudwatch_datapoint_timestamp_seconds",
    "Unix time (period start) of the datapoint each exported CloudWatch series shows.",
    ("namespace", "metric_name", "statistic", "dimensions"),
)

METRICS = (
    ALB_REQUESTS,
    ALB_TARGET_5XX,
    ALB_ELB_5XX,
    ALB_LATENCY_AVG,
    ALB_LATENCY_P95,
    ALB_LATENCY_P99,
    ECS_CPU_AVG,
    ECS_CPU_MAX,
    ECS_MEM_AVG,
    ECS_MEM_MAX,
    SQS_OLDEST,
    SQS_SENT,
    SQS_DELETED,
    S3_SIZE,
    S3_OBJECTS,
    CUSTOM,
    DATAPOINT_TIME,
)


@dataclass(frozen=True, slots=True)
class Query:
    """One MetricStat, and the sample its newest datapoint becomes."""

    spec: MetricSpec
    labels: tuple[str, ...]
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str
    period: float

    @property
    def counts_events(self) -> bool:
        """A Sum of events CloudWatch publishes only when some happened (ALB 5xx, SQS sent):
        its newest closed period is read alone, and no datapoint there means 0. Taking an
        older datapoint instead would set a 5xx burst from minutes ago beside this minute's
        requests, and page on an error rate that is over."""
        return self.stat == "Sum" and self.metric in EVENT_COUNTS

    def request(self, query_id: str) -> dict[str, Any]:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.metric,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
                },
                "Period": int(self.period),
                "Stat": self.stat,
            },
            "ReturnData": True,
        }

    def dimensions_label(self) -> str:
        return ",".join(f"{n}={v}" for n, v in self.dimensions)


EVENT_COUNTS = frozenset(
    {
        "RequestCount",
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
        "NumberOfMessagesSent",
        "NumberOfMessagesDeleted",
    }
)
_ALB_STATS = (
    (ALB_REQUESTS, "RequestCount", "Sum"),
    (ALB_TARGET_5XX, "HTTPCode_Target_5XX_Count", "Sum"),
    (ALB_LATENCY_AVG, "TargetResponseTime", "Average"),
    (ALB_LATENCY_P95, "TargetResponseTime", "p95"),
    (ALB_LATENCY_P99, "TargetResponseTime", "p99"),
)


def queries(target: CloudWatchTarget) -> list[Query]:
    """Every query the target makes, in a stable order."""
    p = target.period
    found: list[Query] = []
    for alb in target.albs:
        lb = (("LoadBalancer", alb.load_balancer),)
        found.append(
            Query(
                ALB_ELB_5XX,
                (alb.load_balancer, ""),
                "AWS/ApplicationELB",
                "HTTPCode_ELB_5XX_Count",
                lb,
                "Sum",
                p,
            )
        )
        for group in ("", *alb.target_groups):
            dims = (*lb, ("TargetGroup", group)) if group else lb
            found.extend(
                Query(spec, (alb.load_balancer, group), "AWS/ApplicationELB", metric, dims, stat, p)
                for spec, metric, stat in _ALB_STATS
            )
    for ecs in target.ecs_services:
        dims = (("ClusterName", ecs.cluster), ("ServiceName", ecs.service))
        for spec, metric, stat in (
            (ECS_CPU_AVG, "CPUUtilization", "Average"),
            (ECS_CPU_MAX, "CPUUtilization", "Maximum"),
            (ECS_MEM_AVG, "MemoryUtilization", "Average"),
            (ECS_MEM_MAX, "MemoryUtilization", "Maximum"),
        ):
            found.append(Query(spec, (ecs.cluster, ecs.service), "AWS/ECS", metric, dims, stat, p))
    for queue in target.sqs_queues:
        dims = (("QueueName", queue),)
        for spec, metric, stat in (
            (SQS_OLDEST, "ApproximateAgeOfOldestMessage", "Maximum"),
            (SQS_SENT, "NumberOfMessagesSent", "Sum"),
            (SQS_DELETED, "NumberOfMessagesDeleted", "Sum"),
        ):
            found.append(Query(spec, (queue,), "AWS/SQS", metric, dims, stat, p))
    for bucket in target.s3_buckets:
        for spec, metric, storage in (
            (S3_SIZE, "BucketSizeBytes", "StandardStorage"),
            (S3_OBJECTS, "NumberOfObjects", "AllStorageTypes"),
        ):
            dims = (("BucketName", bucket), ("StorageType", storage))
            found.append(Query(spec, (bucket, storage), "AWS/S3", metric, dims, "Average", DAY))
    for custom in target.metrics:
        custom_dims = tuple(sorted(custom.dimensions.items()))
        label = ",".join(f"{n}={v}" for n, v in custom_dims)
        for stat in custom.statistics:
            labels = (custom.namespace, custom.metric, stat, label)
            period = custom.period or p
            found.append(
                Query(CUSTOM, labels, custom.namespace, custom.metric, custom_dims, stat, period)
            )
    return found


def window(period: float, delay: float, now: float) -> tuple[float, float]:
    """[start, end) of closed periods only: `end` is a period boundary at least `delay` ago."""
    end = math.floor((now - delay) / period) * period
    return end - LOOKBACK_PERIODS * period, end


async def probe(target: CloudWatchTarget, ctx: ProbeContext) -> ProbeResult:
    return await measured(ctx, lambda: _measure(target, ctx))


async def read(
    ctx: ProbeContext, target: AwsTarget, wanted: Sequence[Query], delay: float
) -> list[Sample]:
    """Each query's newest closed datapoint, and its time: one GetMetricData per period
    length (500 queries a call), each over closed periods at least `delay` old (daily ones
    at once). What every kind that reads CloudWatch reads it with."""
    by_period: dict[float, list[tuple[str, Query]]] = {}
    for i, query in enumerate(wanted):
        by_period.setdefault(query.period, []).append((f"q{i}", query))
    now = time.time()
    windows = {p: window(p, delay if p < DAY else 0.0, now) for p in by_period}
    answers = await gather_all(
        metric_data(ctx, target, [q.request(qid) for qid, q in group], *windows[period])
        for period, group in by_period.items()
    )
    samples: list[Sample] = []
    for (period, group), points in zip(by_period.items(), answers, strict=True):
        samples.extend(newest(group, points, windows[period][1] - period))
    return samples


async def _measure(target: CloudWatchTarget, ctx: ProbeContext) -> ProbeResult:
    wanted = queries(target)
    samples = await read(ctx, target, wanted, target.delay)
    verdict, evidence = judged(
        _findings(samples),
        f"{sum(1 for s in samples if s.spec is not DATAPOINT_TIME)} of {len(wanted)} "
        "queries had a datapoint",
    )
    return ProbeResult.ok(tuple(samples), verdict=verdict, evidence=evidence)


_JUDGED = frozenset(
    {
        ALB_REQUESTS,
        ALB_TARGET_5XX,
        ALB_ELB_5XX,
        ALB_LATENCY_P95,
        ECS_CPU_AVG,
        ECS_MEM_AVG,
        SQS_OLDEST,
    }
)


def _findings(samples: Iterable[Sample]) -> list[Finding]:
    """What the series the alert rules read say, the balancers' 5xx share first."""
    seen: dict[tuple[MetricSpec, tuple[str, ...]], float] = {
        (s.spec, s.label_values): s.value for s in samples if s.spec in _JUDGED
    }
    failing: list[Finding] = []
    degraded: list[Finding] = []
    for (spec, labels), requests in seen.items():
        # the rules read the balancer's own series, dimension_TargetGroup=""
        if spec is not ALB_REQUESTS or labels[1] or requests < MIN_REQUESTS:
            continue
        errors = seen.get((ALB_TARGET_5XX, labels), 0.0) + seen.get((ALB_ELB_5XX, labels), 0.0)
        share = errors / requests
        why = (
            f"{labels[0]}: {share * 100:.3g} % of {requests:.0f} requests 5xx in the newest period"
        )
        if share >= MOST_5XX:
            failing.append(Finding(Health.FAILING, why, "AlbMostRequests5xx"))
        elif share > HIGH_5XX:
            degraded.append(Finding(Health.DEGRADED, why, "AlbHigh5xxRate"))
    for (spec, labels), value in seen.items():
        if spec is ALB_LATENCY_P95 and not labels[1] and value > SLOW_P95:
            why = f"{labels[0]}: p95 response time {value:.2f} s"
            degraded.append(Finding(Health.DEGRADED, why, "AlbHighLatency"))
        elif spec in (ECS_CPU_AVG, ECS_MEM_AVG) and value > SATURATED:
            what = "CPU" if spec is ECS_CPU_AVG else "memory"
            why = f"{labels[0]}/{labels[1]}: {what} at {value:.0f} % (average)"
            degraded.append(Finding(Health.DEGRADED, why, "EcsServiceResourcesSaturated"))
        elif spec is SQS_OLDEST and value > OLDEST_AGE:
            why = f"{labels[0]}: oldest message {value / 60:.0f} min old"
            degraded.append(Finding(Health.DEGRADED, why, "SqsOldestMessageTooOld"))
    return failing + degraded


def newest(
    group: Iterable[tuple[str, Query]],
    points: dict[str, list[tuple[float, float]]],
    last_closed: float,
) -> list[Sample]:
    """Each query's newest datapoint; for event counts, the last closed period's or 0."""
    samples: list[Sample] = []
    for query_id, query in group:
        found = points.get(query_id)
        if query.counts_events:
            value = next((v for at, v in found or () if at == last_closed), 0.0)
            found = [(last_closed, value)]
        if not found:
            continue
        at, value = found[0]
        samples.append(query.spec(value, *query.labels))
        samples.append(
            DATAPOINT_TIME(at, query.namespace, query.metric, query.stat, query.dimensions_label())
        )
    return samples


KIND = ProbeKind(
    "cloudwatch",
    CloudWatchTarget,
    probe,
    METRICS,
    Reason,
    "CloudWatch GetMetricData: ALB 5xx and latency, ECS CPU/memory, SQS age",
    state=AwsState,
    resources=(AWS,),
    area=Area.METRICS,
)
