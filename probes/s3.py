"""S3 buckets: size and object count, and whether a lifecycle rule cleans them up.

What a runbook checks when a bucket fills up (`aws s3 ls --recursive --summarize`) and the
usual cause it names: no lifecycle rule cleaning old objects up.

Two modes. `cloudwatch` (the default) reads S3's daily storage metrics (BucketSizeBytes,
NumberOfObjects) with one GetMetricData for every bucket: cheap at any size, a day behind, and
the datapoint's own time is exported. `list` pages through ListObjectsV2 (1,000 keys a page)
up to `max_objects`, for small buckets where a day is too slow, and says when the cap cut
the count short. Either way, one GetBucketLifecycleConfiguration per bucket.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import Field

from stackprobe.contract import MetricSpec, ProbeContext, ProbeKind, ProbeResult, Sample
from stackprobe.probes._aws import AwsState, Reason, gather_all, measured, metric_data
from stackprobe.probes._aws_api import AWS, AwsCallError, AwsTarget
from stackprobe.target import UniqueNames

DAY = 86400
LIST_PAGE = 1000


class S3Target(AwsTarget):
    kind: Literal["s3"] = "s3"
    buckets: UniqueNames = Field(min_length=1)
    mode: Literal["cloudwatch", "list"] = "cloudwatch"
    # `cloudwatch` mode: the StorageType dimensions whose sizes are read.
    storage_types: UniqueNames = ("StandardStorage",)
    # `list` mode: objects counted per bucket before the listing stops, in pages of 1,000.
    max_objects: int = Field(100_000, ge=1000, le=1_000_000, multiple_of=LIST_PAGE)

    def describe(self) -> str:
        return f"s3 {', '.join(self.buckets)} ({self.mode})"


_B = ("bucket",)
SIZE = MetricSpec(
    "aws_s3_bucket_size_bytes",
    "Bytes stored, by storage type (`listed` in list mode, every class together).",
    (*_B, "storage_type"),
)
OBJECTS = MetricSpec("aws_s3_bucket_objects", "Objects stored (every storage type).", _B)
MEASURED_AT = MetricSpec(
    "aws_s3_bucket_measured_timestamp_seconds",
    "Unix time the size was measured: the daily datapoint's own time in cloudwatch mode.",
    _B,
)
TRUNCATED = MetricSpec(
    "aws_s3_bucket_listing_truncated",
    "1 if list mode stopped at max_objects, so size and objects are lower bounds.",
    _B,
)
LIFECYCLE = MetricSpec(
    "aws_s3_bucket_lifecycle_rules", "Enabled lifecycle rules; 0 means nothing expires.", _B
)

METRICS = (SIZE, OBJECTS, MEASURED_AT, TRUNCATED, LIFECYCLE)


async def probe(target: S3Target, ctx: ProbeContext) -> ProbeResult:
    return await measured(ctx, lambda: _measure(target, ctx))


async def _measure(target: S3Target, ctx: ProbeContext) -> ProbeResult:
    rules = await gather_all(_lifecycle_rules(target, ctx, b) for b in target.buckets)
    if target.mode == "list":
        samples = await _listed(target, ctx)
    else:
        samples = await _from_cloudwatch(target, ctx)
    samples.extend(LIFECYCLE(n, b) for b, n in zip(target.buckets, rules, strict=True))
    return ProbeResult.ok(tuple(samples))


async def _lifecycle_rules(target: S3Target, ctx: ProbeContext, bucket: str) -> int:
    try:
        answer = await ctx.use(AWS).call(
            target, "s3", "get_bucket_lifecycle_configuration", ctx.deadline, Bucket=bucket
        )
    except AwsCallError as exc:
        if exc.code == "NoSuchLifecycleConfiguration":
            return 0
        raise
    return sum(1 for rule in answer.get("Rules", ()) if rule.get("Status") == "Enabled")


async def _from_cloudwatch(target: S3Target, ctx: ProbeContext) -> list[Sample]:
    queries: list[dict[str, Any]] = []
    keys: dict[str, tuple[str, str]] = {}
    for i, bucket in enumerate(target.buckets):
        wanted = [("BucketSizeBytes", t) for t in target.storage_types]
        wanted.append(("NumberOfObjects", "AllStorageTypes"))
        for j, (metric, storage) in enumerate(wanted):
            query_id = f"b{i}_{j}"
            keys[query_id] = (bucket, storage if metric == "BucketSizeBytes" else "")
            queries.append(_daily_query(query_id, bucket, metric, storage))
    # Whole days only: S3 stamps each day's figure at 00:00 UTC, so the newest complete
    # datapoint is at most two days old; today's is never half-counted.
    end = math.floor(time.time() / DAY) * DAY
    points = await metric_data(ctx, target, queries, end - 3 * DAY, end)
    samples: list[Sample] = []
    newest: dict[str, float] = {}
    for query_id, (bucket, storage) in keys.items():
        found = points[query_id]
        if not found:
            continue  # S3 has not published a figure yet: nothing, rather than a false zero
        at, value = found[0]
        samples.append(SIZE(value, bucket, storage) if storage else OBJECTS(value, bucket))
        newest[bucket] = max(newest.get(bucket, 0.0), at)
    samples.extend(MEASURED_AT(at, bucket) for bucket, at in newest.items())
    return samples


def _daily_query(query_id: str, bucket: str, metric: str, storage: str) -> dict[str, Any]:
    dimensions = [
        {"Name": "BucketName", "Value": bucket},
        {"Name": "StorageType", "Value": storage},
    ]
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {"Namespace": "AWS/S3", "MetricName": metric, "Dimensions": dimensions},
            "Period": DAY,
            "Stat": "Average",
        },
    }


def _page_summary(page: dict[str, Any]) -> tuple[int, int, bool]:
    """(objects, bytes, more to come) of one page: all a listing keeps of it."""
    contents = page.get("Contents", ())
    return len(contents), sum(o.get("Size", 0) for o in contents), bool(page.get("IsTruncated"))


async def _listed(target: S3Target, ctx: ProbeContext) -> list[Sample]:
    listings = await gather_all(
        ctx.use(AWS).pages(
            target,
            "s3",
            "list_objects_v2",
            ctx.deadline,
            max_pages=target.max_objects // LIST_PAGE,
            keep=_page_summary,
            Bucket=b,
            PaginationConfig={"PageSize": LIST_PAGE},
        )
        for b in target.buckets
    )
    now = time.time()
    samples: list[Sample] = []
    for bucket, pages in zip(target.buckets, listings, strict=True):
        # a listing stopped by max_objects or by the run's time still says "more to come"
        truncated = bool(pages) and pages[-1][2]
        samples.append(SIZE(sum(size for _, size, _ in pages), bucket, "listed"))
        samples.append(OBJECTS(sum(count for count, _, _ in pages), bucket))
        samples.append(MEASURED_AT(now, bucket))
        samples.append(TRUNCATED(1 if truncated else 0, bucket))
    return samples


KIND = ProbeKind(
    "s3",
    S3Target,
    probe,
    METRICS,
    Reason,
    "S3 bucket size and objects (CloudWatch daily or a capped listing), lifecycle",
    state=AwsState,
    resources=(AWS,),
)
