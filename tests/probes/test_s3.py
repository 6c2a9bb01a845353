"""kind: s3 against moto: daily storage metrics, a capped listing, lifecycle posture."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from stackprobe.contract import Health, Verdict
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from tests.support.aws import (
    CANARY_KEY_ID,
    CANARY_SECRET,
    REGION,
    api_calls,
    by_operation,
    inject,
)
from tests.support.probing import (
    ProbeRunner,
    aws_calls,
    findings,
    make_target,
    samples_by_name,
    value,
    verdict,
)

DAY = 86400


@pytest.fixture
def s3(moto: None) -> Any:
    client = boto3.client("s3", region_name=REGION)
    config = {"LocationConstraint": REGION}
    client.create_bucket(Bucket="rasters", CreateBucketConfiguration=config)
    client.create_bucket(Bucket="uploads", CreateBucketConfiguration=config)
    client.put_bucket_lifecycle_configuration(
        Bucket="uploads",
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "old",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": 30},
                },
                {
                    "ID": "off",
                    "Status": "Disabled",
                    "Filter": {"Prefix": "x/"},
                    "Expiration": {"Days": 1},
                },
            ]
        },
    )
    return client


async def test_list_mode_pages_past_a_thousand_objects(
    s3: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    for i in range(1500):
        s3.put_object(Bucket="rasters", Key=f"tiles/{i:05d}.tif", Body=b"x" * 10)
    target = make_target(
        {"name": "b", "kind": "s3", "buckets": ["rasters", "uploads"], "mode": "list"}
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    assert value(result, "aws_s3_bucket_objects", "rasters") == 1500
    assert value(result, "aws_s3_bucket_size_bytes", "rasters", "listed") == 15000
    assert value(result, "aws_s3_bucket_listing_truncated", "rasters") == 0
    assert value(result, "aws_s3_bucket_objects", "uploads") == 0
    assert value(result, "aws_s3_bucket_lifecycle_rules", "rasters") == 0
    assert value(result, "aws_s3_bucket_lifecycle_rules", "uploads") == 1  # one is disabled
    calls = by_operation(api_calls(aws_metrics.registry))
    assert calls["ListObjectsV2"] == 3  # two pages of rasters, one of uploads


async def test_list_mode_says_when_the_cap_cut_it_short(s3: Any, aws: AwsClients) -> None:
    for i in range(1200):
        s3.put_object(Bucket="rasters", Key=f"{i:05d}", Body=b"")
    target = make_target(
        {"name": "b", "kind": "s3", "buckets": ["rasters"], "mode": "list", "max_objects": 1000}
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert value(result, "aws_s3_bucket_objects", "rasters") == 1000
    assert value(result, "aws_s3_bucket_listing_truncated", "rasters") == 1


async def test_cloudwatch_mode_reads_the_newest_daily_figure(
    s3: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    midnight = math.floor(time.time() / DAY) * DAY
    for days_ago, size in ((2, 1_000.0), (1, 5_000.0)):
        at = datetime.fromtimestamp(midnight - days_ago * DAY, UTC)
        cloudwatch.put_metric_data(
            Namespace="AWS/S3",
            MetricData=[
                {
                    "MetricName": "BucketSizeBytes",
                    "Dimensions": [
                        {"Name": "BucketName", "Value": "rasters"},
                        {"Name": "StorageType", "Value": "StandardStorage"},
                    ],
                    "Timestamp": at,
                    "Value": size,
                },
                {
                    "MetricName": "NumberOfObjects",
                    "Dimensions": [
                        {"Name": "BucketName", "Value": "rasters"},
                        {"Name": "StorageType", "Value": "AllStorageTypes"},
                    ],
                    "Timestamp": at,
                    "Value": size / 100,
                },
            ],
        )
    target = make_target({"name": "b", "kind": "s3", "buckets": ["rasters", "uploads"]})

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    assert value(result, "aws_s3_bucket_size_bytes", "rasters", "StandardStorage") == 5000
    assert value(result, "aws_s3_bucket_objects", "rasters") == 50
    assert value(result, "aws_s3_bucket_measured_timestamp_seconds", "rasters") == midnight - DAY
    # no figure published yet for uploads: nothing, rather than a false zero
    assert ("uploads",) not in samples_by_name(result)["aws_s3_bucket_objects"]
    assert by_operation(api_calls(aws_metrics.registry))["GetMetricData"] == 1


async def test_a_missing_bucket(s3: Any, aws: AwsClients) -> None:
    target = make_target({"name": "b", "kind": "s3", "buckets": ["gone"], "mode": "list"})

    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "not_found"


async def test_cloudwatch_mode_reads_each_storage_type(s3: Any, aws: AwsClients) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    yesterday = datetime.fromtimestamp(math.floor(time.time() / DAY - 1) * DAY, UTC)
    for storage, size in (("StandardStorage", 10.0), ("StandardIAStorage", 90.0)):
        cloudwatch.put_metric_data(
            Namespace="AWS/S3",
            MetricData=[
                {
                    "MetricName": "BucketSizeBytes",
                    "Dimensions": [
                        {"Name": "BucketName", "Value": "rasters"},
                        {"Name": "StorageType", "Value": storage},
                    ],
                    "Timestamp": yesterday,
                    "Value": size,
                }
            ],
        )
    target = make_target(
        {
            "name": "b",
            "kind": "s3",
            "buckets": ["rasters"],
            "storage_types": ["StandardStorage", "StandardIAStorage"],
        }
    )

    result = await ProbeRunner.once(target, aws=aws)

    sizes = samples_by_name(result)["aws_s3_bucket_size_bytes"]
    assert sizes == {("rasters", "StandardStorage"): 10.0, ("rasters", "StandardIAStorage"): 90.0}


# The verdict: the buckets' health, as the s3 alert rules see it.

GIB = 1024**3


def daily_size(cloudwatch: Any, bucket: str, days_ago: int, size: float) -> None:
    midnight = math.floor(time.time() / DAY) * DAY
    cloudwatch.put_metric_data(
        Namespace="AWS/S3",
        MetricData=[
            {
                "MetricName": "BucketSizeBytes",
                "Dimensions": [
                    {"Name": "BucketName", "Value": bucket},
                    {"Name": "StorageType", "Value": "StandardStorage"},
                ],
                "Timestamp": datetime.fromtimestamp(midnight - days_ago * DAY, UTC),
                "Value": size,
            }
        ],
    )


async def test_a_bucket_with_a_lifecycle_rule_is_ok(s3: Any, aws: AwsClients) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    daily_size(cloudwatch, "uploads", 2, 2.0 * GIB)
    daily_size(cloudwatch, "uploads", 1, 2.2 * GIB)  # 10 % in a day: not fast

    result = await ProbeRunner.once(
        make_target({"name": "b", "kind": "s3", "buckets": ["uploads"]}), aws=aws
    )

    assert result.health() == Verdict(
        Health.OK, "buckets: 1, each with a lifecycle rule; 2.2 GiB stored"
    )
    assert aws_calls(result, timed=False) == [
        "s3:GetLifecycleConfiguration ok",
        "cloudwatch:GetMetricData ok",
    ]
    assert result.evidence[-1][1].endswith(" ms, 1 page")
    shown = " ".join(v for _, v in result.evidence) + result.health().why
    assert CANARY_KEY_ID not in shown and CANARY_SECRET not in shown


async def test_no_lifecycle_rule_is_degraded(s3: Any, aws: AwsClients) -> None:
    target = make_target({"name": "b", "kind": "s3", "buckets": ["rasters", "uploads"]})

    result = await ProbeRunner.once(target, aws=aws)

    assert result.health() == Verdict(
        Health.DEGRADED, "rasters: no enabled lifecycle rule, nothing expires", "S3NoLifecycleRule"
    )
    # S3 answers a bucket without rules with an error: the evidence says which (the two
    # calls run side by side, so in either order)
    assert sorted(aws_calls(result, timed=False)[:2]) == [
        "s3:GetLifecycleConfiguration error (NoSuchLifecycleConfiguration)",
        "s3:GetLifecycleConfiguration ok",
    ]


async def test_a_bucket_growing_a_fifth_in_a_day_is_degraded(s3: Any, aws: AwsClients) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    daily_size(cloudwatch, "uploads", 2, 1.0 * GIB)
    daily_size(cloudwatch, "uploads", 1, 1.5 * GIB)
    daily_size(cloudwatch, "rasters", 2, 1000.0)  # five times as big, but under 1 GiB
    daily_size(cloudwatch, "rasters", 1, 5000.0)

    result = await ProbeRunner.once(
        make_target({"name": "b", "kind": "s3", "buckets": ["uploads", "rasters"]}), aws=aws
    )

    assert findings(result) == [
        (
            "degraded",
            "uploads: grew 50 % in a day to 1.5 GiB (StandardStorage) (S3BucketGrowingFast)",
        ),
        (
            "degraded",
            "rasters: no enabled lifecycle rule, nothing expires (S3NoLifecycleRule)",
        ),
    ]
    assert result.health().alert == "S3BucketGrowingFast"


async def test_list_mode_sets_the_size_beside_the_one_a_day_before(
    s3: Any, aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state keeps a size an hour; a day later the growth is judged. The kind's clock is
    moved (its module's `time` alone), and the 1 GiB floor lowered to the test's bytes."""
    from stackprobe.probes import s3 as kind

    now = [time.time()]
    monkeypatch.setattr(kind, "time", SimpleNamespace(time=lambda: now[0]))
    monkeypatch.setattr(kind, "GROWTH_MIN_BYTES", 100)
    s3.put_object(Bucket="uploads", Key="a", Body=b"x" * 100)
    target = make_target({"name": "b", "kind": "s3", "buckets": ["uploads"], "mode": "list"})
    async with ProbeRunner(target, aws=aws) as runner:
        first = await runner.run()
        s3.put_object(Bucket="uploads", Key="b", Body=b"x" * 100)
        now[0] += 3600
        hour_later = await runner.run()  # no size a day old yet
        now[0] += DAY - 3600
        day_later = await runner.run()

    assert first.health().health is Health.OK
    assert hour_later.health().health is Health.OK
    assert day_later.health() == Verdict(
        Health.DEGRADED,
        "uploads: grew 100 % in a day to 200 B (listed)",
        "S3BucketGrowingFast",
    )


async def test_a_missing_bucket_cannot_be_measured(s3: Any, aws: AwsClients) -> None:
    target = make_target({"name": "b", "kind": "s3", "buckets": ["gone"], "mode": "list"})

    result = await ProbeRunner.once(target, aws=aws)

    verdict = result.health()
    assert verdict.health is Health.FAILING and verdict.alert == "StackprobeCannotMeasure"
    assert "s3:GetLifecycleConfiguration error (NoSuchBucket)" in aws_calls(result, timed=False)


def canary_target(**extra: Any) -> Any:
    raw = {
        "name": "rasters",
        "kind": "s3",
        "buckets": ["rasters", "uploads"],
        "canary": {"prefix": "canary/"},
        "interval": "1m",
        "timeout": "20s",
        **extra,
    }
    return make_target(raw)


async def test_the_write_canary_puts_reads_and_deletes_an_object_in_each_bucket(
    s3: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    result = await ProbeRunner.once(canary_target(), aws=aws)

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found["stackprobe_s3_canary_success"] == {("rasters",): 1, ("uploads",): 1}
    assert set(found["stackprobe_s3_canary_step_seconds"]) == {
        (bucket, step) for bucket in ("rasters", "uploads") for step in ("put", "get", "delete")
    }
    assert "stackprobe_s3_canary_failure" not in found
    lines = [v for label, v in result.evidence if label == "canary"]
    assert [line.split(":")[0] for line in lines] == ["rasters", "uploads"]
    # nothing left behind
    for bucket in ("rasters", "uploads"):
        assert s3.list_objects_v2(Bucket=bucket, Prefix="canary/")["KeyCount"] == 0
    calls = by_operation(api_calls(aws_metrics.registry))
    assert (calls["PutObject"], calls["GetObject"], calls["DeleteObject"]) == (2, 2, 2)


async def test_a_denied_put_fails_the_canary_and_the_rest_is_still_measured(
    s3: Any, aws: AwsClients
) -> None:
    target = canary_target(buckets=["rasters"])
    inject(aws.client(target, "s3"), "PutObject", "AccessDenied", status=403, times=3)

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail  # the bucket's size and lifecycle were read
    assert value(result, "stackprobe_s3_canary_success", "rasters") == 0
    assert value(result, "stackprobe_s3_canary_failure", "rasters", "put", "access_denied") == 1
    health, why, alert = verdict(result)
    assert (health, alert) == (Health.FAILING, "S3WriteCanaryFailing")
    assert why.startswith("rasters: write canary's put failed (access_denied): ")
    assert "s3:PutObject" in why


async def test_a_failed_read_still_deletes_what_the_canary_wrote(s3: Any, aws: AwsClients) -> None:
    target = canary_target(buckets=["uploads"])
    inject(aws.client(target, "s3"), "GetObject", "InternalError", status=500, times=10)

    result = await ProbeRunner.once(target, aws=aws)

    assert value(result, "stackprobe_s3_canary_failure", "uploads", "get", "api_error") == 1
    assert set(samples_by_name(result)["stackprobe_s3_canary_step_seconds"]) == {("uploads", "put")}
    assert s3.list_objects_v2(Bucket="uploads", Prefix="canary/")["KeyCount"] == 0


async def test_on_a_versioned_bucket_the_canary_leaves_no_version_behind(
    s3: Any, aws: AwsClients
) -> None:
    s3.put_bucket_versioning(Bucket="rasters", VersioningConfiguration={"Status": "Enabled"})

    result = await ProbeRunner.once(canary_target(buckets=["rasters"]), aws=aws)

    assert value(result, "stackprobe_s3_canary_success", "rasters") == 1
    left = s3.list_object_versions(Bucket="rasters", Prefix="canary/")
    assert left.get("Versions", []) == [] and left.get("DeleteMarkers", []) == []
