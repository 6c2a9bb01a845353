"""kind: rds: DB instances found by DescribeDBInstances in moto (paged 100 at a time, as AWS
does, `faithful_aws`), their CloudWatch metrics from moto's GetMetricData (500 queries a
call), and the verdicts the rules' thresholds give."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from stackprobe.contract import Health
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from stackprobe.probes.cloudwatch import window
from stackprobe.probes.rds import GIB, Instance, queries
from tests.support.aws import REGION, api_calls, by_operation, inject, put_metrics
from tests.support.probing import ProbeRunner, make_target, samples_by_name, value, verdict


@pytest.fixture
def rds(moto: None) -> Any:
    return boto3.client("rds", region_name=REGION)


@pytest.fixture
def cloudwatch(moto: None) -> Any:
    return boto3.client("cloudwatch", region_name=REGION)


def create(rds: Any, name: str, engine: str = "postgres", **extra: Any) -> None:
    rds.create_db_instance(
        DBInstanceIdentifier=name,
        DBInstanceClass=extra.pop("DBInstanceClass", "db.t3.micro"),
        Engine=engine,
        AllocatedStorage=extra.pop("AllocatedStorage", 100),
        StorageType=extra.pop("StorageType", "gp2"),
        MasterUsername="app",
        MasterUserPassword="moto-only-password",
        **extra,
    )


def publish(cloudwatch: Any, name: str, metrics: dict[str, float], ago: int = 1) -> None:
    """Datapoints `ago` periods before the newest closed one the probe reads."""
    _, end = window(60, 120, time.time())
    put_metrics(cloudwatch, "AWS/RDS", {"DBInstanceIdentifier": name}, metrics, end - 60 * ago)


def target(**extra: Any) -> Any:
    return make_target({"name": "dbs", "kind": "rds", "interval": "1m", "timeout": "20s", **extra})


async def test_a_full_disk_pages_with_what_describe_and_cloudwatch_say(
    rds: Any, cloudwatch: Any, aws: AwsClients
) -> None:
    create(rds, "aep-db", AllocatedStorage=100)
    create(rds, "viva-db", "mysql", DBInstanceClass="db.m5.large", StorageType="io1", Iops=1000)
    publish(cloudwatch, "aep-db", {"FreeStorageSpace": 1.5 * GIB, "CPUUtilization": 35.0})
    publish(cloudwatch, "aep-db", {"FreeStorageSpace": 30.0 * GIB}, ago=3)  # older: not shown
    publish(cloudwatch, "viva-db", {"FreeStorageSpace": 60.0 * GIB, "CPUUtilization": 12.0})

    result = await ProbeRunner.once(target(), aws=aws)

    assert result.success, result.detail
    assert value(result, "aws_rds_allocated_storage_bytes", "aep-db") == 100 * GIB
    assert value(result, "aws_rds_free_storage_space_average", "aep-db") == 1.5 * GIB
    assert value(result, "aws_rds_cpuutilization_average", "viva-db") == 12.0
    assert value(result, "aws_rds_instance_status", "aep-db", "available") == 1
    info = samples_by_name(result)["aws_rds_info"]
    assert next(k for k in info if k[0] == "viva-db")[:2] == ("viva-db", "mysql")
    health, why, alert = verdict(result)
    assert (health, alert) == (Health.FAILING, "RdsStorageFull")
    assert "aep-db" in why and "1.5 % free of 100 GiB" in why


async def test_storage_full_status_pages_without_a_datapoint(rds: Any, aws: AwsClients) -> None:
    create(rds, "aep-db")
    backend = rds_backend()
    backend.databases["aep-db"].status = "storage-full"

    result = await ProbeRunner.once(target(identifiers=["aep-db"]), aws=aws)

    assert value(result, "aws_rds_instance_status", "aep-db", "storage-full") == 1
    assert verdict(result)[::2] == (Health.FAILING, "RdsStorageFull")


async def test_low_storage_with_autoscaling_headroom_is_no_finding(
    rds: Any, cloudwatch: Any, aws: AwsClients
) -> None:
    create(rds, "grows", AllocatedStorage=100, MaxAllocatedStorage=500)
    create(rds, "fixed", AllocatedStorage=100)
    for name in ("grows", "fixed"):
        publish(cloudwatch, name, {"FreeStorageSpace": 8.0 * GIB})

    result = await ProbeRunner.once(target(), aws=aws)

    assert value(result, "aws_rds_max_allocated_storage_bytes", "grows") == 500 * GIB
    assert ("fixed",) not in samples_by_name(result)["aws_rds_max_allocated_storage_bytes"]
    health, why, alert = verdict(result)
    assert (health, alert) == (Health.DEGRADED, "RdsStorageLow")
    assert why.startswith("fixed: 8 % of 100 GiB storage free")
    assert "grows" not in why


async def test_credits_burst_and_replica_lag(rds: Any, cloudwatch: Any, aws: AwsClients) -> None:
    create(rds, "aep-db", DBInstanceClass="db.t2.small")
    create(rds, "unlimited", DBInstanceClass="db.t3.small")  # bills instead of slowing down
    rds.create_db_instance_read_replica(
        DBInstanceIdentifier="aep-db-ro", SourceDBInstanceIdentifier="aep-db"
    )
    publish(cloudwatch, "aep-db", {"CPUCreditBalance": 0.0, "BurstBalance": 4.0})
    publish(cloudwatch, "aep-db-ro", {"ReplicaLag": 900.0})
    publish(cloudwatch, "unlimited", {"CPUCreditBalance": 0.0})

    result = await ProbeRunner.once(target(), aws=aws)

    assert value(result, "aws_rds_replica_lag_average", "aep-db-ro") == 900.0
    alerts = [line for key, line in result.evidence if key == "degraded"]
    assert any("aep-db: CPU credits spent" in a and "RdsBurstExhausted" in a for a in alerts)
    assert any("aep-db-ro: replica 900 s behind aep-db" in a for a in alerts)
    assert any("aep-db: I/O burst balance at 4 %" in a for a in alerts)
    assert value(result, "aws_rds_cpucredit_balance_average", "unlimited") == 0.0
    assert not any(a.startswith("unlimited") for a in alerts)


def test_each_instance_is_asked_only_what_rds_publishes_for_it() -> None:
    def instance(**changes: Any) -> Instance:
        base: dict[str, Any] = {
            "identifier": "db",
            "status": "available",
            "engine": "postgres",
            "engine_version": "16.3",
            "instance_class": "db.m6g.large",
            "storage_type": "gp3",
            "allocated_gib": 100,
            "max_allocated_gib": None,
            "replica_of": None,
        }
        return Instance(**{**base, **changes})

    def asked(i: Instance) -> set[str]:
        return {q.metric for q in queries(i, 60)}

    common = {
        "CPUUtilization",
        "FreeableMemory",
        "ReadLatency",
        "WriteLatency",
        "DiskQueueDepth",
        "DatabaseConnections",
    }
    assert asked(instance()) == common | {"FreeStorageSpace"}
    assert asked(instance(storage_type="gp2")) == common | {"FreeStorageSpace", "BurstBalance"}
    assert asked(instance(instance_class="db.t4g.micro")) - common == {
        "FreeStorageSpace",
        "CPUCreditBalance",
    }
    assert asked(instance(engine="aurora-postgresql", storage_type="aurora")) == common
    assert "ReplicaLag" in asked(instance(replica_of="db-primary"))


async def test_hundreds_of_instances_are_paged_and_batched(
    rds: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    for n in range(130):
        create(rds, f"db-{n:03d}", DBInstanceClass="db.m5.large", StorageType="gp3")

    result = await ProbeRunner.once(target(engines=["postgres"]), aws=aws)

    assert result.success, result.detail
    assert len(samples_by_name(result)["aws_rds_info"]) == 130
    calls = by_operation(api_calls(aws_metrics.registry))
    # two pages of 100 (AWS's most), and 130 x 8 queries in three calls of at most 500
    assert calls["DescribeDBInstances"] == 2
    assert calls["GetMetricData"] == 3
    (line,) = [v for _, v in result.evidence if v.startswith("rds:")]
    assert line.startswith("rds:DescribeDBInstances ok in") and line.endswith(", 2 pages")


async def test_the_engine_filter_and_a_missing_instance(rds: Any, aws: AwsClients) -> None:
    create(rds, "aep-db")
    create(rds, "shop", "mysql")

    result = await ProbeRunner.once(target(engines=["mysql"]), aws=aws)
    assert set(samples_by_name(result)["aws_rds_allocated_storage_bytes"]) == {("shop",)}

    result = await ProbeRunner.once(target(identifiers=["aep-db", "gone-db"]), aws=aws)
    assert not result.success and result.reason == "not_found"
    assert "gone-db" in result.detail
    # what was found is still measured
    assert set(samples_by_name(result)["aws_rds_allocated_storage_bytes"]) == {("aep-db",)}


async def test_access_denied_names_the_action(rds: Any, aws: AwsClients) -> None:
    create(rds, "aep-db")
    dbs = target()
    inject(aws.client(dbs, "rds"), "DescribeDBInstances", "AccessDenied", status=403, times=3)

    result = await ProbeRunner.once(dbs, aws=aws)

    assert not result.success and result.reason == "access_denied"
    assert verdict(result)[2] == "StackprobeAwsAccessDenied"
    (line,) = [v for _, v in result.evidence if v.startswith("rds:")]
    assert line.startswith("rds:DescribeDBInstances denied in")
    assert "grant the IAM action rds:DescribeDBInstances" in result.detail


def rds_backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.rds.models import rds_backends

    return rds_backends[DEFAULT_ACCOUNT_ID][REGION]


async def test_cpu_and_a_replica_that_stopped_replicating(
    rds: Any, cloudwatch: Any, aws: AwsClients
) -> None:
    create(rds, "shop", "mysql", DBInstanceClass="db.m5.large", StorageType="gp3")
    rds.create_db_instance_read_replica(
        DBInstanceIdentifier="shop-ro", SourceDBInstanceIdentifier="shop"
    )
    publish(cloudwatch, "shop", {"CPUUtilization": 97.0, "BurstBalance": 0.0})
    publish(cloudwatch, "shop-ro", {"ReplicaLag": -1.0, "CPUUtilization": 90.0})

    result = await ProbeRunner.once(target(), aws=aws)

    lines = [line for key, line in result.evidence if key == "degraded"]
    assert lines == [
        "shop: CPU at 97 % (average) (RdsCpuSaturated)",
        "shop-ro: not replicating from shop (ReplicaLag -1) (RdsReplicaLagging)",
    ]  # 90 % is the threshold itself; gp3 has no burst balance to spend, so none is asked
    assert "aws_rds_burst_balance_average" not in samples_by_name(result)


async def test_identifiers_by_arn_or_in_capitals_and_with_an_engine_filter(
    rds: Any, aws: AwsClients
) -> None:
    create(rds, "aep-db")
    arn = rds.describe_db_instances()["DBInstances"][0]["DBInstanceArn"]

    by_arn = await ProbeRunner.once(target(identifiers=[arn]), aws=aws)
    assert by_arn.success, by_arn.detail
    capitals = await ProbeRunner.once(target(identifiers=["AEP-DB"]), aws=aws)
    assert capitals.success, capitals.detail  # RDS keeps identifiers in lowercase
    other_engine = await ProbeRunner.once(
        target(identifiers=["aep-db"], engines=["mysql"]), aws=aws
    )
    assert other_engine.reason == "not_found"
    assert other_engine.detail == (
        "no DB instance aep-db of engine mysql in this region and account"
    )


async def test_documentdb_and_neptune_instances_are_left_out(rds: Any, aws: AwsClients) -> None:
    """DescribeDBInstances lists them too; their metrics are in AWS/DocDB and AWS/Neptune."""
    create(rds, "aep-db")
    rds.create_db_cluster(
        DBClusterIdentifier="graph",
        Engine="neptune",
        MasterUsername="app",
        MasterUserPassword="moto-only-password",
    )
    rds.create_db_instance(
        DBInstanceIdentifier="graph-1",
        DBInstanceClass="db.r5.large",
        Engine="neptune",
        DBClusterIdentifier="graph",
    )
    assert len(rds.describe_db_instances()["DBInstances"]) == 2

    result = await ProbeRunner.once(target(), aws=aws)

    assert set(samples_by_name(result)["aws_rds_instance_status"]) == {("aep-db", "available")}
