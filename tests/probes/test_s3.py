"""kind: s3 against moto: daily storage metrics, a capped listing, lifecycle posture."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from tests.support.aws import REGION, api_calls, by_operation
from tests.support.probing import ProbeRunner, make_target, samples_by_name, value

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
