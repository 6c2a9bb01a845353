"""The example configs for the two seed stacks load, cover the AWS kinds, and name what the
runbooks name; the VivaCampo one runs against that stack built in moto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from prometheus_client import CollectorRegistry

from stackprobe.config import load_config
from stackprobe.probes import KINDS
from stackprobe.probes._aws_api import AwsClients, AwsMetrics, AwsSettings, AwsTarget
from tests.support.aws import REGION, EcsStack
from tests.support.probing import ProbeRunner

EXAMPLES = Path(__file__).parent.parent / "examples"
ENV = {
    "AEP_DATABASE_URL": "postgresql://stackprobe:pw@aep-db:5432/aep",
    "AEP_REDIS_URL": "redis://:pw@aep-redis:6379/0",
    "VIVACAMPO_DATABASE_URL": "postgresql://stackprobe:pw@vivacampo-db:5432/vivacampo",
}


def load(name: str) -> Any:
    return load_config(EXAMPLES / name, KINDS, environ=ENV)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        (
            "aep.yml",
            [
                "aep-staging",
                "aep-backend-staging-svc",
                "aep-frontend-staging-svc",
                "aep-staging-alb",
                "staging.navralabs.com",
                "BUDGET_ENFORCEMENT_MODE",
            ],
        ),
        ("vivacampo.yml", ["vivacampo-prod", "worker", "tiler", "vivacampo-prod-rasters"]),
    ],
)
def test_examples_load_and_name_the_runbooks_resources(name: str, named: list[str]) -> None:
    config = load(name)
    text = repr(config.targets)

    assert all(word in text for word in named)


@pytest.mark.parametrize("name", ["aep.yml", "vivacampo.yml"])
def test_examples_pass_check_config_with_no_secret_set(name: str) -> None:
    """As CI checks them: every target whole, and the only warnings the unset secrets (no
    alert of theirs lacks a companion target)."""
    config = load_config(EXAMPLES / name, KINDS, environ={}, defer_secrets=True)
    raw = yaml.safe_load((EXAMPLES / name).read_text())

    assert len(config.targets) == len(raw["targets"]) and not config.partial
    unset = {w.message.split()[2] for w in config.warnings}
    assert all("is not set" in w.message for w in config.warnings)
    assert unset == {v for v in ENV if v.startswith(name.removesuffix(".yml").upper())}


def test_the_examples_use_every_kind_between_them() -> None:
    from stackprobe.probes import KINDS

    used = {t.kind for name in ("aep.yml", "vivacampo.yml") for t in load(name).targets}

    assert used == set(KINDS)


async def test_vivacampo_aws_targets_run_against_its_stack(moto: None) -> None:
    config = load("vivacampo.yml")
    stack = EcsStack(boto3.Session(region_name=REGION), "vivacampo-prod")
    for service in ("api", "worker", "tiler"):
        stack.service(service, desired=2)
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    subnets = [
        ec2.create_subnet(
            VpcId=vpc["VpcId"], CidrBlock=f"172.31.{200 + i}.0/24", AvailabilityZone=f"{REGION}{z}"
        )["Subnet"]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    elb = boto3.client("elbv2", region_name=REGION)
    elb.create_load_balancer(Name="vivacampo-prod-alb", Subnets=subnets)
    elb.create_target_group(
        Name="vivacampo-api-tg",
        Protocol="HTTP",
        Port=8000,
        VpcId=vpc["VpcId"],
        TargetType="ip",
        HealthCheckPath="/health/live",
    )
    boto3.client("sqs", region_name=REGION).create_queue(QueueName="vivacampo-prod-jobs")
    boto3.client("rds", region_name=REGION).create_db_instance(
        DBInstanceIdentifier="vivacampo-prod-db",
        DBInstanceClass="db.m6g.large",
        Engine="postgres",
        AllocatedStorage=200,
        MasterUsername="vivacampo",
        MasterUserPassword="moto-only-password",
    )
    cwlogs = boto3.client("logs", region_name=REGION)
    for service in ("api", "worker", "tiler"):
        cwlogs.create_log_group(logGroupName=f"/ecs/vivacampo-prod/{service}")
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="vivacampo-prod-rasters",
        CreateBucketConfiguration={"LocationConstraint": REGION},
    )
    clients = AwsClients(
        AwsSettings(region=REGION), AwsMetrics(CollectorRegistry())
    )  # moto's region
    try:
        for target in config.targets:
            if not isinstance(target, AwsTarget):
                continue
            result = await ProbeRunner.once(target, aws=clients)
            assert result.success, f"{target.name}: {result.detail}"
    finally:
        clients.shutdown()
