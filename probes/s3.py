"""S3 buckets: size and object count, and whether a lifecycle rule cleans them up.

What a runbook checks when a bucket fills up (`aws s3 ls --recursive --summarize`) and the
usual cause it names: no lifecycle rule cleaning old objects up.

Two modes. `cloudwatch` (the default) reads S3's daily storage metrics (BucketSizeBytes,
NumberOfObjects) with one GetMetricData for every bucket: cheap at any size, a day behind, and
the datapoint's own time is exported. `list` pages through ListObjectsV2 (1,000 keys a page)
up to `max_objects`, for small buckets where a day is too slow, and says when the cap cut
the count short. Either way, one GetBucketLifecycleConfiguration per bucket.

With `canary:` (opt-in, and IAM actions of its own: docs/iam-policy-canaries.json), each run
also writes a small object under the canary's prefix in each bucket, reads it back and
deletes it, as the application's uploads do: a role or bucket policy that stops writes
("Access Denied", "S3 upload failed") pages before the workers' jobs fail.

The verdict mirrors alert_rules/s3.rules.yml with its thresholds. S3BucketGrowingFast sets
a size beside the size a day before: in `cloudwatch` mode both are in the one answer (the
query reads three days); in `list` mode the state keeps a size an hour for a day.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stackprobe.contract import (
    Area,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
)
from stackprobe.probes._aws import (
    AwsState,
    Finding,
    Reason,
    gather_all,
    judged,
    measured,
    metric_data,
)
from stackprobe.probes._aws_api import AWS, AwsCallError, AwsTarget
from stackprobe.probes._canary import (
    WRONG_CONTENT,
    CanaryMismatch,
    CanaryRun,
    canary_specs,
    done_line,
    failed_line,
    run_canary,
)
from stackprobe.probes._sizes import format_bytes
from stackprobe.target import UniqueNames

DAY = 86400
LIST_PAGE = 1000

GROWTH_RATIO = 1.2  # S3BucketGrowingFast: size > 1.2 * (size offset 1d)
GROWTH_MIN_BYTES = 1024**3  # S3BucketGrowingFast: and size > 1024 ^ 3
SNAPSHOT_EVERY = 3600.0  # list mode: a size kept an hour, to set beside today's a day later

# (bucket, storage type, size now, size a day before): what S3BucketGrowingFast compares
Growth = tuple[str, str, float, float]


class S3Canary(BaseModel):
    """Where the write canary puts its object: one per run and bucket, deleted at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field("stackprobe-canary/", min_length=1, max_length=256)


class S3Target(AwsTarget):
    kind: Literal["s3"] = "s3"
    buckets: UniqueNames = Field(min_length=1)
    mode: Literal["cloudwatch", "list"] = "cloudwatch"
    # `cloudwatch` mode: the StorageType dimensions whose sizes are read.
    storage_types: UniqueNames = ("StandardStorage",)
    # `list` mode: objects counted per bucket before the listing stops, in pages of 1,000.
    max_objects: int = Field(100_000, ge=1000, le=1_000_000, multiple_of=LIST_PAGE)
    # Opt-in: put, get and delete a small object under this prefix in each bucket each run.
    canary: S3Canary | None = None

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

CANARY = canary_specs("s3", "bucket", "put, get (the same bytes back) and delete an object")

METRICS = (
    SIZE,
    OBJECTS,
    MEASURED_AT,
    TRUNCATED,
    LIFECYCLE,
    CANARY.success,
    CANARY.seconds,
    CANARY.failure,
)


async def probe(target: S3Target, ctx: ProbeContext) -> ProbeResult:
    return await measured(ctx, lambda: _measure(target, ctx))


async def _measure(target: S3Target, ctx: ProbeContext) -> ProbeResult:
    rules = await gather_all(_lifecycle_rules(target, ctx, b) for b in target.buckets)
    state: AwsState = ctx.state if ctx.state is not None else AwsState()
    if target.mode == "list":
        samples, growth = await _listed(target, ctx, state)
    else:
        samples, growth = await _from_cloudwatch(target, ctx)
    samples.extend(LIFECYCLE(n, b) for b, n in zip(target.buckets, rules, strict=True))
    findings = []
    canaries: list[CanaryRun] = []
    if target.canary is not None:
        canary = target.canary
        canaries = await gather_all(_canary(target, ctx, canary, b) for b in target.buckets)
    for bucket, run in zip(target.buckets, canaries, strict=False):
        samples += CANARY.samples(run, bucket)
        if not run.ok:  # S3WriteCanaryFailing: stackprobe_s3_canary_success == 0
            findings.append(
                Finding(Health.FAILING, failed_line(bucket, run), "S3WriteCanaryFailing")
            )
    for bucket, storage, now, before in growth:
        if now > GROWTH_RATIO * before and now > GROWTH_MIN_BYTES:
            grew = f"{(now / before - 1) * 100:.0f} %" if before else f"from {format_bytes(before)}"
            seen = f"{bucket}: grew {grew} in a day to {format_bytes(now)} ({storage})"
            findings.append(Finding(Health.DEGRADED, seen, "S3BucketGrowingFast"))
    for bucket, n in zip(target.buckets, rules, strict=True):
        if n == 0:  # S3NoLifecycleRule: aws_s3_bucket_lifecycle_rules == 0
            seen = f"{bucket}: no enabled lifecycle rule, nothing expires"
            findings.append(Finding(Health.DEGRADED, seen, "S3NoLifecycleRule"))
    healthy = f"buckets: {len(target.buckets)}, each with a lifecycle rule"
    sizes = [s.value for s in samples if s.spec is SIZE]
    if sizes:
        healthy = f"{healthy}; {format_bytes(sum(sizes))} stored"
    verdict, evidence = judged(findings, healthy)
    evidence += tuple(
        ("canary", done_line(bucket, run))
        for bucket, run in zip(target.buckets, canaries, strict=False)
        if run.ok
    )
    return ProbeResult.ok(tuple(samples), verdict=verdict, evidence=evidence)


async def _canary(target: S3Target, ctx: ProbeContext, canary: S3Canary, bucket: str) -> CanaryRun:
    """PutObject, GetObject (the same bytes back) and DeleteObject of one small object with a
    name of its own: two replicas that run the target at once never touch each other's."""
    key = f"{canary.prefix}{target.name}/{uuid.uuid4().hex}"
    body = f"stackprobe write canary {key}\n".encode()
    aws = ctx.use(AWS)
    done: set[str] = set()
    version: dict[str, Any] = {}  # on a versioned bucket: the version written

    async def put() -> None:
        answer = await aws.call(
            target, "s3", "put_object", ctx.deadline, Bucket=bucket, Key=key, Body=body
        )
        if answer.get("VersionId"):
            version["VersionId"] = str(answer["VersionId"])
        done.add("put")

    async def get() -> None:
        read = await aws.call(
            target,
            "s3",
            "get_object",
            ctx.deadline,
            keep=lambda answer: _body(answer, len(body) + 1),
            Bucket=bucket,
            Key=key,
        )
        if read != body:
            raise CanaryMismatch(
                WRONG_CONTENT,
                f"GetObject of {key} gave back {len(read)} bytes that are not the "
                f"{len(body)} written",
            )

    async def delete() -> None:
        """The version written, on a versioned bucket: deleting the key alone would leave
        it behind a delete marker, two objects a run."""
        done.add("delete")
        await aws.call(
            target, "s3", "delete_object", ctx.deadline, Bucket=bucket, Key=key, **version
        )

    async def cleanup() -> None:
        if "put" in done and "delete" not in done:
            await delete()

    return await run_canary([("put", put), ("get", get), ("delete", delete)], cleanup)


def _body(answer: dict[str, Any], limit: int) -> bytes:
    """An object's body, read in the worker thread and at most `limit` bytes of it."""
    stream = answer["Body"]
    try:
        data: bytes = stream.read(limit)
    finally:
        stream.close()
    return data


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


async def _from_cloudwatch(
    target: S3Target, ctx: ProbeContext
) -> tuple[list[Sample], list[Growth]]:
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
    growth: list[Growth] = []
    newest: dict[str, float] = {}
    for query_id, (bucket, storage) in keys.items():
        found = points[query_id]
        if not found:
            continue  # S3 has not published a figure yet: nothing, rather than a false zero
        at, value = found[0]
        samples.append(SIZE(value, bucket, storage) if storage else OBJECTS(value, bucket))
        newest[bucket] = max(newest.get(bucket, 0.0), at)
        before = next((v for t, v in found if t == at - DAY), None)
        if storage and before is not None:
            growth.append((bucket, storage, value, before))
    samples.extend(MEASURED_AT(at, bucket) for bucket, at in newest.items())
    return samples, growth


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


async def _listed(
    target: S3Target, ctx: ProbeContext, state: AwsState
) -> tuple[list[Sample], list[Growth]]:
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
    # bucket -> (when, size) an hour apart, over the last day: what "a day before" was
    kept: dict[str, deque[tuple[float, float]]] = state.cache.setdefault("sizes", {})
    samples: list[Sample] = []
    growth: list[Growth] = []
    for bucket, pages in zip(target.buckets, listings, strict=True):
        # a listing stopped by max_objects or by the run's time still says "more to come"
        truncated = bool(pages) and pages[-1][2]
        size = sum(size for _, size, _ in pages)
        samples.append(SIZE(size, bucket, "listed"))
        samples.append(OBJECTS(sum(count for count, _, _ in pages), bucket))
        samples.append(MEASURED_AT(now, bucket))
        samples.append(TRUNCATED(1 if truncated else 0, bucket))
        if truncated:
            continue  # a lower bound: set beside another, it says nothing of growth
        sizes = kept.setdefault(bucket, deque())
        while len(sizes) > 1 and now - sizes[1][0] >= DAY:
            sizes.popleft()  # the newest size at least a day old stays first
        if sizes and now - sizes[0][0] >= DAY:
            growth.append((bucket, "listed", size, sizes[0][1]))
        if not sizes or now - sizes[-1][0] >= SNAPSHOT_EVERY:
            sizes.append((now, size))
    return samples, growth


KIND = ProbeKind(
    "s3",
    S3Target,
    probe,
    METRICS,
    Reason,
    "S3 bucket size and objects (CloudWatch daily or a capped listing), lifecycle",
    state=AwsState,
    resources=(AWS,),
    area=Area.QUEUES_STORAGE,
)
